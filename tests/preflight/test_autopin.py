"""--auto-pin on a real VM that runs another flavour of the pinned suite's kernel (the image's second
kernel, cloud): without it the verdict says no cell matches and no headers are there; with it exactly
that kernel is resolved from the mirror's verified indexes and locked, the module is built, linted and
boot-tested for it, and the VM is preflighted again and passes on the new cell."""
import json
import os

import pytest

from kmod import pins
from tests.preflight.conftest import invoke
from tests.preflight.vm import SECOND_FLAVOUR, pin_and_arch

pytestmark = pytest.mark.integration


def test_auto_pin_makes_the_hosts_kernel_a_cell(project, booted):
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
    proc = invoke(*args, cwd=project, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    v = json.loads(proc.stdout)["hosts"][0]["modules"][0]
    assert v["verdict"] == "fail" and f"no built cell matches {release}" in v["reason"]
    assert "no kernel headers" in v["reason"] and "--auto-pin" in v["reason"]
    assert f"--flavour {SECOND_FLAVOUR}" in v["reason"]

    proc = invoke(*args, "--auto-pin", cwd=project, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cid = f"clone_probe/{pin.label(SECOND_FLAVOUR)}/{a.name}"
    cell = json.loads((project / "dist" / "manifest.json").read_text())["cells"][cid]
    assert cell["result"] == "ok" and cell["release"] == release
    assert not [f for f in cell["lint"] if f["severity"] == "error"]
    assert cell["boot"]["verdict"] == "pass" and cell["boot"]["hits"][0] > 0
    v = json.loads(proc.stdout)["hosts"][0]["modules"][0]
    assert v["verdict"] == "pass" and v["route"] == "prebuilt" and v["cell"] == cid
    assert pins.lock_path().read_bytes() == lock_before
