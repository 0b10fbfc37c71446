"""--install end to end on a real VM: the DKMS .deb copied in, dkms builds the module there, it loads,
its probe fires on the trigger, the kernel log is judged by the boot test's rules, and the package is
removed again. And the same VM booted with module.sig_enforce=1: refused for that reason, untouched."""
import json

import pytest

from tests.preflight.conftest import invoke
from tests.preflight.vm import pin_and_arch

pytestmark = pytest.mark.integration
PACKAGE = "clone-probe-dkms"


def fresh_dkms(b) -> None:
    """The image makes dkms's signing key when it is built (at native speed, not by the first install
    under TCG); a fresh host has none, and dkms's first build makes it. Remove it from this boot (the
    VM runs -snapshot) so that the install makes it and the test sees that preflight removes it again."""
    b.ssh("rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub")


def state(b) -> str:
    return b.ssh(f"dpkg-query -W -f='${{db:Status-Abbrev}}' {PACKAGE} 2>/dev/null; echo; "
                 "test -d /sys/module/clone_probe && echo loaded; dkms status; ls /var/lib/dkms; "
                 "ls -d /tmp/kmod-preflight.* 2>/dev/null; true")


def test_install_proves_the_module_on_the_host_and_removes_it(vm, project):
    fresh_dkms(vm)
    before = state(vm)
    assert "loaded" not in before and "mok.key" not in before
    proc = invoke("preflight", "--host", vm.alias, "--ssh-config", str(vm.config), "--install", "--format", "json",
                  cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    host = json.loads(proc.stdout)["hosts"][0]
    trial = host["install"][0]
    assert trial["verdict"] == "pass", trial
    assert trial["hits"] and all(h > 0 for h in trial["hits"])
    assert "installed with dkms, loaded, probes fired" in trial["reason"]
    assert trial["cleanup"] == "removed" and host["attention"] == ""
    assert any("dkms made its signing key for this install" in n and "removed again" in n for n in host["notes"]), \
        host["notes"]
    assert state(vm) == before, "the host is not as it was"
    # the record a killed run would have left is cleared too
    saved = json.loads((project / "dist" / "preflight.json").read_text())
    assert saved["hosts"][0]["attention"] == "" and saved["hosts"][0]["install"][0]["verdict"] == "pass"


def test_signature_enforcement_is_refused_for_that_reason(project, booted):
    pin, a = pin_and_arch()
    b = booted(pin.release(a), ("module.sig_enforce=1",), alias="kmod-vm-signed")
    before = state(b)
    proc = invoke("preflight", "--host", b.alias, "--ssh-config", str(b.config), "--install", "--format", "json",
                  cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    host = json.loads(proc.stdout)["hosts"][0]
    v = host["modules"][0]
    assert host["facts"]["sig_enforce"] is True
    assert v["verdict"] == "fail" and "module.sig_enforce=1" in v["reason"] and "unsigned" in v["reason"]
    assert "not enrolled" in v["reason"]
    assert host["install"] == []     # a module that cannot load is not installed to find out
    assert state(b) == before


def test_ctrl_c_during_install_leaves_the_host_as_it_was(vm, project):
    """Ctrl-C while the package is being installed (the progress line says so and dpkg runs on the VM):
    the host finishes that step and is put back, the installed package purged and the signing key dkms
    made removed; one line, exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    fresh_dkms(vm)
    before = state(vm)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "preflight", "--host", vm.alias,
                             "--ssh-config", str(vm.config), "--install"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"{vm.alias}: changing - clone_probe: installing" in line:
            break
    else:
        raise AssertionError(f"no progress line said the package is being installed: {''.join(seen)}")
    deadline = time.monotonic() + 120
    while "dpkg" not in vm.ssh("pgrep -a dpkg; true"):   # the install has really begun on the host
        assert time.monotonic() < deadline, "dpkg -i never ran on the VM"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert state(vm) == before, "the host is not as it was"
    saved = json.loads((project / "dist" / "preflight.json").read_text())["hosts"][0]
    assert saved["attention"] == ""
    [trial] = saved["install"]
    assert trial["reason"] == "interrupted: the package was removed again" and trial["cleanup"] == "removed", trial
