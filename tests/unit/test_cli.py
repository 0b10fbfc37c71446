"""The real program, as a user runs it: one clear line and an exit code for every bad input."""

import pytest

from tests.conftest import ROOT, run_cli
from tests.conftest import run_program as kmod

FAKE_KDIR = ROOT / "tests" / "fixtures" / "fake_kdir"
SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'


@pytest.fixture
def project(tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    return tmp_path


def one_line_error(proc, code, text):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error", "environment error"))]
    assert len(errors) == 1 and text in errors[0], proc.stderr


@pytest.mark.parametrize("args,text", [
    (["build", "--arch", "sparc"], "unsupported architecture: 'sparc'"),
    (["build", "--kernel", "4.19"], "unsupported kernel: '4.19'"),
    (["build", "--symbol", "kernel_clone; reboot"], "is not a kernel symbol"),
    (["build", "--symbol", "../../etc/passwd"], "is not a kernel symbol"),
    (["build", "--module", "nope"], "unknown module 'nope'"),
    (["build", "--runtime", "podman"], "unsupported runtime"),
    (["build", "--runtime", "host"], "--runtime host needs --kdir"),
    (["build", "--runtime", "host", "--kdir", "/nonexistent"], "is not a kernel build tree"),
    (["render", "--symbol", "a b"], "is not a kernel symbol"),
    # nothing left to build says which combination the data rules out
    (["build", "--arch", "ppc64le", "--kernel", "bullseye"], "nothing to build: bullseye-5.10 has no ppc64el kernel"),
    (["build", "--arch", "s390x", "--kernel", "6.1", "--flavour", "rt"],
     "nothing to build: bookworm-6.1 locks no rt kernel for s390x"),
])
def test_bad_input_one_line_nothing_written(project, args, text):
    proc = kmod(*args, cwd=project)
    one_line_error(proc, 1, text)
    if "symbol" in text:
        assert not (project / "dist").exists()


def test_no_spec(tmp_path):
    one_line_error(kmod("build", cwd=tmp_path), 1, "no kmod.toml")


def test_no_docker_engine(project):
    proc = kmod("build", "--arch", "x86_64", "--kernel", "bookworm-6.1", cwd=project,
                env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    one_line_error(proc, 1, "no Docker engine answers")
    assert "dockerd" in proc.stderr


def test_host_runtime_with_fake_kbuild(project):
    proc = kmod("build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--arch", "arm64", "--no-lint", cwd=project)
    assert proc.returncode == 0, proc.stderr
    ko = project / "dist/clone_probe/host/arm64/clone_probe.ko"
    assert ko.read_text() == "fake module from clone_probe.c ARCH=arm64\n"
    log = (project / "dist/clone_probe/host/arm64/build.log").read_text()
    assert log.startswith("# reproduce: make -C") and "CROSS_COMPILE=aarch64-linux-gnu-" in log
    import json
    cell = json.loads((project / "dist/manifest.json").read_text())["cells"]["clone_probe/host/arm64"]
    assert cell["result"] == "ok" and len(cell["ko_sha256"]) == 64 and cell["inputs"]["sources"]
    again = kmod("build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--arch", "arm64", "--no-lint", cwd=project)
    assert again.returncode == 0 and "1 cached" in again.stdout


def test_failed_build_is_explained(project):
    proc = kmod("build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--arch", "x86_64", "--no-lint",
                cwd=project, env={"FAIL": "SSE register return with SSE disabled"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "FAILED clone_probe/host/x86_64" in proc.stderr and "why: Floating point in kernel code" in proc.stderr
    assert not (project / "dist/clone_probe/host/x86_64/clone_probe.ko").exists()
    assert not (project / "dist/.work").exists() or not list((project / "dist/.work").iterdir())


def test_invoke_lists_and_explains_tasks():
    listing = run_cli("--list")
    assert listing.returncode == 0
    for name in ("build", "render", "toolchains"):
        assert name in listing.stdout
    helptext = run_cli("--help", "build").stdout
    for flag in ("--arch", "--kernel", "--module", "--symbol", "--runtime", "--kdir", "--jobs"):
        assert flag in helptext


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_artifacts_honour_the_umask(project, umask):
    """Like any tool: what a build and a package write gets 0666 (0777 for a folder) less the umask,
    neither the 0600 of a temp file nor a fixed mode."""
    import os
    import stat
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=project, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=lambda: os.umask(umask))
    assert run("build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--arch", "arm64", "--no-lint").returncode == 0
    assert run("package", "--format", "tarball", "--force").returncode == 0
    dist = project / "dist"
    files = [dist / "clone_probe/host/arm64/clone_probe.ko", dist / "clone_probe/host/arm64/build.log",
             dist / "manifest.json", dist / "report.html", *sorted((dist / "packages").iterdir())]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
    assert stat.S_IMODE((dist / "clone_probe").stat().st_mode) == 0o777 & ~umask
