"""Boot tests against real QEMU and the real pinned kernels (issue 5's proof).

Builds a small project in a temporary folder (Docker toolchain images), then boots it:
  - the default module passes on every pin's generic kernel of every arch, through
    `invoke build --boot-test` (ppc64el, s390x and riscv64 under TCG too), on arm64's cloud and rt kernels
    and x86_64's rt kernel;
  - a new arch's probe map (riscv64) agrees with the arch data on where a probe goes;
  - a probe on a missing symbol fails at insmod; a WARN_ON in a handler fails at the trigger;
  - a kernel that panics before /init and one that hangs are reported within the timeout;
  - no QEMU is left behind (signals: tests/integration/test_faults.py).
Missing QEMU or Docker skips locally and FAILS with CI=true."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import need

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FAST = ("bookworm-6.1", "arm64")   # the quickest cell to boot under TCG: used for the failure cases

SPEC = """
default = ["clone_probe"]

[[module]]
name = "clone_probe"
template = "kprobe"
symbols = ["kernel_clone"]
record_args = 1

[[module]]
name = "nosym_probe"
template = "kprobe"
symbols = ["kmod_no_such_symbol_anywhere"]
arches = ["arm64"]

# Hand-written: its pre-handler WARNs. iterate_supers runs on sync(2) only, and is called from another
# file than the syscall, so it cannot have been inlined away.
[[module]]
name = "warn_probe"
source = "warn_probe"
symbols = ["iterate_supers"]
trigger = "sync"
arches = ["arm64"]

[[module]]
name = "hang_probe"
template = "kprobe"
symbols = ["kernel_clone"]
trigger = "sleep 600"
arches = ["arm64"]
"""

WARN_C = r"""
// SPDX-License-Identifier: GPL-2.0
/* A misbehaving probe for the boot test: its pre-handler hits WARN_ON_ONCE. */
#include <linux/atomic.h>
#include <linux/bug.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static atomic_long_t warn_hits;

static int warn_pre(struct kprobe *p, struct pt_regs *regs)
{
	atomic_long_inc(&warn_hits);
	WARN_ON_ONCE(1);
	return 0;
}

static struct kprobe warn_kp = { .symbol_name = "iterate_supers", .pre_handler = warn_pre };

static int warn_hits_get(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%ld\n", atomic_long_read(&warn_hits));
}

static const struct kernel_param_ops warn_hits_ops = { .get = warn_hits_get };
module_param_cb(hits, &warn_hits_ops, NULL, 0444);

static int __init warn_init(void)
{
	return register_kprobe(&warn_kp);
}

static void __exit warn_exit(void)
{
	unregister_kprobe(&warn_kp);
}

module_init(warn_init);
module_exit(warn_exit);
MODULE_LICENSE("GPL");
"""


def qemus_under(path: Path) -> list[int]:
    """QEMU processes whose command line mentions `path` (ours, not anybody else's)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"qemu-system" in cmd[0] and any(str(path).encode() in part for part in cmd):
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from kmod import arch as archmod
    for a in archmod.all_arches().values():
        need(shutil.which(a.qemu["binary"]) is not None, a.qemu["binary"])
    from kmod.errors import InfraError
    try:
        from kmod.build.runtime.docker import client
        client().ping()
        docker_ok = True
    except (InfraError, Exception):
        docker_ok = False
    need(docker_ok, "a Docker engine")
    root = tmp_path_factory.mktemp("bootproj")
    (root / "kmod.toml").write_text(SPEC)
    (root / "warn_probe").mkdir()
    (root / "warn_probe" / "warn_probe.c").write_text(WARN_C)
    (root / "warn_probe" / "Kbuild").write_text("obj-m += warn_probe.o\n")
    from kmod import build as buildmod
    from kmod import pins as pinsmod
    from kmod import spec as specmod
    proj = specmod.load(root / "kmod.toml")
    cells = buildmod.plan(proj, proj.select("nosym_probe,warn_probe,hang_probe"), [pinsmod.get(FAST[0])],
                          [archmod.get(FAST[1])])
    outcome = buildmod.run(proj, cells, jobs=2, command="test_boot", quiet=True)
    assert outcome.exit_code == 0, [c.record for c in outcome.failed]
    yield proj
    assert qemus_under(root) == []


def targets(proj, module: str):
    from kmod import arch as archmod
    from kmod import boot
    from kmod import pins as pinsmod
    from kmod.manifest import Manifest
    return boot.targets_from_manifest(proj, Manifest(proj.dist / "manifest.json"), [archmod.get(FAST[1])],
                                      [pinsmod.get(FAST[0])], proj.select(module))


def test_default_module_passes_on_every_pin_and_arch(project):
    """`invoke build --boot-test` (the CLI chain) over every pin and arch: exit 0, results recorded."""
    import json

    from kmod import pins as pinsmod
    generic = {f"clone_probe/{p.name}/{a.name}" for p in pinsmod.all_pins().values() for a, f in p.planned()
               if f.is_generic and p.has(a)}
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "build", "--spec", str(project.path), "--arch", "all",
                          "--kernel", "all", "--no-lint", "--boot-test"], cwd=REPO, capture_output=True,
                         text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    cells = json.loads((project.dist / "manifest.json").read_text())["cells"]
    booted = {k: v["boot"] for k, v in cells.items() if k.startswith("clone_probe/") and "boot" in v}
    assert set(booted) == generic, sorted(booted)
    check_passed(project, booted)
    junit = (project.dist / "boot-junit.xml").read_text()
    assert f'tests="{len(generic)}"' in junit and 'failures="0"' in junit and 'errors="0"' in junit
    # The stages' hooks: the page and `status` show what the manifest says, after the build and the boot.
    page = (project.dist / "report.html").read_text()
    status = subprocess.run([sys.executable, "-m", "invoke", "status", "--spec", str(project.path), "--format",
                             "json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    rows = {c["id"]: c for c in json.loads(status.stdout)["cells"]}
    for cid in booted:
        assert f'data-cell="{cid}" data-build="ok" data-lint="-" data-package="-" data-boot="ok"' in page
        assert (rows[cid]["build"], rows[cid]["boot"]) == ("ok", "ok") and rows[cid]["log"] == booted[cid]["console"]
    print(f"{len(generic)} cells built and boot-tested in {time.monotonic() - started:.1f}s")


def check_passed(project, booted: dict) -> None:
    for cid, b in booted.items():
        assert b["verdict"] == "pass", (cid, b["reason"], b["excerpt"])
        assert b["hits"] and all(h > 0 for h in b["hits"])
        assert b["steps"]["rmmod"] == "ok" and set(b["taint_flags"]) <= set("OE")
        assert b["seconds"]["boot"] > 0 and b["seconds"]["test"] > 0
        assert (project.dist / b["console"]).is_file()


# The flavour cells CI boots: both flavours on the quickest arch, and rt on x86_64 too (its PREEMPT_RT
# kernel, its own command line from toolchains/flavours/rt.toml, and the slowest cell of the flavours).
FLAVOUR_CELLS = ((FAST[1], "cloud,rt"), ("x86_64", "rt"))


def test_cloud_and_rt_kernels_boot_their_own_build(project):
    """The flavours are cells like the others: built for their own vermagic, booted in their own kernel."""
    import json
    for arch, flavours in FLAVOUR_CELLS:
        res = subprocess.run([sys.executable, "-m", "invoke", "build", "--spec", str(project.path), "--arch", arch,
                              "--kernel", FAST[0], "--flavour", flavours, "--no-lint", "--boot-test"], cwd=REPO,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
    cells = json.loads((project.dist / "manifest.json").read_text())["cells"]
    booted = {k: v["boot"] for k, v in cells.items() if "boot" in v and v.get("flavour") in ("cloud", "rt")}
    assert set(booted) == {f"clone_probe/{FAST[0]}-{f}/{arch}" for arch, fl in FLAVOUR_CELLS
                           for f in fl.split(",")}, sorted(booted)
    check_passed(project, booted)
    for cid in booted:   # the rt kernel command line reached the VM (the reproduce line heads the console)
        head = (project.dist / booted[cid]["console"]).read_text().splitlines()[0]
        assert ("rcupdate.rcu_normal_after_boot=0" in head) == ("-rt/" in cid), (cid, head)


def test_broken_modules_fail_at_the_right_step(project):
    """Missing symbol -> insmod; WARN_ON in the handler -> trigger; a hang after /init -> trigger, timed out."""
    from kmod import boot
    from kmod.manifest import Manifest
    tgts = targets(project, "nosym_probe,warn_probe,hang_probe")
    assert len(tgts) == 3
    timeout = 25  # the hang runs into it; the other two finish in seconds
    started = time.monotonic()
    outcome = boot.boot_all(tgts, project.dist, timeout=timeout, jobs=3, quiet=True,
                            manifest=Manifest(project.dist / "manifest.json"))
    wall = time.monotonic() - started
    assert outcome.exit_code == 2 and not outcome.errors
    nosym = outcome.by_id(f"nosym_probe/{FAST[0]}/{FAST[1]}").verdict
    assert (nosym.status, nosym.step) == ("fail", "insmod"), nosym
    assert any("no such symbol" in ln for ln in nosym.excerpt), nosym.excerpt
    warn = outcome.by_id(f"warn_probe/{FAST[0]}/{FAST[1]}").verdict
    assert (warn.status, warn.step) == ("fail", "trigger"), warn
    assert "WARNING" in warn.reason and any("warn_pre" in ln for ln in warn.excerpt), warn.excerpt
    hang = outcome.by_id(f"hang_probe/{FAST[0]}/{FAST[1]}").verdict
    assert (hang.status, hang.step) == ("fail", "trigger"), hang
    assert "timeout" in hang.reason
    assert wall < timeout + 20
    assert qemus_under(project.root) == []


@pytest.mark.parametrize("append, expect, timeout", [
    (("rdinit=/nonexistent", "init=/nonexistent"), "panicked before /init", 60),
    # panic=0 after panic=-1: the panic waits forever, so the VM hangs and the timeout must end it
    (("rdinit=/nonexistent", "init=/nonexistent", "panic=0"), "timeout of 15s", 15),
], ids=["panic", "hang"])
def test_boot_that_never_reaches_init_is_an_infrastructure_error(project, append, expect, timeout):
    from kmod import boot
    tgts = targets(project, "clone_probe")
    started = time.monotonic()
    outcome = boot.boot_all(tgts, project.dist, timeout=timeout, append=append, quiet=True)
    wall = time.monotonic() - started
    v = outcome.results[0].verdict
    assert (v.status, v.step) == ("error", "boot"), v
    assert expect in v.reason, v.reason
    assert outcome.exit_code == 1
    assert wall < timeout + 15
    assert qemus_under(project.root) == []


def test_probe_map_of_a_pinned_kernel():
    """A pinned kernel booted with no module dumps its kallsyms and kprobe blacklist (bullseye's busybox
    has no base64 applet: the dump must not need it)."""
    from kmod import arch as archmod
    from kmod import pins as pinsmod
    from kmod.boot import probemap
    a = archmod.get("arm64")
    need(shutil.which(a.qemu["binary"]) is not None, a.qemu["binary"])
    m = probemap.make(pinsmod.get("bullseye-5.10"), a, timeout=120)
    assert m.is_function("kernel_clone") and not m.has("kmod_no_such_symbol_anywhere")
    assert len(m.functions) > 10000 and m.blacklist and m.blacklist_ranges()
    assert probemap.load(pinsmod.get("bullseye-5.10"), a).dir == m.dir


def test_probe_map_of_a_new_arch():
    """riscv64 (trixie 6.12), from the cache when a lint made it already: kernel_clone is a function outside
    the blacklist, and the probe kmod places on it (past the ftrace site the arch data says this kernel's
    config refuses a probe on) lies inside the function."""
    from kmod import arch as archmod
    from kmod import pins as pinsmod
    from kmod.boot import kernel, probemap
    from kmod.lint.target import _config
    a, pin = archmod.get("riscv64"), pinsmod.get("trixie-6.12")
    need(shutil.which(a.qemu["binary"]) is not None, a.qemu["binary"])
    m, = probemap.ensure([(pin, a)], timeout=180, quiet=True)
    assert m.is_function("kernel_clone") and not m.blacklisted("kernel_clone")
    assert len(m.functions) > 10000 and m.blacklist
    skip = a.ftrace_entry_offset(_config(kernel.kernel(pin, a).config.read_text()))
    assert skip == 8     # riscv64 6.12: CONFIG_DYNAMIC_FTRACE without KPROBES_ON_FTRACE
    rows = (ln.split() for ln in m.kallsyms_path.read_text().splitlines())
    text = sorted((int(r[0], 16), r[2]) for r in rows if len(r) == 3 and r[1] in "tT")   # built-in code
    at = next(i for i, (_, name) in enumerate(text) if name == "kernel_clone")
    assert text[at][0] + skip < text[at + 1][0]
