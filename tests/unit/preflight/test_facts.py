"""The facts script: rendered safely, and parsed from what a real host (the test VM) printed."""
import subprocess

import pytest

from kmod.errors import InfraError
from kmod.preflight import facts
from tests.unit.preflight.conftest import recorded


def test_recorded_vm_facts():
    f = recorded("facts-bookworm-sig-enforce.txt")
    assert (f.release, f.machine, f.uid, f.privilege) == ("6.1.0-56-amd64", "x86_64", 0, "root")
    assert f.debian_version and f.debian_version.startswith("6.1.")
    assert f.os["VERSION_CODENAME"] == "bookworm"
    assert f.sig_enforce is True and f.lockdown == "none" and f.efi is False and f.secure_boot is False
    assert f.config_on("CONFIG_KPROBES") and f.config_on("CONFIG_MODULES") and f.config["CONFIG_MODULE_SIG_FORCE"] == "n"
    assert f.kallsyms_readable and f.addresses_visible and any(ln.endswith(" kernel_clone") for ln in f.kallsyms)
    assert f.blacklist and len(f.blacklist.splitlines()) > 100
    assert f.headers and f.kdir.startswith("/usr/src/linux-headers-") and f.symvers_source.endswith("Module.symvers")
    assert f.dkms and f.pkgtool == "dpkg" and f.free_kb > 1024
    assert f.vermagic.startswith("6.1.0-56-amd64 SMP")
    t = f.target("vm", "x86_64")
    assert "kernel_clone" in t.text and t.exports["register_kprobe"][1] is True and t.blacklist and t.ranges


def test_cloud_vm_has_no_headers():
    f = recorded("facts-bookworm-cloud.txt")
    assert f.release.endswith("-cloud-amd64") and not f.headers and not f.symvers_source
    assert f.target("vm", "x86_64").exports is None


def test_unprivileged_kallsyms_hides_addresses():
    f = recorded("facts-bookworm-cloud.txt")
    f.kallsyms = ["0000000000000000 T kernel_clone"]
    assert not f.addresses_visible
    assert f.target("vm", "x86_64").ranges == []   # zero addresses would fall in every range


def test_script_quotes_names_and_runs_in_dash(tmp_path):
    """Rendered for hostile-looking (but valid) input, the script is valid sh, reads only, and ends."""
    text = facts.script(["kernel_clone", "do_sys_open.isra.0"], ["register_kprobe", "_printk"])
    assert "'" + " kernel_clone" + "'" in text
    proc = subprocess.run(["sh", "-n", "-c", text], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # run it here for real: this machine is a host too
    proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60)
    f = facts.parse(proc.stdout)
    assert f.release == subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    assert f.uid is not None and f.machine


def test_an_answer_cut_short_is_an_error():
    with pytest.raises(InfraError, match="ended early"):
        facts.parse(f"{facts.MARKER} uname\n6.1.0-56-amd64\n")
