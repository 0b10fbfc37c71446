"""The verdict from console logs: real ones recorded from the pinned kernels (fixtures/) and small
synthetic ones for the cases a healthy machine does not produce on demand."""
import pytest

from kmod.boot import verdict

CLONE = [("kernel_clone", 0)]


def synth(*body: str, done=True, taint_before=0, taint_after=12288) -> list[str]:
    """A console as /init would print it, with `body` between mount and taint."""
    lines = ["[    0.1] Linux version 6.1.0-56-amd64", "[    2.0] KMODBOOT step=init status=ok release=x",
             f"[    2.1] KMODBOOT step=mount status=ok taint={taint_before}", *body]
    if done:
        lines += [f"[    3.0] KMODBOOT step=taint status=ok value={taint_after}", "[    3.1] KMODBOOT step=done status=ok",
                  "[    3.2] reboot: Power down"]
    return lines


HEALTHY = ["KMODBOOT step=insmod status=ok",
           "KMODBOOT step=kprobes status=entry entry=ffffffff892a0a60 k kernel_clone+0x0 [FTRACE]",
           "KMODBOOT step=kprobes status=ok", "KMODBOOT step=trigger status=start",
           "KMODBOOT step=trigger status=ok rc=0", "KMODBOOT step=hits status=ok value=2",
           "KMODBOOT step=rmmod status=ok"]


@pytest.mark.parametrize("name", ["pass-bookworm-6.1-x86_64.log", "pass-trixie-6.12-arm64.log",
                                  "pass-bullseye-5.10-x86_64.log", "pass-bookworm-6.1-arm64.log"])
def test_real_passing_boots_pass(console, name):
    v = verdict.judge(console(name), CLONE, "clone_probe")
    assert v.status == verdict.PASS, (v.step, v.reason, v.excerpt)
    assert v.hits and all(h > 0 for h in v.hits)
    assert verdict.taint_flags(v.taint) == "OE"
    assert v.steps["rmmod"] == "ok" and v.steps["done"] == "ok"


def test_missing_symbol_fails_at_insmod(console):
    v = verdict.judge(console("nosym_probe-bookworm-6.1-arm64.log"), [("kmod_no_such_symbol_anywhere", 0)],
                      "nosym_probe")
    assert (v.status, v.step) == (verdict.FAIL, "insmod")
    assert "insmod failed" in v.reason
    assert any("no such symbol" in ln for ln in v.excerpt)


def test_warn_in_the_handler_fails_at_the_trigger(console):
    v = verdict.judge(console("warn_probe-bookworm-6.1-arm64.log"), [("iterate_supers", 0)], "warn_probe",
                      needs_hits=False)
    assert (v.status, v.step) == (verdict.FAIL, "trigger")
    assert v.reason.startswith("WARNING on the console: ") and "warn_pre" in v.reason
    assert any("Call trace" in ln for ln in v.excerpt)
    # the W taint is found too, later: the first finding is the one reported
    assert [f.step for f in v.findings] == ["trigger", "taint"]


def test_hang_after_init_fails_at_the_running_step(console):
    v = verdict.judge(console("hang_probe-bookworm-6.1-arm64.log"), CLONE, "hang_probe", timed_out=True,
                      timeout=40, exit_code=None)
    assert (v.status, v.step) == (verdict.FAIL, "trigger")
    assert "timeout of 40s" in v.reason


def test_panic_before_init_is_an_infrastructure_error():
    lines = ["[    1.0] Linux version 6.1.0", "[    1.9] Kernel panic - not syncing: No working init found.",
             "[    1.9] ---[ end Kernel panic ]---"]
    v = verdict.judge(lines, CLONE, "m", exit_code=0)
    assert (v.status, v.step) == (verdict.ERROR, "boot")
    assert "panicked before /init" in v.reason and "No working init found" in v.reason


def test_timeout_before_init_is_an_infrastructure_error():
    v = verdict.judge(["SeaBIOS"], CLONE, "m", timed_out=True, timeout=20, exit_code=None)
    assert (v.status, v.step) == (verdict.ERROR, "boot") and "within the timeout of 20s" in v.reason
    v = verdict.judge([], CLONE, "m", exit_code=1)
    assert v.status == verdict.ERROR and "qemu exit code 1" in v.reason


def test_synthetic_healthy_passes():
    assert verdict.judge(synth(*HEALTHY), CLONE, "m").status == verdict.PASS


def test_zero_hits_fail_at_hits():
    body = [ln.replace("value=2", "value=0") for ln in HEALTHY]
    v = verdict.judge(synth(*body), CLONE, "m")
    assert (v.status, v.step) == (verdict.FAIL, "hits") and "kernel_clone=0" in v.reason


def test_one_of_two_counters_at_zero_fails():
    body = [ln.replace("value=2", "value=5,0") for ln in HEALTHY]
    body.insert(2, "KMODBOOT step=kprobes status=entry entry=ffffffff81000000 k vfs_read+0x4 [FTRACE]")
    v = verdict.judge(synth(*body), CLONE + [("vfs_read", 0)], "m")
    assert (v.step, v.hits) == ("hits", [5, 0])


def test_probe_missing_from_the_kprobes_list_fails():
    body = [ln for ln in HEALTHY if "entry=" not in ln]
    v = verdict.judge(synth(*body), CLONE, "m")
    assert (v.status, v.step) == (verdict.FAIL, "kprobes") and "kernel_clone+0x0" in v.reason


def test_disabled_probe_fails():
    body = [ln.replace("[FTRACE]", "[DISABLED][FTRACE]") for ln in HEALTHY]
    v = verdict.judge(synth(*body), CLONE, "m")
    assert v.step == "kprobes" and "DISABLED" in v.reason


def test_entry_probe_moved_past_endbr_still_matches():
    missing, bad = verdict.match_probes([("kernel_clone", 0), ("vfs_read", 0x10)],
                                        ["ffffffff81000004 k kernel_clone+0x4 [FTRACE]",
                                         "ffffffff81000010 k vfs_read+0x10"])
    assert (missing, bad) == ([], [])
    missing, _ = verdict.match_probes([("vfs_read", 0x10)], ["ffffffff81000004 k vfs_read+0x4"])
    assert missing == ["vfs_read+0x10"]


def test_rmmod_failure_fails_at_rmmod():
    body = [ln.replace("step=rmmod status=ok", "step=rmmod status=fail rc=1") for ln in HEALTHY]
    v = verdict.judge(synth(*body), CLONE, "m")
    assert (v.status, v.step) == (verdict.FAIL, "rmmod") and "exit 1" in v.reason


@pytest.mark.parametrize("line, label", [
    ("BUG: unable to handle page fault for address: 0000000000000008", "BUG"),
    ("Internal error: Oops: 96000004 [#1] SMP", "Oops"),
    ("general protection fault, probably for non-canonical address", "general protection"),
    ("BUG: scheduling while atomic: sh/77/0x00000002", "BUG"),
    ("BUG: sleeping function called from invalid context at mm/slab.h:123", "BUG"),
    ("rcu: INFO: rcu_preempt self-detected stall on CPU", "RCU stall"),
    ("Kernel panic - not syncing: Fatal exception", "kernel panic"),
])
def test_sick_kernel_lines_fail_in_the_step_they_appear(line, label):
    body = list(HEALTHY)
    body.insert(4, f"[    2.5] {line}")  # after "trigger start"
    v = verdict.judge(synth(*body), CLONE, "m")
    assert (v.status, v.step) == (verdict.FAIL, "trigger"), v.reason
    assert v.reason.startswith(label) and line in v.reason


def test_warning_during_insmod_is_attributed_to_insmod():
    body = ["[ 2.2] WARNING: CPU: 0 PID: 1 at kernel/kprobes.c:1 register_kprobe"] + HEALTHY
    assert verdict.judge(synth(*body), CLONE, "m").step == "insmod"


def test_messages_before_init_are_not_the_modules_business():
    lines = ["[ 0.5] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/cpu/bugs.c:1 boot quirk"] + synth(*HEALTHY)
    assert verdict.judge(lines, CLONE, "m").status == verdict.PASS


def test_new_taint_beyond_o_and_e_fails():
    v = verdict.judge(synth(*HEALTHY, taint_after=12288 | 512), CLONE, "m")  # W
    assert (v.status, v.step) == (verdict.FAIL, "taint") and "tainted W" in v.reason
    # taint the kernel already had at /init is not the module's
    assert verdict.judge(synth(*HEALTHY, taint_before=1, taint_after=12289), CLONE, "m").status == verdict.PASS


def test_panic_mid_test_names_the_step():
    body = HEALTHY[:4] + ["[ 2.6] Kernel panic - not syncing: Oops: Fatal exception"]
    v = verdict.judge(synth(*body, done=False), CLONE, "m", exit_code=0)
    assert (v.status, v.step) == (verdict.FAIL, "trigger") and "panic" in v.reason


def test_vm_stopping_mid_test_is_a_failure():
    v = verdict.judge(synth(*HEALTHY[:1], done=False), CLONE, "m", exit_code=0)
    assert (v.status, v.step) == (verdict.FAIL, "kprobes") and "stopped during kprobes" in v.reason


def test_missing_hits_parameter():
    body = [ln.replace("step=hits status=ok value=2", "step=hits status=missing") for ln in HEALTHY]
    assert verdict.judge(synth(*body), CLONE, "m").step == "hits"


def hand_written(*count_lines, registered=True, console=()):
    body = ["KMODBOOT step=insmod status=ok"]
    if registered:
        body.append("KMODBOOT step=kprobes status=entry entry=ffffffff892a0a60  k  kernel_clone+0x0    [FTRACE]")
    body += ["KMODBOOT step=kprobes status=ok", *count_lines, "KMODBOOT step=trigger status=start", *console,
             "KMODBOOT step=trigger status=ok rc=0"]
    return synth(*body, "KMODBOOT step=rmmod status=ok")


ARMED = "KMODBOOT step=count status=armed event=kmodhit0 probe=kernel_clone+0x0"


def test_hand_written_module_proven_by_kmods_own_count():
    v = verdict.judge(hand_written(ARMED, "KMODBOOT step=count status=ok event=kmodhit0 hits=7"), CLONE, "m",
                      needs_hits=False)
    assert v.status == verdict.PASS, v.reason
    assert v.hits == [7] and "counted kernel_clone+0x0=7" in v.proof


def test_hand_written_module_whose_probe_never_fired_fails():
    v = verdict.judge(hand_written(ARMED, "KMODBOOT step=count status=ok event=kmodhit0 hits=0"), [], "m",
                      needs_hits=False)
    assert (v.status, v.step) == (verdict.FAIL, "hits") and "kernel_clone+0x0=0" in v.reason


def test_without_proof_the_verdict_is_unproven_and_says_what_would_prove_it():
    v = verdict.judge(hand_written("KMODBOOT step=count status=fail event=kmodhit0 probe=kernel_clone+0x0"), [],
                      "m", needs_hits=False)
    assert (v.status, v.step) == (verdict.UNPROVEN, "hits")
    assert "nothing proved that kernel_clone+0x0 fired" in v.reason and "expect =" in v.reason
    # the spec's console pattern is proof too
    v = verdict.judge(hand_written("KMODBOOT step=count status=fail event=kmodhit0 probe=kernel_clone+0x0",
                                   console=["[ 2.5] <kernel_clone> pre_handler: p->addr = 0xffff"]), [], "m",
                      needs_hits=False, expect=r"<kernel_clone> pre_handler")
    assert v.status == verdict.PASS and "the console showed" in v.proof


def test_module_without_kprobes_is_judged_on_load_unload_and_health():
    v = verdict.judge(hand_written(registered=False), [], "m", needs_hits=False)
    assert v.status == verdict.PASS
    assert v.proof.startswith("none needed: the module registers no kprobes; judged on load, unload")


def test_mount_failure_is_an_infrastructure_error():
    lines = ["KMODBOOT step=init status=ok", "mount: mounting debugfs failed", "KMODBOOT step=mount status=fail",
             "KMODBOOT step=taint status=ok value=0", "KMODBOOT step=done status=ok"]
    v = verdict.judge(lines, CLONE, "m")
    assert (v.status, v.step) == (verdict.ERROR, "mount")


def test_record_is_json_ready():
    import json
    rec = verdict.judge(synth(*HEALTHY), CLONE, "m").record()
    assert json.loads(json.dumps(rec))["verdict"] == "pass" and rec["taint_flags"] == "OE"


def test_real_panic_then_hang_before_init(console):
    v = verdict.judge(console("panic-hang-bookworm-6.1-arm64.log"), CLONE, "clone_probe", timed_out=True,
                      timeout=20, exit_code=None)
    assert (v.status, v.step) == (verdict.ERROR, "boot")
    assert "VFS: Unable to mount root fs" in v.reason and "hung until the timeout of 20s" in v.reason


def test_a_module_that_uses_kprobes_but_registered_none_is_unproven():
    """The manifest says it calls register_kprobe (kos[].kprobes), yet no probe of it was listed during
    the test (a probe armed through a parameter, a device it waits for): nothing proved anything fired,
    so not 'none needed', and the verdict says what would prove it."""
    v = verdict.judge(hand_written(registered=False), [], "m", needs_hits=False, uses_kprobes=True)
    assert (v.status, v.step) == (verdict.UNPROVEN, "hits")
    assert "uses kprobes" in v.reason and "registered none" in v.reason
    assert "trigger" in v.reason and "expect =" in v.reason
    # its console line is proof
    v = verdict.judge(hand_written(registered=False, console=["[ 2.5] demo: probe hit"]), [], "m",
                      needs_hits=False, uses_kprobes=True, expect="probe hit")
    assert v.status == verdict.PASS and "the console showed" in v.proof


def test_targets_carry_whether_the_build_saw_kprobes(tmp_path):
    from kmod.boot import _uses_kprobes
    assert _uses_kprobes({"kos": [{"ko": "a.ko", "kprobes": False}, {"ko": "b.ko", "kprobes": True}]})
    assert not _uses_kprobes({"kos": [{"ko": "a.ko", "kprobes": False}]}) and not _uses_kprobes({"ko": "a.ko"})
