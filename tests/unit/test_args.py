"""How tasks take their arguments (kmod/tasks/args.py), unit by unit and through both front ends:
files as separate words (globs, xargs, folders, commas, a comma in a name), `TASK --help`, and short
flags with one meaning across every task."""
import json
import subprocess
import sys

import pytest

from kmod import cli
from kmod.tasks import args, ns
from tests.conftest import ROOT, run_cli, run_program

INITIAL = cli.program().initial_context


def spread(*words):
    return args.spread(list(words), ns.to_contexts(), INITIAL, args.rest_flags(ns))


def test_bare_words_after_lint_become_its_paths():
    assert spread("lint", "a.ko", "b.ko") == ["lint", "--paths", "a.ko", "--paths", "b.ko"]


@pytest.mark.parametrize("words,want", [
    (["lint", "--format", "json", "a.ko"], ["lint", "--format", "json", "--paths", "a.ko"]),
    (["lint", "a.ko", "-j", "2", "b.ko"], ["lint", "--paths", "a.ko", "-j", "2", "--paths", "b.ko"]),
    (["lint", "--target=bookworm-6.1", "a.ko"], ["lint", "--target=bookworm-6.1", "--paths", "a.ko"]),
    (["lint", "a.ko", "-f", "inv.yaml"], ["lint", "--paths", "a.ko", "-f", "inv.yaml"]),  # a core flag's value
    (["lint", "--paths", "x.ko", "y.ko"], ["lint", "--paths", "x.ko", "--paths", "y.ko"]),
    (["lint", "a.ko", "--", "b.ko", "-dash.ko", "status"],
     ["lint", "--paths", "a.ko", "--paths=b.ko", "--paths=-dash.ko", "--paths=status"]),   # -- ends the flags
    (["build", "--arch", "arm64", "--", "x"], ["build", "--arch", "arm64", "--", "x"]),      # Invoke's remainder
    (["lint", "a.ko", "status", "--format", "json"], ["lint", "--paths", "a.ko", "status", "--format", "json"]),
    (["build", "--arch", "arm64", "status"], ["build", "--arch", "arm64", "status"]),
    (["lint", "--help"], ["lint", "--help"]),
])
def test_flag_values_and_task_names_are_not_paths(words, want):
    assert spread(*words) == want


def test_a_file_named_like_a_task_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "status").write_text("")
    assert spread("lint", "a.ko", "status") == ["lint", "--paths", "a.ko", "--paths", "status"]


def test_commas_split_unless_the_path_exists(tmp_path):
    both = tmp_path / "b,c.ko"
    both.write_text("")
    got = args.paths([f"{tmp_path}/a.ko,{tmp_path}/d.ko", str(both), "e.ko,,", "f.ko"])
    assert got == [tmp_path / "a.ko", tmp_path / "d.ko", both, args.Path("e.ko"), args.Path("f.ko")]


@pytest.fixture
def kos(tmp_path):
    """Files the lint reads (not ELF: each is one finding, which proves it was read), a comma in a name,
    and a folder."""
    for name in ("a.ko", "b,c.ko", "sub/d.ko", "sub/deeper/e.ko.xz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"not an ELF file")
    return tmp_path


def linted(proc) -> list[str]:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr  # 2: findings
    return sorted(m["path"] for m in json.loads(proc.stdout)["modules"])


def test_lint_takes_many_words_through_both_front_ends(kos):
    want = sorted(str(kos / n) for n in ("a.ko", "b,c.ko", "sub/d.ko", "sub/deeper/e.ko.xz"))
    words = ["lint", str(kos / "a.ko"), str(kos / "b,c.ko"), "--format", "json", str(kos / "sub")]
    assert linted(run_program(*words, cwd=kos)) == want
    assert linted(run_cli("--search-root", str(ROOT), *words, cwd=kos)) == want


def test_words_after_double_dash_are_files_even_with_a_dash(kos):
    """`lint -- -odd.ko b,c.ko` as every Unix tool reads it: after --, nothing is a flag."""
    (kos / "-odd.ko").write_bytes(b"not an ELF file")
    want = sorted(str(p) for p in (kos / "-odd.ko", kos / "b,c.ko"))
    for proc in (run_program("lint", "--format", "json", "--", "-odd.ko", "b,c.ko", cwd=kos),
                 run_cli("--search-root", str(ROOT), "lint", "--format", "json", "--", "-odd.ko", "b,c.ko", cwd=kos)):
        assert linted(proc) == want


def test_lint_from_xargs_and_the_old_comma_form(kos):
    found = subprocess.run(["find", str(kos), "-name", "*.ko", "-print0"], capture_output=True, check=True).stdout
    proc = subprocess.run(["xargs", "-0", sys.executable, "-m", "kmod", "lint", "--format", "json"], input=found,
                          cwd=kos, capture_output=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 123 or proc.returncode == 2  # xargs says 123 when the command exits 1-125
    assert sorted(m["path"] for m in json.loads(proc.stdout)["modules"]) == sorted(
        str(kos / n) for n in ("a.ko", "b,c.ko", "sub/d.ko"))
    old = run_program("lint", "--format", "json", f"{kos}/a.ko,{kos}/sub/d.ko", cwd=kos)
    assert linted(old) == sorted([str(kos / "a.ko"), str(kos / "sub/d.ko")])


def test_lint_without_paths_is_one_line(kos):
    proc = run_program("lint", cwd=kos)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: nothing to lint (give one or more .ko files or directories)"


TASKS = sorted(ns.task_names)


@pytest.fixture(scope="module")
def tasks_module():
    import tasks  # tasks.py at the checkout's top: under pytest, take_over() leaves the command line alone
    return tasks


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("front", ["kmodkit", "invoke"])
def test_task_help(task, front, tasks_module, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    p = cli.program() if front == "kmodkit" else cli.invoke_program(tasks_module)
    p.run([front, task, "--help"], exit=False)
    out = capsys.readouterr()
    assert out.out.startswith("Usage: ") and f" {task} [--options]" in out.out.splitlines()[0], out
    assert "Options:" in out.out and out.err == ""


def test_task_help_from_the_real_front_ends(tmp_path):
    for proc in (run_program("lint", "--help", cwd=tmp_path), run_cli("--search-root", str(ROOT), "lint", "-h", cwd=tmp_path)):
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert "lint [--options] PATH..." in proc.stdout.splitlines()[0] and "--target" in proc.stdout


def test_short_flags_mean_the_same_in_every_task():
    core = {n for arg in INITIAL.args.values() for n in arg.names if len(n) == 1}
    meaning = {}
    for ctx in ns.to_contexts():
        for arg in ctx.args.values():
            for short in (n for n in arg.names if len(n) == 1):
                assert args.SHORT_FLAGS.get(arg.name) == short, f"{ctx.name}: -{short} for --{arg.name}"
                assert meaning.setdefault(short, arg.name) == arg.name
                assert short not in core, f"{ctx.name}: -{short} shadows Invoke's own -{short}"
    assert meaning == {s: n for n, s in args.SHORT_FLAGS.items()}
