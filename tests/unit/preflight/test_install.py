"""--install's parts that need no host: the kernel log of one run, judged by the boot test's rules, and
the clean-up that puts a host back whatever happened (against a fake session that records commands)."""
import dataclasses
import re
import threading

import pytest

from kmod.boot import verdict as bootverdict
from kmod.preflight import install
from kmod.preflight.ssh import HostError, Result
from kmod.preflight.verdict import FAIL, PASS, ModuleInfo
from kmod.spec import Module, parse_probe
from tests.unit.preflight.conftest import recorded

MARK = "KMODPREFLIGHT-RUN-abc"
LOG = f"""[  300.0] an older message
[  301.0] {MARK}
[  301.1] KMODBOOT step=init status=ok
[  301.2] KMODBOOT step=mount status=ok release=6.1.0-56-amd64 taint=0
[  302.0] clone_probe: loading out-of-tree module taints kernel.
[  302.1] KMODBOOT step=insmod status=ok
[  302.2] KMODBOOT step=kprobes status=entry entry=ffffffff810a0a60  k  kernel_clone+0x0    [FTRACE]
[  302.3] KMODBOOT step=kprobes status=ok
[  302.4] KMODBOOT step=trigger status=start
{{warn}}[  302.5] KMODBOOT step=trigger status=ok rc=0
[  302.6] KMODBOOT step=hits status=ok value=4
[  302.7] KMODBOOT step=rmmod status=ok
[  302.8] KMODBOOT step=taint status=ok value=12288
[  302.9] KMODBOOT step=done status=ok
"""
PROBES = [("kernel_clone", 0)]


def stdout(warn=""):
    return "KMODBOOT step=init status=ok\n" + f"{MARK}-KERNEL-LOG\n" + LOG.replace("{warn}", warn)


def test_the_run_is_judged_from_its_mark_on():
    lines = install.kernel_log(stdout(), MARK)
    assert lines[0].endswith(MARK) and "older message" not in "\n".join(lines)
    v = bootverdict.judge(lines, PROBES, "clone_probe")
    assert v.status == bootverdict.PASS and v.hits == [4] and v.taint == 12288


def test_a_warning_during_the_trigger_fails_it():
    lines = install.kernel_log(stdout("[  302.45] WARNING: CPU: 0 PID: 1 at kernel/fork.c:1 kernel_clone\n"), MARK)
    v = bootverdict.judge(lines, PROBES, "clone_probe")
    assert v.status == bootverdict.FAIL and v.step == "trigger" and "WARNING" in v.reason


def test_without_a_mark_in_the_log_the_scripts_own_lines_are_used():
    lines = install.kernel_log("KMODBOOT step=init status=ok\nKMODBOOT step=done status=ok\n"
                               f"{MARK}-KERNEL-LOG\n[ 1.0] unrelated\n", MARK)
    assert lines == ["KMODBOOT step=init status=ok", "KMODBOOT step=done status=ok"]


class FakeSession:
    """Records commands; answers by the first matching rule; fails on demand."""

    def __init__(self, answers=(), broken_after=None):
        self.commands, self.answers, self.broken_after = [], list(answers), broken_after
        self.host, self.label, self.deadline = "fake", "root@fake:22", 0
        self.put_calls = []

    def run(self, command, timeout=None):
        self.commands.append(command)
        if self.broken_after is not None and len(self.commands) > self.broken_after:
            raise HostError("connection lost")
        for needle, result in self.answers:
            if needle in command:
                return result
        return Result(0, "", "")

    def put(self, local, remote):
        self.put_calls.append((local, remote))


def installer(session, tmp_path, **kw):
    facts = recorded("facts-bookworm-sig-enforce.txt")
    m = Module("clone_probe", probes=(parse_probe("kernel_clone"),))
    info = ModuleInfo(m, [], {"kernel_clone": "kprobe"}, "3.0.3-4~")
    pkg = tmp_path / "clone-probe-dkms_0.1.0_all.deb"
    pkg.write_bytes(b"!<arch>\n")
    return install.Installer(session, kw.pop("facts", facts), info, pkg, "clone-probe-dkms", **kw)


def test_a_full_run_installs_tests_and_removes(tmp_path):
    s = FakeSession([("mktemp", Result(0, "/tmp/kmod-preflight.X1\n", ""))])
    inst = installer(s, tmp_path)
    recorded_run = s.run

    def run(command, timeout=None):
        if "-KERNEL-LOG" in command:   # the trial script: answer with a log that carries its own mark
            recorded_run(command, timeout)
            return Result(0, stdout().replace(MARK, re.search(r"KMODPREFLIGHT-RUN-[0-9a-f]+", command).group(0)), "")
        return recorded_run(command, timeout)
    s.run = run
    t = inst.run()
    assert t.status == PASS and t.hits == [4], t.reason
    assert any(c.startswith("DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/kmod-preflight.X1/") for c in s.commands)
    assert s.put_calls and s.put_calls[0][1].startswith("/tmp/kmod-preflight.X1/")
    assert inst.cleanup() == "removed"
    assert any("dpkg -P clone-probe-dkms" in c for c in s.commands) and s.commands[-1].startswith("rm -rf /tmp/kmod-preflight.X1")


def test_a_failed_dkms_build_still_removes_the_package(tmp_path):
    s = FakeSession([("mktemp", Result(0, "/tmp/d\n", "")), ("dpkg -i", Result(1, "Error! Bad return status", "")),
                     ("make.log", Result(0, "cc1: error: bad\n", ""))])
    inst = installer(s, tmp_path)
    t = inst.run()
    assert t.status == FAIL and t.step == "install" and "cc1: error: bad" in t.excerpt
    assert inst.cleanup() == "removed" and any("dpkg -P" in c for c in s.commands)


def test_interrupted_after_install_cleans_up(tmp_path):
    cancel = threading.Event()
    s = FakeSession([("mktemp", Result(0, "/tmp/d\n", ""))])
    inst = installer(s, tmp_path, cancel=cancel)
    original = s.run

    def run(command, timeout=None):
        r = original(command, timeout)
        if "dpkg -i" in command:
            cancel.set()        # Ctrl-C arrives while dkms builds
        return r
    s.run = run
    with pytest.raises(install.Interrupted):
        inst.run()
    assert inst.cleanup() == "removed"
    assert not any("modprobe clone_probe" in c and "-r" not in c for c in s.commands)


def test_what_cannot_be_removed_is_named(tmp_path):
    s = FakeSession([("mktemp", Result(0, "/tmp/d\n", "")), ("db:Status-Abbrev", Result(0, "loaded\niF ", ""))])
    inst = installer(s, tmp_path)
    inst.installed, inst.remote_dir = True, "/tmp/d"
    left = inst.cleanup()
    assert "module clone_probe still loaded" in left and "package clone-probe-dkms still installed (iF)" in left


def test_an_installed_package_or_loaded_module_is_never_touched(tmp_path):
    for answer, what in (("ii  0.0.9", "clone-probe-dkms 0.0.9 is installed"), ("loaded\n", "a module clone_probe is loaded")):
        s = FakeSession([("db:Status-Abbrev", Result(0, answer, ""))])
        inst = installer(s, tmp_path)
        t = inst.run()
        assert t.status == FAIL and t.cleanup == "untouched" and what in t.reason
        assert len(s.commands) == 1 and "db:Status-Abbrev" in s.commands[0]   # asked, nothing else
        assert inst.cleanup() == "nothing installed"


def test_no_root_no_install(tmp_path):
    f = dataclasses.replace(recorded("facts-bookworm-sig-enforce.txt"), privilege="none")
    with pytest.raises(HostError, match="needs root or passwordless sudo"):
        install.as_root(f, "dpkg -i x")
    f = dataclasses.replace(f, privilege="sudo")
    assert install.as_root(f, "dpkg -i 'a b'").startswith("sudo -n sh -c ")


class DkmsHost(FakeSession):
    """A host whose files are a set: dpkg -i makes dkms's key and certificate when they are missing,
    as dkms's first build does; `[ -e F ] && echo F` and `rm -f F` act on the set."""
    KEYS = ("/var/lib/dkms/mok.key", "/var/lib/dkms/mok.pub")

    def __init__(self, files=()):
        super().__init__([("mktemp", Result(0, "/tmp/d\n", ""))])
        self.files = set(files)

    def run(self, command, timeout=None):
        r = super().run(command, timeout)
        if "dpkg -i" in command:
            self.files |= set(self.KEYS)
        for path in re.findall(r"rm -f ([^\s;]+)", command):
            self.files.discard(path)
        asked = re.findall(r"\[ -e (\S+) \] && echo", command)
        if asked:
            return Result(0, "".join(f"{p}\n" for p in asked if p in self.files), "")
        return r


def test_the_signing_key_dkms_made_is_removed_with_the_package(tmp_path):
    s = DkmsHost()
    inst = installer(s, tmp_path)
    inst.run()
    assert s.files == set(DkmsHost.KEYS)                  # dkms made them during the install
    assert inst.cleanup() == "removed"
    assert s.files == set() and sorted(inst.keys_made) == sorted(DkmsHost.KEYS) and not inst.keys_left
    rm = [c for c in s.commands if "rm -f /var/lib/dkms" in c]
    assert rm and all("[ ! -L " in c for c in rm)       # a file, never a link put there meanwhile


def test_a_signing_key_that_was_there_stays(tmp_path):
    s = DkmsHost(DkmsHost.KEYS)
    inst = installer(s, tmp_path)
    inst.run()
    assert inst.cleanup() == "removed" and s.files == set(DkmsHost.KEYS) and inst.keys_made == []
    assert not any("rm -f /var/lib/dkms" in c for c in s.commands)
    # --keep keeps the key that signed what it keeps
    s = DkmsHost()
    inst = installer(s, tmp_path, keep=True)
    inst.run()
    assert inst.cleanup() == "kept (--keep)" and s.files == set(DkmsHost.KEYS) and len(inst.keys_made) == 2


def test_the_signing_key_paths_are_the_hosts_framework_conf(tmp_path):
    f = dataclasses.replace(recorded("facts-bookworm-sig-enforce.txt"), dkms_signing_key="/etc/keys/dkms.key",
                            dkms_certificate="/etc/keys/dkms.der")
    s = DkmsHost()
    inst = installer(s, tmp_path, facts=f)
    inst.run()
    assert inst.keys_absent == ["/etc/keys/dkms.key", "/etc/keys/dkms.der"]


def test_the_key_stays_while_the_package_it_signed_does(tmp_path):
    """dpkg -P failed: the package is still there, so is the key it was signed with; both are named."""
    s = DkmsHost()
    s.answers.insert(0, ("db:Status-Abbrev", Result(0, "iF 0.1.0", "")))
    inst = installer(s, tmp_path)
    inst.installed, inst.remote_dir, inst.keys_absent = True, "/tmp/d", list(DkmsHost.KEYS)
    s.files |= set(DkmsHost.KEYS)
    left = inst.cleanup()
    assert "package clone-probe-dkms still installed" in left and "signing key made by this install" in left
    assert s.files == set(DkmsHost.KEYS) and inst.keys_left == list(DkmsHost.KEYS)
    assert not any("rm -f /var/lib/dkms" in c for c in s.commands)
