"""--auto-pin on a real VM that runs another flavour of the pinned suite's kernel (the image's second
kernel, cloud): without it the verdict says no cell matches and no headers are there; with it exactly
that kernel is resolved from the mirror's verified indexes and locked, the module is built, linted and
boot-tested for it, and the VM is preflighted again and passes on the new cell."""
import json
import os
import shutil

import pytest

from kmod import arch as archmod
from kmod import pins
from tests.preflight.conftest import invoke
from tests.preflight.vm import SECOND_FLAVOUR, pin_and_arch

pytestmark = pytest.mark.integration


@pytest.fixture
def own(project, tmp_path):
    """A copy of the session's built project: what --auto-pin adds stays out of the other tests' way."""
    dest = tmp_path / "project"
    shutil.copytree(project, dest, symlinks=True)
    return dest


def test_auto_pin_makes_the_hosts_kernel_a_cell(own, booted):
    """The VM runs the pin's cloud flavour, which the lock pins but the project did not build (the build's
    default is generic): without --auto-pin no cell matches and no headers are there, and the reason says
    how to build it; with it that cell is built, linted and boot-tested, and the VM passes on it. The
    lock is left as it is: nothing new to pin."""
    pin, a = pin_and_arch()
    release = pin.release(a, SECOND_FLAVOUR)
    b = booted(release, alias="kmod-vm-cloud")
    # The boot stage picks KVM when /dev/kvm answers; this project's machines answer but hang a 6.1
    # guest, so the boot test of the new cell runs under TCG unless told otherwise.
    env = {"KMOD_BOOT_ACCEL": os.environ.get("KMOD_BOOT_ACCEL", "tcg")}
    args = ("preflight", "--host", b.alias, "--ssh-config", str(b.config), "--format", "json")
    lock_before = pins.lock_path().read_bytes()
    proc = invoke(*args, cwd=own, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    v = json.loads(proc.stdout)["hosts"][0]["modules"][0]
    assert v["verdict"] == "fail" and f"no built cell matches {release}" in v["reason"]
    assert "no kernel headers" in v["reason"] and "--auto-pin" in v["reason"]
    assert f"--flavour {SECOND_FLAVOUR}" in v["reason"]

    proc = invoke(*args, "--auto-pin", cwd=own, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cid = f"clone_probe/{pin.label(SECOND_FLAVOUR)}/{a.name}"
    cell = json.loads((own / "dist" / "manifest.json").read_text())["cells"][cid]
    assert cell["result"] == "ok" and cell["release"] == release
    assert not [f for f in cell["lint"] if f["severity"] == "error"]
    assert cell["boot"]["verdict"] == "pass" and cell["boot"]["hits"][0] > 0
    v = json.loads(proc.stdout)["hosts"][0]["modules"][0]
    assert v["verdict"] == "pass" and v["route"] == "prebuilt" and v["cell"] == cid
    assert pins.lock_path().read_bytes() == lock_before


def test_auto_pin_locks_an_unpinned_debian_kernel(own, booted, scratch_toolchains):
    """The same VM against toolchains whose pin leaves the cloud flavour out: its kernel is then a Debian
    kernel of a pinned suite that is not pinned, and --auto-pin resolves exactly it (ABI, flavour,
    Debian version) from the mirror's verified indexes and locks it as a pin of its own."""
    conf = scratch_toolchains / "kernels" / "bookworm-6.1.toml"
    text = conf.read_text()
    assert f'"{SECOND_FLAVOUR}", ' in text
    conf.write_text(text.replace(f'"{SECOND_FLAVOUR}", ', ""))
    pin, a = pin_and_arch()
    release = f"{pin.abi(a)}-{SECOND_FLAVOUR}-{a.kernel_flavour}"
    b = booted(release, alias="kmod-vm-cloud")
    # The boot stage picks KVM when /dev/kvm answers; this project's machines answer but hang a 6.1
    # guest, so the boot test of the new cell runs under TCG unless told otherwise.
    env = {"KMOD_TOOLCHAINS": str(scratch_toolchains), "KMOD_BOOT_ACCEL": os.environ.get("KMOD_BOOT_ACCEL", "tcg")}
    args = ("preflight", "--host", b.alias, "--ssh-config", str(b.config), "--format", "json")
    proc = invoke(*args, cwd=own, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    v = json.loads(proc.stdout)["hosts"][0]["modules"][0]
    assert v["verdict"] == "fail" and f"no built cell matches {release}" in v["reason"]
    assert "no kernel headers" in v["reason"] and "--auto-pin" in v["reason"]

    proc = invoke(*args, "--auto-pin", cwd=own, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = f"{pin.suite}-{release}"
    lock = json.loads((scratch_toolchains / "kernels.lock").read_text())["pins"]
    entry = lock[name]
    assert (entry["base"], entry["abi"], entry["flavour"], entry["arches"]) == (pin.name, pin.abi(a),
                                                                                 f"{SECOND_FLAVOUR}-{a.kernel_flavour}", [a.name])
    image = next(p for p in entry["packages"] if p["role"] == "image")
    assert image["name"] == f"linux-image-{release}-unsigned" and len(image["sha256"]) == 64
    assert image["version"] == pin.package("image", a).version        # exactly the build the host runs
    assert set(lock) > {pin.name}
    cell = json.loads((own / "dist" / "manifest.json").read_text())["cells"][f"clone_probe/{name}/{a.name}"]
    assert cell["result"] == "ok" and cell["release"] == release
    assert not [f for f in cell["lint"] if f["severity"] == "error"]
    assert cell["boot"]["verdict"] == "pass" and cell["boot"]["hits"][0] > 0
    v = json.loads(proc.stdout)["hosts"][0]["modules"][0]
    assert v["verdict"] == "pass" and v["route"] == "prebuilt" and v["cell"] == f"clone_probe/{name}/{a.name}"
    assert archmod.get(a.name)
