"""Fault injection against the real engine and real QEMU (issue 9's proof): a signal during a build and
during a boot test, SIGKILL then a new run, and two runs at once in one project.

After each: no container, no volume, no QEMU and no work folder of the run is left; the manifest is valid
and says `interrupted` (never failed); the next run recovers. Every check looks only at what this test's
own project made (containers whose mounts lie in its folder, QEMU processes whose files do), never at the
rest of the engine, which other people use at the same time."""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, containers_of, need, volumes_of
from tests.integration.test_boot import qemus_under

pytestmark = pytest.mark.integration
PIN, ARCH = "bookworm-6.1", "arm64"   # the quickest cell to build and to boot under TCG
SIGNALS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}

BUILD_SPEC = """
[[module]]
name = "sig_probe"
symbols = ["kernel_clone"]

[[module]]
name = "other_probe"
symbols = ["do_sys_openat2"]
"""

BOOT_SPEC = f"""
[[module]]
name = "quick_probe"
symbols = ["kernel_clone"]
arches = ["{ARCH}"]

[[module]]
name = "hang_probe"
symbols = ["kernel_clone"]
trigger = "sleep 600"
arches = ["{ARCH}"]

[[module]]
name = "late_probe"
symbols = ["vfs_read"]
arches = ["{ARCH}"]
"""


STARTED: list[subprocess.Popen] = []  # what this test started; stopped if the test fails half-way


def start(*args, cwd) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "kmod", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_run_left_behind():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:  # a failed test: its run is stopped (Ctrl-C), not left running on
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)


def kmod(*args, cwd, timeout=600) -> subprocess.CompletedProcess:
    proc = start(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def wait_for(what, timeout=120, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out waiting"
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def manifest(root: Path) -> dict:
    return json.loads((root / "dist" / "manifest.json").read_text())


def no_traceback(proc):
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


def assert_nothing_left(client, root: Path, volumes: set[str]):
    assert containers_of(client, root) == []
    existing = {v.name for v in client.volumes.list()}
    assert not volumes & existing
    work = root / "dist" / ".work"
    assert not work.exists() or not list(work.iterdir()), list(work.iterdir())
    assert qemus_under(root) == []


@pytest.fixture(scope="module")
def engine(docker_client):
    from kmod import pins
    from kmod.build import images
    images.ensure_all(docker_client, [pins.require_locked(pins.get(PIN))], quiet=True)
    return docker_client


# --- a signal during a build -------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [*SIGNALS, "SIGKILL"])
def test_signal_during_build(engine, tmp_path, sig):
    (tmp_path / "kmod.toml").write_text(BUILD_SPEC)
    args = ("build", "--module", "sig_probe", "--kernel", PIN, "--arch", ARCH, "--no-lint")
    proc = start(*args, cwd=tmp_path)
    running = wait_for(lambda: containers_of(engine, tmp_path, all=False), proc=proc)
    volumes = volumes_of(running)
    assert volumes == set()  # bind mounts only: no image declares a VOLUME
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    if sig != "SIGKILL":
        assert proc.returncode == SIGNALS[sig], err
        assert "Traceback" not in err and f"interrupted ({sig})" in err.splitlines()[-1]
        assert_nothing_left(engine, tmp_path, volumes)
        m = manifest(tmp_path)
        assert m["runs"][-1]["status"] == "interrupted"
        results = {c["result"] for c in m["cells"].values()}
        assert "interrupted" in results and "failed" not in results and "running" not in results
        # an interrupted cell blocks nothing
        packaged = kmod("package", "--module", "sig_probe", "--format", "tarball", cwd=tmp_path)
        assert packaged.returncode == 0, packaged.stderr
    else:
        assert proc.returncode == -signal.SIGKILL
        assert manifest(tmp_path)["runs"][-1]["status"] == "running"  # nobody could say otherwise
    again = kmod(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    no_traceback(again)
    assert_nothing_left(engine, tmp_path, volumes)  # SIGKILL: the new run reaped the dead one's containers
    m = manifest(tmp_path)
    assert [r["status"] for r in m["runs"]] == ["interrupted", "ok"]
    assert {c["result"] for c in m["cells"].values()} == {"ok"}


def _qemu_children(pid: int) -> list[int]:
    """QEMU processes whose parent is `pid` (a probe map's VM runs from the cache, not the project)."""
    found = []
    for child in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"qemu-system" in cmd.split(b"\0")[0]:
            found.append(int(child))
    return found


def test_signal_during_the_probe_map_boot_of_a_builds_lint(engine, tmp_path):
    """The build's lint boots the pin's kernel once to map its probe targets (issue 9, item 9). A SIGTERM
    then ends that VM at once too: the run exits within seconds, leaves no QEMU, no container, no map
    half-made, and records `interrupted`; the next run makes the map and builds."""
    import shutil
    from kmod import arch as archmod
    from kmod import pins
    from kmod.boot import probemap
    need(shutil.which(archmod.get(ARCH).qemu["binary"]) is not None, archmod.get(ARCH).qemu["binary"])
    cached = probemap.cache_path(pins.get(PIN), archmod.get(ARCH))
    shutil.rmtree(cached, ignore_errors=True)          # the next build must make it again
    # new bytes (a description of this run's own), so that no lint result is in the cache for them
    (tmp_path / "kmod.toml").write_text(BUILD_SPEC.replace('name = "sig_probe"\n', 'name = "sig_probe"\n'
                                                           f'description = "probe-map signal test {os.urandom(8).hex()}"\n'))
    args = ("build", "--module", "sig_probe", "--kernel", PIN, "--arch", ARCH)
    proc = start(*args, cwd=tmp_path)
    vms = wait_for(lambda: _qemu_children(proc.pid), proc=proc, timeout=300)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err.splitlines()[-1]
    assert took < 5, f"the run took {took:.1f}s to end after SIGTERM (it waited for the VM?)"
    assert not [p for p in vms if Path(f"/proc/{p}").exists()]
    assert not (cached / "meta.json").exists()        # the VM was ended, not waited for
    assert_nothing_left(engine, tmp_path, set())
    m = manifest(tmp_path)
    assert m["runs"][-1]["status"] == "interrupted"
    assert {c["result"] for c in m["cells"].values()} <= {"interrupted"}
    again = kmod(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (cached / "meta.json").is_file()
    assert {c["result"] for c in manifest(tmp_path)["cells"].values()} == {"ok"}


# --- a signal during a boot test ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def booted(engine, tmp_path_factory):
    from kmod import arch as archmod
    need(__import__("shutil").which(archmod.get(ARCH).qemu["binary"]) is not None, archmod.get(ARCH).qemu["binary"])
    root = tmp_path_factory.mktemp("faultboot")
    (root / "kmod.toml").write_text(BOOT_SPEC)
    proc = kmod("build", "--module", "all", "--kernel", PIN, "--arch", ARCH, "--no-lint", cwd=root)
    assert proc.returncode == 0, proc.stderr
    # One boot first: the pinned kernel and busybox are fetched and unpacked now (a fresh cache takes
    # minutes), so that the signal tests below signal a VM, not a download.
    proc = kmod("boot-test", "--module", "quick_probe", cwd=root)
    assert proc.returncode == 0, proc.stderr
    yield root
    assert qemus_under(root) == []


@pytest.mark.parametrize("sig", [*SIGNALS, "SIGKILL"])
def test_signal_during_boot_test(booted, sig):
    proc = start("boot-test", "--module", "hang_probe", "--timeout", "300", cwd=booted)
    wait_for(lambda: qemus_under(booted), proc=proc)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    wait_for(lambda: not qemus_under(booted), timeout=10)  # SIGKILL: QEMU dies with its parent
    hang = lambda: manifest(booted)["cells"][f"hang_probe/{PIN}/{ARCH}"]["boot"]
    if sig != "SIGKILL":
        assert proc.returncode == SIGNALS[sig], err
        assert "Traceback" not in err and f"interrupted ({sig})" in err.splitlines()[-1]
        assert hang()["verdict"] == "interrupted"
        assert manifest(booted)["runs"][-1]["status"] == "interrupted"
    else:
        assert hang()["verdict"] == "running"
    again = kmod("boot-test", "--module", "quick_probe", cwd=booted)
    assert again.returncode == 0, again.stderr
    no_traceback(again)
    assert hang()["verdict"] == "interrupted"  # SIGKILL: reaped by the next run
    assert manifest(booted)["cells"][f"quick_probe/{PIN}/{ARCH}"]["boot"]["verdict"] == "pass"
    assert "running" not in {r["status"] for r in manifest(booted)["runs"]}
    assert qemus_under(booted) == []


# --- two runs at once in one project -----------------------------------------------------------------

def test_build_and_build(engine, tmp_path):
    """Two builds at once: every record survives, and the cell both want is built once."""
    (tmp_path / "kmod.toml").write_text(BUILD_SPEC)
    first = start("build", "--module", "sig_probe", "--kernel", PIN, "--arch", ARCH, "--no-lint", cwd=tmp_path)
    wait_for(lambda: containers_of(engine, tmp_path, all=False), proc=first)
    second = kmod("build", "--module", "sig_probe,other_probe", "--kernel", PIN, "--arch", ARCH, "--no-lint",
                  cwd=tmp_path)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    cell = f"sig_probe/{PIN}/{ARCH}"
    assert f"{cell}: ok" in err  # the first built it
    assert "another kmod run is building this cell" in second.stderr
    assert f"{cell}: cached" in second.stderr  # the second waited and took it, not built it again
    m = manifest(tmp_path)
    assert {k: v["result"] for k, v in m["cells"].items()} == {cell: "ok", f"other_probe/{PIN}/{ARCH}": "ok"}
    assert [r["status"] for r in m["runs"]] == ["ok", "ok"]


@contextmanager
def building_meanwhile(root: Path, symbols: str):
    """late_probe built (with new symbols, so it really builds) while the body runs; yields the build."""
    from kmod.build.runtime.docker import client
    engine = client()
    (root / "kmod.toml").write_text(BOOT_SPEC.replace('symbols = ["vfs_read"]', f"symbols = {symbols}"))
    try:
        build = start("build", "--module", "late_probe", "--kernel", PIN, "--arch", ARCH, "--no-lint", cwd=root)
        wait_for(lambda: containers_of(engine, root, all=False), proc=build)
        yield build
        build.communicate(timeout=300)
    finally:
        (root / "kmod.toml").write_text(BOOT_SPEC)
    assert build.returncode == 0
    assert manifest(root)["cells"][f"late_probe/{PIN}/{ARCH}"]["result"] == "ok"


def test_build_and_boot_test(booted):
    """A build of one module while another boot-tests: both records are there afterwards."""
    with building_meanwhile(booted, '["vfs_write"]'):
        boot = kmod("boot-test", "--module", "quick_probe", cwd=booted)
    assert boot.returncode == 0, boot.stderr
    assert manifest(booted)["cells"][f"quick_probe/{PIN}/{ARCH}"]["boot"]["verdict"] == "pass"


def test_build_and_package(booted):
    with building_meanwhile(booted, '["vfs_read", "vfs_write"]'):
        package = kmod("package", "--module", "quick_probe", "--format", "deb,tarball", "--no-lintian", "--force",
                       cwd=booted)  # --force: its cells were built --no-lint
    assert package.returncode == 0, package.stderr
    assert sorted(p.suffix for p in (booted / "dist" / "packages").iterdir()) == [".deb", ".gz"]


# --- a user who may not use the engine's socket ------------------------------------------------------

def test_socket_permission_is_not_a_missing_engine(engine):
    """The engine runs; this user may not open its socket: say that, not "start dockerd"."""
    sock = "/var/run/docker.sock"
    need(os.path.exists(sock) and not os.stat(sock).st_mode & 0o006, "a Docker socket closed to other users")
    from kmod.build.runtime import docker as rtdocker
    from kmod.errors import InfraError
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child that drops to nobody after every import is done
        try:
            os.environ.pop("DOCKER_HOST", None)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                rtdocker.client()
                line = "connected"
            except InfraError as e:
                line = e.line()
            os.write(write, line.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    line = os.read(read, 4096).decode()
    assert "refused permission" in line and "usermod -aG docker" in line, line
    assert "dockerd" not in line
