"""Shell completion as the shells run it: the script Invoke prints for the program is sourced into real
bash and zsh, their completion function is called with a command line, and we read what it offers."""
import os
import subprocess
import sys

import pytest

from kmod import PROGRAM
from tests.conftest import ROOT, need_tool

# (command line after the program's name, the word being completed, what must be offered, what must not)
CASES = [
    ("li", "li", {"lint"}, set()),
    ("build --ar", "--ar", {"--arch"}, set()),
    ("build --arch ar", "ar", {"arm64"}, {"x86_64"}),
    ("build -k tri", "tri", {"trixie-6.12"}, set()),
    ("build --module ", "", {"clone_probe", "all"}, set()),
    ("lint ", "", set(), {"build", "status"}),       # nothing: the shell offers files
    ("lint dist/", "dist/", set(), {"build"}),
    ("status --", "--", {"--format", "--spec", "--module", "--arch", "--state"}, {"--jobs"}),
]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    """A PATH where the program is this checkout's (what `pip install -e .` puts in .venv/bin)."""
    bindir = tmp_path_factory.mktemp("bin")
    for name, run in ((PROGRAM, "-m kmod"), ("invoke", f"-m invoke --search-root {ROOT}")):
        exe = bindir / name
        exe.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} {run} "$@"\n')
        exe.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
    return tmp_path


def offered(shell: str, line: str, current: str, path: str, cwd, program: str = PROGRAM) -> set[str]:
    if shell == "bash":
        script = (f'source <({program} --print-completion-script bash)\n'
                  f'read -ra COMP_WORDS <<< "{program} {line}"\n'
                  f'[[ -z "{current}" ]] && COMP_WORDS+=("")\n'
                  'COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n'
                  f'_complete_{program} {program} "{current}"\n'
                  'printf "%s\\n" "${COMPREPLY[@]}"\n')
        argv = ["bash", "--norc", "--noprofile", "-c", script]
    else:
        # words is what zsh's completion system hands the function; compctl filters by the current word.
        script = (f'zmodload zsh/compctl\nsource <({PROGRAM} --print-completion-script zsh)\n'
                  f'words=({PROGRAM} {line}{" " + repr(current) if not current else ""})\n'
                  f'_complete_{PROGRAM}\nprint -l -- ${{(M)reply:#{current}*}}\n')
        argv = ["zsh", "-f", "-c", script]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path})
    assert proc.returncode == 0, proc.stderr
    return {w for w in proc.stdout.split("\n") if w}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
@pytest.mark.parametrize("line,current,must,must_not", CASES)
def test_completion(shell, line, current, must, must_not, path, project):
    need_tool(shell)
    got = offered(shell, line, current, path, project)
    assert must <= got and not (must_not & got), got
    if not must:
        assert got == set(), got  # an empty answer is what makes the shell complete file names


@pytest.mark.parametrize("line,current,must,must_not", [CASES[0], CASES[2], CASES[5]])
def test_completion_through_invoke(line, current, must, must_not, path, project):
    need_tool("bash")
    got = offered("bash", line, current, path, project, program="invoke")
    assert must <= got and not (must_not & got) and (must or got == set()), got


def test_the_scripts_name_the_program(path, project):
    for shell in ("bash", "zsh"):
        text = subprocess.run([PROGRAM, "--print-completion-script", shell], capture_output=True, text=True,
                              env={**os.environ, "PATH": path}, cwd=project, check=True).stdout
        hooks = [ln for ln in text.splitlines() if ln.startswith(("complete ", "compctl "))]
        assert "--complete" in text and hooks and hooks[0].split()[-1] == PROGRAM
