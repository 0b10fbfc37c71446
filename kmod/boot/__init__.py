"""Boot tests: each built cell (module x pinned kernel x arch) is loaded into the very kernel it was
built for, on its own arch, in QEMU: insmod, probes registered, probes fire, rmmod, kernel healthy.

    initramfs.py  busybox + module + rendered /init, as a cpio archive
    kernel.py     the pinned kernel image and busybox, fetched and unpacked once into the cache
    qemu.py       argv from the arch data, KVM or TCG, hard timeout, no VM left behind
    verdict.py    the console -> pass / fail (with the step) / error
    junit.py      JUnit XML for CI
    probemap.py   the kernel's own symbol table and kprobe blacklist, per pin (for the lint)
"""
import hashlib
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import arch as archmod
from .. import atomic, nofollow
from .. import run as runmod
from .. import pins as pinsmod
from ..errors import InfraError, UserError
from ..archive.fetch import sha256_file
from ..manifest import Manifest, cell_lock
from ..flavour import GENERIC
from ..parallel import parallel, sigterm_as_interrupt
from ..progress import Progress
from ..report import write as write_report
from . import initramfs, junit, kernel, qemu, verdict

EXIT_PASS, EXIT_ERROR, EXIT_FAIL = 0, 1, 2


@dataclass
class Target:
    """One cell to boot-test."""
    module: object            # kmod.spec.Module
    pin: pinsmod.Pin
    arch: archmod.Arch
    ko: Path
    kos: tuple[Path, ...] = ()  # every .ko of the cell, in load order (default: `ko` alone)
    flavour: str = GENERIC
    uses_kprobes: bool = False  # the build saw a .ko call register_k(ret)probe(s) (manifest kos[].kprobes)

    @property
    def files(self) -> tuple[Path, ...]:
        return self.kos or (self.ko,)

    @property
    def id(self) -> str:
        return f"{self.module.name}/{self.pin.label(self.flavour)}/{self.arch.name}"

    @property
    def probes(self) -> list[tuple[str, int]]:
        return [(p.symbol, p.offset) for p in self.module.probes]

    @property
    def trigger(self) -> str:
        return self.module.trigger or initramfs.default_trigger(self.module.symbols)


@dataclass
class Result:
    target: Target
    verdict: verdict.Verdict
    seconds: dict = field(default_factory=dict)
    console: Path | None = None
    argv: list[str] = field(default_factory=list)
    accel: str = ""
    ko_sha256: str = ""       # of the bytes that were booted (the cell's first .ko, as its record names it)

    @property
    def id(self) -> str:
        return self.target.id


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


def targets_from_manifest(project, manifest: Manifest, arches: list[archmod.Arch], pins: list[pinsmod.Pin],
                          modules: list, flavours: tuple[str, ...] = (GENERIC,)) -> list[Target]:
    """The built (result ok) cells of the manifest that match the selection."""
    wanted = {m.name: m for m in modules}
    arch_names, pin_names = {a.name for a in arches}, {p.name for p in pins}
    out = []
    for cid, rec in sorted(manifest.cells.items()):
        flavour = rec.get("flavour", GENERIC)
        if (rec.get("result") != "ok" or not rec.get("ko") or rec.get("module") not in wanted
                or rec.get("arch") not in arch_names or rec.get("kernel") not in pin_names
                or flavour not in flavours):
            continue
        kos = _kos(project, rec)
        if not all(k.is_file() for k in kos):
            continue
        out.append(Target(wanted[rec["module"]], pinsmod.get(rec["kernel"]), archmod.get(rec["arch"]), kos[0],
                          kos, flavour, _uses_kprobes(rec)))
    return out


def _kos(project, rec: dict) -> tuple[Path, ...]:
    return tuple(project.dist / k["ko"] for k in rec.get("kos") or [{"ko": rec["ko"]}])


def _uses_kprobes(rec: dict) -> bool:
    return any(isinstance(k, dict) and k.get("kprobes") for k in rec.get("kos") or [])


def targets_from_cells(project, cells) -> list[Target]:
    out = []
    for c in cells:
        rec = c.record or {}
        if c.pin is None or not rec.get("ko") or c.result not in ("ok", "cached"):
            continue  # host builds (--kdir) have no pinned kernel to boot
        kos = _kos(project, rec)
        out.append(Target(c.module, c.pin, c.arch, kos[0], kos, c.flavour, _uses_kprobes(rec)))
    return out


def boot_one(target: Target, out_dir: Path, timeout: float, append: tuple[str, ...] = (),
             progress: Progress | None = None) -> Result:
    """Build the initramfs, boot, judge. Never raises for a guest problem; InfraError for a host one."""
    started = time.monotonic()
    a = target.arch
    k = kernel.kernel(target.pin, a, target.flavour)
    bb = kernel.busybox(target.pin, a)
    # kmod's own modules count their hits; for a hand-written one kmod counts them itself (tracefs).
    hand_written = target.module.source is not None
    spec = initramfs.InitSpec(module=target.module.name, trigger=target.trigger,
                              probes=tuple(f"{s}+{o:#x}" for s, o in target.probes),
                              kos=tuple(k.name for k in target.files), hits=not hand_written, count=hand_written)
    out_dir.mkdir(parents=True, exist_ok=True)
    initrd = out_dir / "initramfs.cpio"
    # Each .ko read once: a build may replace them meanwhile, and the verdict is about these bytes.
    kos = tuple((k.name, nofollow.read_path(k, "module")) for k in target.files)
    atomic.write_bytes(initrd, initramfs.build(bb, initramfs.render_init(spec), kos=kos))
    log = out_dir / "console.log"
    prepared = time.monotonic() - started
    run, accel = qemu.boot(a, k.image, initrd, append, timeout, log=log,
                           marks=(f"{initramfs.MARKER} step=init",),
                           on_line=(lambda ln: progress.note(target.id, ln)) if progress else None,
                           flavour=k.flavour)
    cmd = run.argv
    v = verdict.judge(run.lines, target.probes, target.module.kernel_name, timed_out=run.timed_out,
                      timeout=timeout, exit_code=run.exit_code, needs_hits=not hand_written,
                      expect=target.module.expect, uses_kprobes=target.uses_kprobes)
    boot_s = run.marks.get(f"{initramfs.MARKER} step=init")
    seconds = {"prepare": round(prepared, 3), "boot": round(boot_s, 3) if boot_s is not None else None,
               "test": round(run.seconds - boot_s, 3) if boot_s is not None else None,
               "vm": round(run.seconds, 3), "total": round(time.monotonic() - started, 3)}
    return Result(target, v, seconds, log, cmd, accel, hashlib.sha256(kos[0][1]).hexdigest())


@dataclass
class Outcome:
    results: list[Result]
    errors: dict[str, str]  # cell id -> infrastructure error that kept it from booting

    @property
    def exit_code(self) -> int:
        """0 all pass, 2 any module failed, 1 any infrastructure error (the results are incomplete)."""
        if self.errors or any(r.verdict.status == verdict.ERROR for r in self.results):
            return EXIT_ERROR
        if any(r.verdict.status in (verdict.FAIL, verdict.UNPROVEN) for r in self.results):
            return EXIT_FAIL
        return EXIT_PASS

    def by_id(self, cell_id: str) -> Result:
        return next(r for r in self.results if r.id == cell_id)


def boot_all(targets: list[Target], dist: Path, timeout: float = qemu.DEFAULT_TIMEOUT, jobs: int | None = None,
             append: tuple[str, ...] = (), quiet: bool = False, manifest: Manifest | None = None,
             junit_path: Path | None = None, expected: dict[str, float] | None = None) -> Outcome:
    """Boot-test `targets` in parallel (one VM per core by default); results into the manifest and JUnit."""
    if not targets:
        raise UserError("nothing to boot-test: no built cell matches",
                        "run `invoke build` first, or check --module/--kernel/--arch")
    for a in {t.arch.name: t.arch for t in targets}.values():
        qemu.require_binary(a)
        qemu.accel_for(a)  # a bad KMOD_BOOT_ACCEL is refused before any VM starts
    # Longest first, so that the cores finish together: `expected` seconds per cell, else the last
    # run's VM time from the manifest.
    def last_vm(t: Target) -> float:
        if expected and t.id in expected:
            return expected[t.id]
        rec = (manifest.cell(t.id) or {}) if manifest is not None else {}
        return ((rec.get("boot") or {}).get("seconds") or {}).get("vm") or 0.0
    order = sorted(targets, key=last_vm, reverse=True)
    results: dict[str, Result] = {}
    errors: dict[str, str] = {}
    stop = threading.Event()  # set on Ctrl-C/SIGTERM/SIGHUP: a VM killed now is interrupted, not failed

    def record(t: Target, boot: dict, ko_sha256: str | None) -> None:
        """A boot verdict belongs to the .ko it booted: dropped if a build replaced it meanwhile."""
        if manifest is not None:
            manifest.update_cell(t.id, when={"ko_sha256": ko_sha256} if ko_sha256 else None,
                                 boot={**boot, "run": runmod.ID, "at": time.time()})
            manifest.save()

    with Progress("boot-test", [t.id for t in targets], quiet) as prog:
        def one(t: Target):
            busy = lambda: prog.update(t.id, "waiting", "another kmod run is boot-testing this cell")
            with cell_lock(dist, f"boot/{t.id}", stop, on_wait=busy):
                prog.update(t.id, "running")
                record(t, {"verdict": "running"}, sha256_file(t.ko))
                try:
                    r = boot_one(t, dist / t.module.name / t.pin.label(t.flavour) / t.arch.name / "boot", timeout, append, prog)
                except InfraError as e:
                    if stop.is_set():
                        return
                    errors[t.id] = e.line()
                    prog.update(t.id, "error", e.message)
                    record(t, {"verdict": verdict.ERROR, "step": "setup", "reason": e.line()}, None)
                    return
                if stop.is_set():  # its VM was killed under it: not the module's verdict
                    return
                results[t.id] = r
                record(t, _record(r, dist, timeout), r.ko_sha256)
            v = r.verdict
            detail = ((f"hits {','.join(map(str, v.hits))}" if v.hits else v.proof[:80])
                      if v.status == verdict.PASS else f"{v.step}: {v.reason}")
            prog.update(t.id, {"pass": "ok", "fail": "failed", "unproven": "unproven"}.get(v.status, "error"),
                        f"{detail} ({r.seconds['vm']:.1f}s {r.accel})")

        def abort():
            stop.set()
            qemu.kill_all(stop=True)

        qemu.allow()
        try:
            parallel(one, order, min(jobs or default_jobs(), len(order)), on_abort=abort)
        except BaseException as e:
            stop.set()
            if manifest is not None:
                for t in targets:
                    manifest.update_cell(t.id, when=_booting_here, boot={"verdict": "interrupted", "reason": f"interrupted ({e})",
                                               "run": runmod.ID, "at": time.time()})
                manifest.save()
            raise
    ordered = [results[t.id] for t in targets if t.id in results]
    if junit_path:
        junit.write(junit_path, ordered, errors, dist)
    return Outcome(ordered, errors)


def _booting_here(rec: dict) -> bool:
    boot = rec.get("boot") or {}
    return boot.get("verdict") == "running" and boot.get("run") == runmod.ID


def _record(r: Result, dist: Path, timeout: float) -> dict:
    rec = r.verdict.record()
    rec.update(seconds=r.seconds, console=_rel(r.console, dist), accel=r.accel, timeout=timeout,
               command=shlex.join(r.argv), ko_sha256=r.ko_sha256, trigger=r.target.trigger,
               at=time.time())
    return rec


def _rel(path: Path | None, base: Path) -> str:
    if path is None:
        return ""
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def report(outcome: Outcome, dist: Path) -> None:
    """One line per non-passing cell, with the step, the reason and the console excerpt."""
    results = outcome.results
    for tid, msg in outcome.errors.items():
        print(f"ERROR {tid}: {msg}", file=sys.stderr)
    for r in results:
        v = r.verdict
        if v.status == verdict.PASS:
            if r.target.module.source is not None:
                print(f"ok {r.id}: proof: {v.proof}", file=sys.stderr)
            continue
        word = {verdict.FAIL: "FAIL", verdict.UNPROVEN: "UNPROVEN"}.get(v.status, "ERROR")
        print(f"{word} {r.id} at {v.step}: {v.reason}", file=sys.stderr)
        for line in v.excerpt[:12]:
            print(f"    | {line}", file=sys.stderr)
        print(f"    console: {r.console}", file=sys.stderr)
    passed = sum(r.verdict.status == verdict.PASS for r in results)
    print(f"{passed}/{len(results) + len(outcome.errors)} boot-tested ok, junit: {dist / 'boot-junit.xml'}",
          file=sys.stderr)


def run(project, targets: list[Target], timeout: float = qemu.DEFAULT_TIMEOUT, jobs: int | None = None,
        append: tuple[str, ...] = (), quiet: bool = False, command: str = "boot-test") -> int:
    dist = project.dist
    manifest = Manifest(dist / "manifest.json")
    manifest.start_run(command)
    status = "error"
    try:
        with sigterm_as_interrupt():
            outcome = boot_all(targets, dist, timeout, jobs, append, quiet, manifest, dist / "boot-junit.xml")
        status = {EXIT_PASS: "ok", EXIT_FAIL: "failed"}.get(outcome.exit_code, "error")
    except KeyboardInterrupt:
        status = "interrupted"
        qemu.kill_all(stop=True)
        raise
    finally:
        manifest.finish_run(status)
        write_report(project)
    report(outcome, dist)
    return outcome.exit_code


def run_for_cells(project, cells, timeout: float = qemu.DEFAULT_TIMEOUT, jobs: int | None = None) -> int:
    """`invoke build --boot-test`: boot-test the cells just built. Returns the exit code."""
    try:
        return run(project, targets_from_cells(project, cells), timeout, jobs, command="build --boot-test")
    except (UserError, InfraError) as e:
        print(e.line(), file=sys.stderr)
        return e.exit_code
