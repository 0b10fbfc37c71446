"""QEMU argv from the arch data, accelerator choice, the runner's timeout and kill, JUnit, exit codes,
the probe-map dump format. No QEMU needed: the runner is exercised with a stand-in process."""
import base64
import gzip
import os
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from kmod import arch as archmod
from kmod import flavour as flavourmod
from kmod.boot import Outcome, Result, Target, junit, probemap, qemu, verdict
from kmod.errors import InfraError
from tests.conftest import need_tool


@pytest.mark.parametrize("name", archmod.names())
def test_argv_comes_from_the_arch_data(name):
    a = archmod.get(name)
    q = a.qemu
    cmd = qemu.argv(a, Path("/k/vmlinuz"), Path("/i/initramfs.cpio"), ("rdinit=/x",), "tcg")
    assert cmd[0] == q["binary"]
    assert cmd[cmd.index("-machine") + 1] == f"{q['machine']},accel=tcg"
    assert cmd[cmd.index("-cpu") + 1] == q["cpu"]
    assert cmd[cmd.index("-m") + 1] == str(q["memory"])
    assert "-no-reboot" in cmd and cmd[cmd.index("-kernel") + 1] == "/k/vmlinuz"
    append = cmd[cmd.index("-append") + 1].split()
    assert append[0] == f"console={q['console']}" and "panic=-1" in append and append[-1] == "rdinit=/x"
    kvm = qemu.argv(a, Path("/k"), Path("/i"), (), "kvm")
    assert kvm[kvm.index("-cpu") + 1] == q["kvm_cpu"]
    assert f"{q.get('kvm_machine', q['machine'])},accel=kvm" in kvm


@pytest.mark.parametrize("name", flavourmod.names())
def test_a_flavours_kernel_words_come_from_its_data_before_inits_arguments(name):
    """Every boot of a flavour (test, bare boot, probe map) gets its boot_append, before `append`, whose
    "-- ARGS" must stay last (everything after "--" goes to init, not the kernel)."""
    a, f = archmod.get("arm64"), flavourmod.get(name)
    words = qemu.argv(a, Path("/k"), Path("/i"), ("rdinit=/bin/busybox", "--", "poweroff", "-f"), "tcg",
                      flavour=name)
    words = words[words.index("-append") + 1].split()
    assert words[-4:] == ["rdinit=/bin/busybox", "--", "poweroff", "-f"]
    assert words[-4 - len(f.boot_append):-4] == list(f.boot_append)
    assert qemu.argv(a, Path("/k"), Path("/i")) == qemu.argv(a, Path("/k"), Path("/i"), flavour="generic")


def test_rt_boots_with_expedited_grace_periods():
    """Every boot test asks for expedited RCU grace periods (rmmod waits for them: kmod/boot/qemu.py says
    why) and rt keeps them after boot (toolchains/flavours/rt.toml)."""
    assert "rcupdate.rcu_expedited=1" in qemu.BASE_APPEND
    assert flavourmod.get("rt").boot_append == ("rcupdate.rcu_normal_after_boot=0",)
    assert not flavourmod.get("generic").boot_append


def test_accel_override(monkeypatch):
    a = archmod.get("arm64")
    monkeypatch.setenv("KMOD_BOOT_ACCEL", "tcg")
    assert qemu.accel_for(a) == "tcg"
    monkeypatch.setenv("KMOD_BOOT_ACCEL", "bogus")
    with pytest.raises(InfraError):
        qemu.accel_for(a)


def test_kvm_needs_a_same_arch_host(monkeypatch):
    monkeypatch.setattr(qemu, "_host_arch", lambda: archmod.get("x86_64"))
    qemu.kvm_usable.cache_clear()
    assert qemu.kvm_usable(archmod.get("arm64")) is False
    qemu.kvm_usable.cache_clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_runner_kills_on_timeout_and_keeps_the_console(tmp_path):
    stand_in = [sys.executable, "-c", "import time; print('booting', flush=True); "
                "print('KMODBOOT step=init status=ok', flush=True); time.sleep(60)"]
    started = time.monotonic()
    run = qemu.run(stand_in, timeout=2, log=tmp_path / "console.log", marks=("step=init",), header="# hdr\n")
    assert run.timed_out and time.monotonic() - started < 10
    assert run.lines[:2] == ["booting", "KMODBOOT step=init status=ok"]
    assert "step=init" in run.marks
    log = (tmp_path / "console.log").read_text()
    assert log.startswith("# hdr\nbooting\n") and "killed after the timeout" in log
    assert not qemu._live


def test_runner_kills_the_whole_group(tmp_path):
    """A child the VM process started (as QEMU helpers may) goes too."""
    pidfile = tmp_path / "child.pid"
    stand_in = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]
    qemu.run(stand_in, timeout=1)
    time.sleep(0.2)
    assert not _alive(int(pidfile.read_text()))


def test_runner_reports_exit_code():
    run = qemu.run([sys.executable, "-c", "print('x\\r'); raise SystemExit(3)"], timeout=10)
    assert (run.exit_code, run.timed_out, run.lines) == (3, False, ["x"])


def test_missing_binary_is_an_infrastructure_error(monkeypatch):
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    with pytest.raises(InfraError) as e:
        qemu.require_binary(archmod.get("s390x"))
    assert "apt-get install qemu-system-misc" in e.value.line()


def test_each_arch_names_the_debian_package_of_its_qemu():
    """scripts/setup --test installs what scripts/qemu-packages prints: every arch file's [qemu] package."""
    import subprocess
    from tests.conftest import ROOT
    wanted = list(dict.fromkeys(archmod.get(n).qemu["package"] for n in sorted(archmod.names())))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "qemu-packages")], capture_output=True,
                         text=True, check=True).stdout.split()
    assert sorted(out) == sorted(wanted) and len(out) == len(set(out))
    assert all(p.startswith("qemu-system-") for p in out)


def _result(status, step="", reason=""):
    from kmod import pins
    from kmod.spec import Module
    t = Target(Module("m"), pins.get("bookworm-6.1"), archmod.get("arm64"), Path("/x.ko"))
    return Result(t, verdict.Verdict(status, step, reason, ["line 1", "line <2>"], hits=[1]),
                  {"vm": 1.5}, Path("/c.log"), ["qemu"], "tcg")


def test_exit_codes():
    assert Outcome([_result("pass")], {}).exit_code == 0
    assert Outcome([_result("pass"), _result("fail", "insmod")], {}).exit_code == 2
    assert Outcome([_result("fail", "insmod"), _result("error", "boot")], {}).exit_code == 1
    assert Outcome([_result("pass")], {"m/k/a": "no qemu"}).exit_code == 1


def test_junit(tmp_path):
    path = tmp_path / "j.xml"
    junit.write(path, [_result("pass"), _result("fail", "trigger", "WARNING on the console")],
                {"m/bullseye-5.10/x86_64": "environment error: no qemu"}, tmp_path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    fail = suite.findall("testcase")[1].find("failure")
    assert fail.get("message") == "trigger: WARNING on the console" and "line <2>" in fail.text
    assert suite.findall("testcase")[0].get("classname") == "boot.bookworm-6.1.arm64"


def test_probe_map_dumps_round_trip(tmp_path):
    payload = b"ffffffff81000000 T kernel_clone\nffffffff81000100 t do_sys_openat2\n" \
              b"ffffffff82000000 D jiffies\nffffffffc0000000 t mod_fn\t[mod]\n"
    b64 = base64.b64encode(gzip.compress(payload)).decode()
    lines = ["noise", "KMODBOOT-BEGIN kallsyms", "begin-base64 644 kallsyms",
             *[b64[i:i + 76] for i in range(0, len(b64), 76)], "====", "KMODBOOT-END kallsyms", "KMODBOOT-BEGIN blacklist",
             base64.b64encode(gzip.compress(b"0xffffffff81001000-0xffffffff81001100\tdo_int3\n")).decode(),
             "KMODBOOT-END blacklist"]
    dumps = probemap.extract_dumps(lines)
    assert dumps["kallsyms"] == payload
    for name, data in dumps.items():
        (tmp_path / name).write_bytes(data)
    m = probemap.ProbeMap(tmp_path)
    assert m.is_function("kernel_clone") and not m.is_function("jiffies") and not m.has("mod_fn")
    assert m.blacklisted("do_int3") and "blacklist" in m.describe("do_int3")
    assert m.describe("nope") == "not in kallsyms"


def test_damaged_dump_is_an_infrastructure_error():
    with pytest.raises(InfraError, match="damaged"):
        probemap.extract_dumps(["KMODBOOT-BEGIN kallsyms", "!!notbase64", "KMODBOOT-END kallsyms"])


def test_probe_map_blacklist_ranges(tmp_path):
    (tmp_path / "blacklist").write_text("0xffffffff81001000-0xffffffff81001100\tdo_int3\nbad line\n")
    (tmp_path / "kallsyms").write_text("ffffffff81001000 T do_int3\n")
    m = probemap.ProbeMap(tmp_path)
    assert m.blacklist_ranges() == [(0xffffffff81001000, 0xffffffff81001100, "do_int3")]
    assert m.kallsyms_path.read_text().split()[2] == "do_int3"


def test_bzimage_payload_is_found_by_the_boot_protocol_header():
    from kmod.boot import kernel
    setup_sects, payload = 3, b"\xfd7zXZ\x00" + b"p" * 50
    img = bytearray((setup_sects + 1) * 512 + 0x10 + len(payload) + 4)
    img[0x1F1] = setup_sects
    img[0x202:0x206] = b"HdrS"
    img[0x248:0x24C] = (0x10).to_bytes(4, "little")
    img[0x24C:0x250] = len(payload).to_bytes(4, "little")
    start = (setup_sects + 1) * 512 + 0x10
    img[start:start + len(payload)] = payload
    assert kernel.bzimage_payload(bytes(img)) == payload
    assert kernel.bzimage_payload(b"ARM64 Image" * 100) is None


def test_no_vm_starts_after_an_interrupt():
    qemu.kill_all(stop=True)
    try:
        with pytest.raises(InfraError, match="interrupted"):
            qemu.run([sys.executable, "-c", "pass"], timeout=5)
    finally:
        qemu.allow()
    assert qemu.run([sys.executable, "-c", "pass"], timeout=5).exit_code == 0


def test_vm_dies_with_its_parent(tmp_path):
    """Even a SIGKILLed boot-test leaves no VM: the stand-in dies with the process that started it."""
    import subprocess
    need_tool("setpriv")
    pidfile = tmp_path / "vm.pid"
    script = (f"import sys; sys.path.insert(0, {str(Path(qemu.__file__).parents[2])!r}); from kmod.boot import qemu; "
              f"qemu.run(['sh', '-c', 'echo $$ > {pidfile}; exec sleep 60'], timeout=60)")
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    vm = int(pidfile.read_text())
    assert _alive(vm)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(vm) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(vm)


def test_a_kvm_that_fails_the_guest_falls_back_to_tcg(tmp_path, monkeypatch, capsys):
    """Nested KVM can create vCPUs and still fail the guest ("KVM internal error ... emulation
    failure"): the VM is stopped at once, not at the timeout, and booted again under TCG; later VMs of
    that arch go straight to TCG."""
    a = archmod.get("x86_64")
    monkeypatch.delenv("KMOD_BOOT_ACCEL", raising=False)
    monkeypatch.setattr(qemu, "kvm_usable", lambda arch: True)
    monkeypatch.setattr(qemu, "_kvm_broken", set())
    # a stand-in QEMU: under KVM it prints QEMU's message and hangs, under TCG it boots
    script = tmp_path / "fake-qemu"
    script.write_text("#!/bin/sh\ncase \"$*\" in *accel=kvm*) echo 'KVM internal error. Suberror: 1'; "
                      "sleep 60;; *) echo 'KMODBOOT step=init status=ok';; esac\n")
    script.chmod(0o755)
    monkeypatch.setattr(qemu, "argv", lambda arch, k, i, ap, accel, flavour="generic": [str(script), f"accel={accel}"])
    started = time.monotonic()
    run, accel = qemu.boot(a, Path("/k"), Path("/i"), (), timeout=30, log=tmp_path / "console.log")
    assert time.monotonic() - started < 10
    assert accel == "tcg" and run.exit_code == 0 and run.lines == ["KMODBOOT step=init status=ok"]
    assert "KVM cannot run x86_64 guests" in capsys.readouterr().err
    assert qemu.accel_for(a) == "tcg"
    assert (tmp_path / "console.log").read_text().startswith(f"# reproduce: {script} accel=tcg")
