"""Every flag of every task, and every environment variable kmod reads, fed garbage: the real program
answers with one line and an exit code, never a traceback.

Generated from the task collection (kmod.tasks.ns) and from a scan of kmod/ for environment reads, so
a new flag or variable is covered without editing this file. The runs cannot reach anything real:
no engine (DOCKER_HOST points nowhere), no mirror (a file:// folder that does not exist), no tools
(PATH is empty), a private cache."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n'
GARBAGE = ["abc", "-1", "", ",,", "/proc/kmod-garbage/\x7f é;$(x)", "9" * 30]
ENV_GARBAGE = ["abc", "/proc/kmod-garbage/x", "-1\x7f,;"]  # /proc: no folder can be made there, even by root
# every task, each asked for something it would do (the variables are read on the way)
ENV_TASKS = [["build", "--kernel", "bookworm-6.1", "--arch", "x86_64"], ["package", "--format", "tarball"],
             ["boot-test"], ["render"], ["status"], ["lint", "kmod.toml", "--target", "bookworm-6.1"],
             ["toolchains"], ["probe-map", "--kernel", "bookworm-6.1", "--arch", "x86_64"],
             ["preflight", "--host", "root@127.0.0.1:1"]]


def flags():
    from kmod.tasks import ns
    out = []
    for name, t in sorted(ns.tasks.items()):
        for a in t.get_arguments():
            flag = "--" + a.name.replace("_", "-").rstrip("-")
            if a.kind is bool:
                out.append((name, [f"{flag}=x"]))
            elif a.positional:
                out += [(name, [v]) for v in GARBAGE]
            else:
                out += [(name, [flag, v]) for v in GARBAGE]
    return out


def environment_variables() -> set[str]:
    """Every variable the code reads (os.environ[...], .get(...), os.getenv(...), or through a
    NAME_ENV = "VARIABLE" constant)."""
    found = set()
    for p in (ROOT / "kmod").rglob("*.py"):
        text = p.read_text()
        found |= set(re.findall(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z_][A-Z0-9_]*)["']""", text))
        found |= set(re.findall(r"""^[A-Z_]*_ENV\s*=\s*["']([A-Z_][A-Z0-9_]*)["']""", text, re.M))
    return found - {"KMOD_DEBUG"}  # that one asks for tracebacks


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("garbage")
    (root / "kmod.toml").write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DOCKER_HOST": f"unix://{root}/no-engine.sock",
           "KMOD_CACHE": str(root / "cache"), "KMOD_MIRROR": "file:///nonexistent/debian",
           "KMOD_SECURITY_MIRROR": "file:///nonexistent/debian-security", "PATH": "/nonexistent"}
    env.pop("KMOD_DEBUG", None)
    return root, env


def run_forked(args, env, cwd) -> subprocess.CompletedProcess:
    """`kmod ARGS` as the program runs it (kmod.cli.main), in a child forked from this process: the
    same code without paying an interpreter start per case. kmod.tasks imports every stage lazily, so
    the child imports them under its own environment."""
    import tempfile
    import traceback
    from kmod import cli
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 99
            try:
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                sys.argv = ["kmod", *args]
                try:
                    cli.main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status),
                                           out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def run_all(sandbox, cases):
    root, base = sandbox
    # Imported once here, so that each child starts warm. None of them reads the environment when
    # imported (kmod reads it when a task runs), and nothing here calls into them.
    import docker  # noqa: F401
    import kmod.boot  # noqa: F401
    import kmod.build.matrix  # noqa: F401
    import kmod.build.runtime.docker  # noqa: F401
    import kmod.lint  # noqa: F401
    import kmod.package  # noqa: F401
    return [(case, run_forked(case[0], {**base, **case[1]}, root)) for case in cases]


def check(results):
    bad = []
    for (args, extra), proc in results:
        text = proc.stderr + proc.stdout
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("error", "environment error"))]
        if ("Traceback" in text or "internal error" in text or proc.returncode not in (0, 1, 2)
                or proc.returncode and not lines
                or proc.returncode == 1 and len(errors) != 1 and "host(s):" not in proc.stdout):
            # refused: exactly one line says why (a preflight whose host could not be read is a run
            # that ended, its host's row says why)
            bad.append(f"{extra or ''} kmod {' '.join(map(repr, args))} -> {proc.returncode}: {text[-300:]!r}")
    assert not bad, "\n".join(bad)


def test_every_flag_of_every_task_takes_garbage(sandbox):
    cases = [([task, *args], {}) for task, args in flags()]
    assert len(cases) > 150
    check(run_all(sandbox, cases))


def test_every_environment_variable_takes_garbage(sandbox):
    names = environment_variables()
    assert {"KMOD_CACHE", "KMOD_MIRROR", "KMOD_BOOT_TIMEOUT", "KMOD_SPEC"} <= names
    cases = [(task, {name: value}) for name in sorted(names) for value in ENV_GARBAGE for task in ENV_TASKS]
    check(run_all(sandbox, cases))
