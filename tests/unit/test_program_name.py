"""The console program and the distribution have a name of their own (not `kmod`, Debian's module tools),
used the same everywhere: pyproject, the Program, the manifest's command lines, the docs."""
import re
import tomllib

import pytest

from kmod import PROGRAM
from kmod import cli
from kmod.tasks import common
from tests.conftest import ROOT, run_program

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_one_name_for_the_program_and_the_distribution():
    assert PROGRAM != "kmod"
    assert PYPROJECT["project"]["name"] == PROGRAM
    assert PYPROJECT["project"]["scripts"] == {PROGRAM: "kmod.cli:main"}
    p = cli.program()
    assert p.binary == p.name == PROGRAM and p.binary_names == [PROGRAM]
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["kmod"]  # the package stays


@pytest.mark.parametrize("argv0,word", [
    ("/usr/bin/invoke", "invoke"), ("/x/.venv/bin/inv", "invoke"), ("/x/site-packages/invoke/__main__.py", "invoke"),
    (f"/x/.venv/bin/{PROGRAM}", PROGRAM), ("/x/kmod/__main__.py", PROGRAM),
])
def test_command_lines_name_what_was_typed(monkeypatch, argv0, word):
    monkeypatch.setattr("sys.argv", [argv0, "build", "--spec", "my dir/kmod.toml"])
    assert common.command_line() == f"{word} build --spec 'my dir/kmod.toml'"


def test_version_and_help_name_it(tmp_path):
    assert run_program("--version", cwd=tmp_path).stdout.strip() == f"{PROGRAM} {__import__('kmod').__version__}"
    assert run_program("--help", cwd=tmp_path).stdout.startswith(f"Usage: {PROGRAM} ")


def test_the_docs_call_it_by_its_name():
    readme = (ROOT / "README.md").read_text()
    assert f"`{PROGRAM} build" in readme and f"{PROGRAM} --print-completion-script bash" in readme
    old = re.compile(r"`kmod (build|lint|package|boot-test|render|status|toolchains|probe-map)\b|the `kmod` (command|program)")
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not old.search(doc.read_text()), f"{doc.name} still names the old `kmod` command"
