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
    """Rendered for hostile-looking (but valid) input, the scripts are valid sh, read only, and end."""
    from kmod.preflight import kallsyms
    text = facts.script(["register_kprobe", "_printk"])
    lines = kallsyms.script(["kernel_clone", "do_sys_open.isra.0"], sudo=False)
    assert "'" + " kernel_clone" + "'" in lines and "'" + " _kbl_addr_do_sys_open.isra.0" + "'" in lines
    for script in (text, lines):
        proc = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    # run them here for real: this machine is a host too
    proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60)
    f = facts.parse(proc.stdout)
    assert f.release == subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    assert f.uid is not None and f.machine and f.privilege in ("root", "sudo", "none")
    if f.kallsyms_first:   # the first symbol of the image, and the build's identity
        assert len(f.kallsyms_first.split()) >= 3 and f.kernel_notes
    proc = subprocess.run(["sh", "-c", lines], capture_output=True, text=True, timeout=60)
    ks = facts.sections(proc.stdout)
    assert "end" in ks and ks["kallsyms"][-1] in ("status ok", "status unreadable")


def test_an_answer_cut_short_is_an_error():
    with pytest.raises(InfraError, match="ended early"):
        facts.parse(f"{facts.MARKER} uname\n6.1.0-56-amd64\n")


@pytest.mark.parametrize("allowed", [True, False])
def test_one_sudo_for_the_root_only_reads(tmp_path, allowed):
    """A login that is not root: one `sudo -n` for the whole privileged block, or, when sudo wants a
    password, none of it (and the report says what needs root). Run here as nobody, with a fake sudo
    (it logs each call, and runs the command as the caller, or refuses) over /usr/local/bin in a
    mount namespace of its own."""
    import os
    import shutil
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root, unshare and setpriv")
    # everything nobody touches lives in the namespace's own tmpfs (pytest's folders are root's, 0700)
    fake = tmp_path / "sudo"
    fake.write_text('#!/bin/sh\necho "$*" >> /usr/local/bin/sudo.log\n' + (
        '[ "$1" = -n ] && shift\nexec "$@"\n' if allowed else 'echo "sudo: a password is required" >&2\nexit 1\n'))
    fake.chmod(0o755)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none /usr/local/bin && cp {fake} /usr/local/bin/ "
                           "&& setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"$S\"; "
                           "echo @@SUDO-LOG@@; cat /usr/local/bin/sudo.log"],
                          capture_output=True, text=True, timeout=60, env={"S": facts.script(["register_kprobe"])})
    if "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
        pytest.skip("no mount namespaces here")
    out, _, log = proc.stdout.partition("@@SUDO-LOG@@\n")
    f = facts.parse(out)
    calls = [ln for ln in log.splitlines() if ln.startswith("-n ")]   # the block itself spans lines
    assert calls == ['-n sh -c m() { echo "@@KMOD-PREFLIGHT@@ $1"; }'], log
    if allowed:
        assert f.privilege == "sudo" and f.blacklist_status != "needs-root"
    else:
        assert f.privilege == "none" and f.blacklist_status == "needs-root"
    assert f.kallsyms_first and f.uid == 65534
