"""Session fixtures of the preflight tests: the VM image (built once per machine), a project with
clone_probe built for the VM's pinned kernel, the booted VMs, and ssh_config files that point at them.
Every QEMU started here is named tests.preflight.vm.NAME_PREFIX-<unique> and stopped by its fixture."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, need, need_tool
from tests.preflight import vm as vmmod
from tests.unit.test_cli import SPEC  # clone_probe on kernel_clone, the default module


def invoke(*args, cwd, env=None, timeout=1800):
    """The real `invoke preflight ...`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="session")
def vm_image():
    for tool in ("debootstrap", "mkfs.ext4", vmmod.archmod.get(vmmod.ARCH).qemu["binary"]):
        need_tool(tool)
    need(os.geteuid() == 0, "root (debootstrap and chroot build the VM image)")
    return vmmod.ensure()


@pytest.fixture(scope="session")
def project(tmp_path_factory, docker_client):
    """A project whose clone_probe is built (and linted) for the VM's pinned kernel."""
    root = tmp_path_factory.mktemp("preflight-project")
    (root / "kmod.toml").write_text(SPEC)
    proc = invoke("build", "--kernel", vmmod.PIN, "--arch", vmmod.ARCH, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


class Booted:
    """A booted VM and an ssh_config (with its known_hosts) naming it `alias`."""

    def __init__(self, vm: vmmod.VM, folder: Path, alias: str):
        self.vm, self.alias = vm, alias
        self.known_hosts = folder / f"{alias}.known_hosts"
        self.known_hosts.write_text(vm.known_hosts_line())
        self.config = folder / f"{alias}.ssh_config"
        self.config.write_text(self.entry(alias))

    def entry(self, alias: str, user: str = "root") -> str:
        return self.vm.ssh_config(alias, user) + f"  UserKnownHostsFile {self.known_hosts}\n"

    def ssh(self, command: str) -> str:
        """A command on the VM, for checking what preflight left there (Fabric, as preflight does)."""
        from fabric import Config, Connection
        with Connection(self.alias, config=Config(runtime_ssh_path=str(self.config))) as c:
            r = c.run(command, hide=True, warn=True, in_stream=False)
            return r.stdout


def _boot(tmp_path_factory, image, release, append=(), alias="kmod-vm"):
    folder = tmp_path_factory.mktemp(alias)
    v = vmmod.boot(image, release, append, log_dir=folder)
    return Booted(v, folder, alias)


@pytest.fixture(scope="session")
def vm(tmp_path_factory, vm_image):
    """The image's pinned kernel, booted once for the read-only, blacklist, unreachable and install tests."""
    pin, a = vmmod.pin_and_arch()
    b = _boot(tmp_path_factory, vm_image, pin.release(a))
    yield b
    b.vm.stop()


@pytest.fixture
def booted(tmp_path_factory, vm_image):
    """boot(release, append) for the short-lived VMs (sig_enforce, the other flavour); stopped after the test."""
    started = []

    def boot(release, append=(), alias="kmod-vm2"):
        b = _boot(tmp_path_factory, vm_image, release, append, alias)
        started.append(b)
        return b
    yield boot
    for b in started:
        b.vm.stop()


@pytest.fixture
def scratch_toolchains(tmp_path):
    """A copy of toolchains/ whose lock --auto-pin may rewrite (KMOD_TOOLCHAINS)."""
    dest = tmp_path / "toolchains"
    shutil.copytree(ROOT / "toolchains", dest)
    return dest
