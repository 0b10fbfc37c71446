"""Boot-test speed against its physical floor (issue 5, "Speed").

  1. Per cell: the wall of a whole boot test (initramfs, QEMU, /init steps, verdict) against a bare QEMU
     boot of the same kernel and the same initramfs straight to `poweroff -f`
     (rdinit=/bin/busybox -- poweroff -f). Goal: <= 1.3x.
  2. The six cells at once on all cores against the sum of their sequential walls. Goal: <= 0.65x.

Both are measured in one run, alternating, median of --reps. Results are printed and written into
docs/benchmarks.md, section "Boot" (only that section is touched).

    python bench/bench_boot.py [--reps 3] [--module clone_probe] [--no-write]
    python bench/bench_boot.py --arch ppc64el,s390x,riscv64 --section "Boot: ppc64el, s390x, riscv64"
    python bench/bench_boot.py --arch x86_64,arm64 --flavour cloud,rt --section "Boot: cloud and rt"
    python bench/bench_boot.py --arch x86_64,arm64 --flavour cloud,rt --section "Boot: cloud and rt" --guest-time

--guest-time measures the guest's side alone, free of the machine's load: see guest_time().
"""
import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kmod import arch as archmod  # noqa: E402
from kmod import boot  # noqa: E402
from kmod import flavour as flavourmod  # noqa: E402
from kmod import build as buildmod  # noqa: E402
from kmod import pins as pinsmod  # noqa: E402
from kmod import spec as specmod  # noqa: E402
from kmod.boot import initramfs, kernel, qemu  # noqa: E402
from kmod.manifest import Manifest  # noqa: E402

BARE_APPEND = ("rdinit=/bin/busybox", "--", "poweroff", "-f")
# --guest-time: QEMU counts instructions instead of following the host's clock (-icount: 2^shift ns each;
# shift=2 is about TCG's pace on this kind of machine) and, while the guest idles, jumps its clock to the
# next timer (sleep=off). The guest's own printk clock then measures what it executes plus what it waits
# for, the same whatever else the machine runs. What it cannot see: QEMU's own cost of translating code
# the guest runs for the first time, and contention.
ICOUNT = "shift=2,sleep=off"


def child_cpu() -> float:
    """CPU seconds of the VMs run so far (waited-for children): contention by other work on the machine
    stretches walls, hardly CPU time."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
PER_CELL_GOAL, PARALLEL_GOAL = 1.3, 0.65


def built_targets(project, module: str, arches: str = "all", flavours: str = "generic") -> list[boot.Target]:
    mods = project.select(module)
    fl = tuple(f.name for f in flavourmod.select(flavours))
    cells = buildmod.plan(project, mods, pinsmod.select("all"), archmod.select(arches), flavours=fl)
    outcome = buildmod.run(project, cells, quiet=True, command="bench_boot")
    if outcome.exit_code:
        raise SystemExit(f"build failed: {[c.id for c in outcome.failed]}")
    return boot.targets_from_manifest(project, Manifest(project.dist / "manifest.json"), archmod.select(arches),
                                      pinsmod.select("all"), mods, fl)


def bare_boot(t: boot.Target, initrd: Path, timeout: float) -> tuple[float, float, list[str]]:
    k = kernel.kernel(t.pin, t.arch, t.flavour)
    started, cpu = time.monotonic(), child_cpu()
    # the flavour's kernel command line too (qemu.argv), as in the boot test: the same kernel, booted alike
    run, _accel = qemu.boot(t.arch, k.image, initrd, BARE_APPEND, timeout, flavour=k.flavour)
    wall = time.monotonic() - started
    cpu = child_cpu() - cpu
    # Where the console loses the last lines at power-off (the arch file says so: s390x's SCLP), a clean
    # exit without a panic line is the proof (a kernel that crashed early would only make the bare boot
    # shorter, the ratio worse: never flattering).
    powered = any("Power down" in ln or "reboot: Power" in ln for ln in run.lines)
    panicked = any("Kernel panic" in ln for ln in run.lines)
    if run.exit_code != 0 or run.timed_out or panicked or not (powered or not t.arch.qemu.get("console_flushes_at_power_off", True)):
        raise SystemExit(f"bare boot of {t.id} did not power off: {run.lines[-5:]}")
    return wall, cpu, run.lines


def guest_clock(lines: list[str], marker: str) -> float | None:
    """printk's [ seconds ] on the first console line containing `marker`."""
    for ln in lines:
        if marker in ln and ln.lstrip().startswith("["):
            try:
                return float(ln.lstrip()[1:].split("]", 1)[0])
            except ValueError:
                return None
    return None


def guest_time(targets: list, work: Path, timeout: float, title: str, command: str) -> str:
    """Each cell's boot test and bare boot once under -icount (ICOUNT), judged by the guest's clock at
    power-off: a ratio the machine's load does not move. Returns the docs section."""
    os.environ["KMOD_BOOT_ACCEL"] = "tcg"          # -icount is TCG's
    plain = qemu.argv
    qemu.argv = lambda *a, **kw: plain(*a, **kw) + ["-icount", ICOUNT]   # this process's VMs only
    rows = []
    try:
        for t in targets:
            out = work / "guest" / t.id.replace("/", "_")
            r = boot.boot_one(t, out, timeout)
            if r.verdict.status != "pass":
                raise SystemExit(f"{t.id} under -icount: {r.verdict.status} at {r.verdict.step}: {r.verdict.reason}")
            lines = r.console.read_text(errors="replace").splitlines()
            _wall, _cpu, bare_lines = bare_boot(t, out / "initramfs.cpio", timeout)
            test, init = guest_clock(lines, "Power down"), guest_clock(lines, f"{initramfs.MARKER} step=init")
            bare = guest_clock(bare_lines, "Power down")
            if None in (test, init, bare):
                print(f"{t.id}: no guest clock at power-off (console), left out", file=sys.stderr)
                continue
            rows.append((t.id, test, bare, test / bare, test - init))
            print(f"{t.id}: guest {test:.3f}s against {bare:.3f}s bare", file=sys.stderr, flush=True)
    finally:
        qemu.argv = plain
    worst = max((r[3] for r in rows), default=0.0)
    return "\n".join([
        f"## {title}",
        "",
        f"`{command}` on {platform.node() or 'this machine'}: {os.cpu_count()} cores, {platform.machine()}, "
        f"QEMU `-icount {ICOUNT}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One run: the guest's "
        "clock does not depend on the machine's load.",
        "",
        "The guest's own clock at power-off (printk), with QEMU counting instructions (4 ns each) and skipping",
        "idle time to the guest's next timer: what the guest executes and waits for in the boot test against the",
        "bare boot. Host-side costs (QEMU translating code run for the first time, the initramfs, the verdict)",
        "and contention are not in it: the wall-clock table above has them.",
        "",
        "| cell | boot test (guest s) | bare boot (guest s) | ratio | /init to power-off (guest s) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[f"| {cid} | {test:.3f} | {bare:.3f} | {ratio:.3f} | {steps:.3f} |" for cid, test, bare, ratio, steps in rows],
        "",
        f"Worst ratio: **{worst:.3f}x**.",
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--module", default="clone_probe")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--arch", default="all", help="the arches to boot (comma list; default all)")
    ap.add_argument("--flavour", default="generic", help="the flavours to boot (comma list; default generic)")
    ap.add_argument("--section", default="Boot", help="the docs/benchmarks.md section to write")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--guest-time", action="store_true",
                    help=f"only the guest's side, once per cell, under QEMU -icount {ICOUNT} (section TITLE: guest time)")
    args = ap.parse_args()
    project = specmod.load(REPO / "kmod.toml")
    targets = built_targets(project, args.module, args.arch, args.flavour)
    jobs = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench_boot."))
    if args.guest_time:
        title = f"{args.section}: guest time"
        command = "python bench/bench_boot.py" + (f" --arch {args.arch}" if args.arch != "all" else "") + \
            (f" --flavour {args.flavour}" if args.flavour != "generic" else "") + \
            (f' --section "{args.section}"' if args.section != "Boot" else "") + " --guest-time"
        text = guest_time(targets, work, args.timeout, title, command)
        print(text)
        if not args.no_write:
            write_section(REPO / "docs" / "benchmarks.md", text, title)
        shutil.rmtree(work, ignore_errors=True)   # kept when a run fails: its consoles say why
        return 0
    tested: dict[str, list[float]] = {t.id: [] for t in targets}
    bare: dict[str, list[float]] = {t.id: [] for t in targets}
    parallel: list[float] = []
    cpu_tested: dict[str, list[float]] = {t.id: [] for t in targets}
    cpu_bare: dict[str, list[float]] = {t.id: [] for t in targets}
    cpu_parallel: list[float] = []
    # Fetched and unpacked before the clock starts: a cold cache made the first repetition's boot tests
    # (not their bare boots, which come second) minutes long, and with 3 reps a median then takes the worse
    # of the two others.
    for t in targets:
        kernel.kernel(t.pin, t.arch, t.flavour)
        kernel.busybox(t.pin, t.arch)
    load_before = os.getloadavg()[0]
    for rep in range(args.reps):
        for t in targets:
            out = work / t.id.replace("/", "_")
            started, cpu = time.monotonic(), child_cpu()
            r = boot.boot_one(t, out, args.timeout)
            tested[t.id].append(time.monotonic() - started)
            cpu_tested[t.id].append(child_cpu() - cpu)
            if r.verdict.status != "pass":
                raise SystemExit(f"{t.id}: {r.verdict.status} at {r.verdict.step}: {r.verdict.reason}")
            wall, cpu, _lines = bare_boot(t, out / "initramfs.cpio", args.timeout)
            bare[t.id].append(wall)
            cpu_bare[t.id].append(cpu)
            print(f"rep {rep + 1} {t.id}: boot-test {tested[t.id][-1]:.2f}s, bare {bare[t.id][-1]:.2f}s",
                  file=sys.stderr, flush=True)
        started, cpu = time.monotonic(), child_cpu()
        # the same longest-first order a real run takes from the manifest's previous VM times
        expected = {cid: statistics.median(walls) for cid, walls in tested.items()}
        outcome = boot.boot_all(targets, work / "parallel", args.timeout, jobs=jobs, quiet=True, expected=expected)
        parallel.append(time.monotonic() - started)
        cpu_parallel.append(child_cpu() - cpu)
        if outcome.exit_code:
            raise SystemExit(f"parallel run failed: exit {outcome.exit_code}")
        print(f"rep {rep + 1} {len(targets)} cells on {jobs} cores: {parallel[-1]:.2f}s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    rows = []
    for t in targets:
        tw, bw = statistics.median(tested[t.id]), statistics.median(bare[t.id])
        rows.append((t.id, tw, bw, tw / bw, min(tested[t.id]) / min(bare[t.id]),
                     statistics.median(cpu_tested[t.id]) / statistics.median(cpu_bare[t.id])))
    seq_sum = sum(r[1] for r in rows)
    par = statistics.median(parallel)
    seq_all = [sum(tested[t.id][i] for t in targets) for i in range(args.reps)]
    worst = max(r[3] for r in rows)
    par_cpu = statistics.median(cpu_parallel)
    accel = {t.arch.name: qemu.accel_for(t.arch) for t in targets}
    appends = {t.flavour: flavourmod.get(t.flavour).boot_append for t in targets
               if flavourmod.get(t.flavour).boot_append}
    command = f"python bench/bench_boot.py --reps {args.reps}" + \
        (f" --arch {args.arch}" if args.arch != "all" else "") + \
        (f" --flavour {args.flavour}" if args.flavour != "generic" else "") + \
        (f' --section "{args.section}"' if args.section != "Boot" else "")
    lines = [
        f"## {args.section}",
        "",
        f"`{command}` on {platform.node() or 'this machine'}: "
        f"{jobs} cores, {platform.machine()}, accel {', '.join(f'{a}={x}' for a, x in accel.items())}, "
        f"load average {load_before:.1f} before / {load_after:.1f} after, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Medians of {args.reps} alternating runs.",
        "",
        "Per cell: the whole boot test (initramfs, QEMU, /init's insmod, kprobes check, trigger, hits, rmmod,",
        "verdict) against a bare boot of the same kernel and initramfs to `poweroff -f` "
        f"(goal <= {PER_CELL_GOAL}x). Kernels and busybox are unpacked before timing; both boots of a cell "
        f"get the same kernel command line: `{' '.join(qemu.BASE_APPEND)}`, the arch's words and the flavour's "
        "(toolchains/flavours/*.toml `boot_append`" + "".join(f"; {f}: `{' '.join(w)}`" for f, w in appends.items())
        + ").",
        "",
        "| cell | boot-test wall (s) | bare boot wall (s) | ratio of medians | ratio of minimums | ratio of VM CPU time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {cid} | {tw:.2f} | {bw:.2f} | {ratio:.2f} | {rmin:.2f} | {rcpu:.2f} |"
          for cid, tw, bw, ratio, rmin, rcpu in rows],
        "",
        f"Worst ratio: **{worst:.2f}x** ({'meets' if worst <= PER_CELL_GOAL else 'MISSES'} the {PER_CELL_GOAL}x goal).",
        "",
        f"{len(targets)} cells at once (`--jobs {jobs}`): **{par:.2f} s** against {seq_sum:.2f} s for the sum of their "
        f"sequential walls = **{par / seq_sum:.2f}x** ({'meets' if par / seq_sum <= PARALLEL_GOAL else 'MISSES'} "
        f"the {PARALLEL_GOAL}x goal; {jobs} cores make {1 / jobs:.2f}x the floor). Runs: "
        + ", ".join(f"{p:.2f}" for p in parallel) + " s; sequential sums per repetition: "
        + ", ".join(f"{x:.2f}" for x in seq_all) + " s.",
        "",
        f"CPU time of the VMs in the parallel runs: {par_cpu:.2f} s (median), so {jobs} free cores could finish "
        f"them in {par_cpu / jobs:.2f} s: the parallel wall is {par / (par_cpu / jobs):.2f}x that. "
        "What is above 1.0 is time the VMs waited for a core (other work on the machine), not the tool.",
        "",
        "TCG is noisy on a shared machine: compare the ratios, not the absolute seconds.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(REPO / "docs" / "benchmarks.md", text, args.section)
    ok = worst <= PER_CELL_GOAL and par / seq_sum <= PARALLEL_GOAL
    shutil.rmtree(work, ignore_errors=True)   # kept when a boot fails (SystemExit above): its consoles say why
    return 0 if ok else 2


def write_section(path: Path, section: str, title: str = "Boot") -> None:
    """Replace the "## TITLE" section (up to the next "## " heading) or append it; nothing else changes."""
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: section + "\n", old, count=1) if pattern.search(old) else \
        old.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
