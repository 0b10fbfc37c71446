"""Preflight: ask the hosts themselves, over SSH, whether each module will load and work there, and
with --install prove it on them.

    hosts.py    --host / --hosts FILE / an ssh_config's hosts -> Host
    ssh.py      one Fabric session per host; every transport failure is that host's HostError
    facts.py    the read-only facts script (templates/preflight/facts.sh.j2) and what it read
    kallsyms.py the probed symbols' lines of /proc/kallsyms, read once per kernel build and run
    kernels.py  the host's kernel against the pins: pinned, Debian of a pinned suite, other
    modules.py  each module's built cells (manifest), probed symbols, the dkms it needs
    verdict.py  host x module -> pass / warn / fail with the reason in one line (the lint's rules)
    install.py  --install: package in, dkms build, the boot test's steps, package out
    autopin.py  --auto-pin: a host's exact Debian kernel locked, built, linted, boot-tested
    report.py   text, JSON, JUnit, exit codes

Hosts run in parallel (--jobs, SSH waits more than it computes), each under its own timeout; what one
host does never stops the others. dist/preflight.json is written when a host is about to be changed and
again at the end, so a killed run still says which host may need attention.
"""
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import atomic
from ..errors import KmodError
from ..parallel import parallel, sigterm_as_interrupt
from ..progress import Progress
from . import facts as factsmod
from . import install as installmod
from . import kallsyms as kallsymsmod
from . import kernels, modules, report, verdict
from . import ssh as sshmod
from .hosts import Host
from .report import HostResult

DEFAULT_JOBS = 16          # hosts at once: SSH sessions wait far more than they compute
GRACE = 600.0              # after Ctrl-C, how long --install may take to put hosts back
# A host's row says when it started (wall clock) and how long it took (monotonic). Both come from one
# monotonic reading and this fixed offset: two separate clock reads, with a thread switch between them,
# made a row end up to tens of ms after the next host on the same worker had started.
_WALL = time.time() - time.monotonic()


@dataclass(frozen=True)
class Options:
    ssh: sshmod.Options = field(default_factory=sshmod.Options)
    jobs: int = 0
    fail_on: str = verdict.FAIL
    install: bool = False
    keep: bool = False
    install_timeout: float = 1800.0
    auto_pin: bool = False
    quiet: bool = False


class Run:
    """What one run's host threads share, passed to them explicitly: the cancel flag, the open sessions
    (closed at once on Ctrl-C while only reading), the count of hosts being changed, the report file."""

    def __init__(self, project, infos: list[verdict.ModuleInfo], options: Options):
        self.project, self.infos, self.options = project, infos, options
        self.cancel = threading.Event()
        self.sessions: set[sshmod.Session] = set()
        self.changing = 0
        self.lock = threading.Condition()
        self.results: list[HostResult] = []
        self.path = project.dist / "preflight.json"
        self.pin_lock = threading.Lock()
        self.exports: dict[tuple[str, str], dict | None] = {}
        self.kallsyms = kallsymsmod.Cache()

    @property
    def symbols(self) -> set[str]:
        """Every module's probed symbols: the lines of /proc/kallsyms that matter."""
        return {s for i in self.infos for s in i.probed}

    def session(self, host: Host, timeout: float) -> sshmod.Session:
        s = sshmod.Session(host, replace(self.options.ssh, timeout=timeout))
        with self.lock:
            if self.cancel.is_set():
                raise sshmod.HostError("interrupted before it was read")
            self.sessions.add(s)
        return s

    def release(self, s: sshmod.Session) -> None:
        s.close()
        with self.lock:
            self.sessions.discard(s)

    def abort_reading(self) -> None:
        """Ctrl-C while only reading: nothing to undo, so every session is cut at once."""
        self.cancel.set()
        with self.lock:
            sessions = list(self.sessions)
        for s in sessions:
            s.close()

    def abort_installing(self) -> None:
        """Ctrl-C during --install: no new host starts; the ones being changed finish their step and
        put themselves back (a second Ctrl-C gives up: their rows then say they need attention)."""
        self.cancel.set()
        deadline = time.monotonic() + GRACE
        with self.lock:
            if self.changing:
                from ..progress import log
                log(f"interrupted: putting {self.changing} host(s) back as they were (Ctrl-C again to give up)")
            while self.changing and time.monotonic() < deadline:
                self.lock.wait(1.0)

    def pinned_exports(self, r: HostResult) -> dict | None:
        """A pinned kernel's Module.symvers from its locked headers (the lint's target cache), for a host
        that runs it without headers: its CRCs are exactly these. Read once per run and pin."""
        from ..flavour import GENERIC
        from ..lint.target import load_pin
        # the flavour's own headers: a cloud or rt kernel's CRCs differ from the generic one's of the same ABI
        k = r.kernel
        key = (k.pin.name, k.arch.name, k.pin_flavour)
        with self.pin_lock:
            if key not in self.exports:
                try:
                    self.exports[key] = load_pin(k.pin, k.arch, k.pin_flavour or GENERIC).exports
                except KmodError as e:
                    self.exports[key] = None
                    r.notes.append(f"CRCs not checked: the pin's headers could not be read ({e.message})")
            return self.exports[key]

    def record(self) -> None:
        """Each host's verdicts into dist/manifest.json, by the locked merge every stage uses (other runs'
        records survive), then dist/report.html."""
        from .. import report as matrix
        from ..manifest import Manifest
        with self.lock:
            records = [report.manifest_record(x) for x in self.results]
        if not records:
            return
        m = Manifest(self.project.dist / "manifest.json")
        for rec in records:
            m.set_preflight(rec["host"], rec)
        m.save()
        matrix.write(self.project)

    def save(self) -> None:
        with self.lock:
            data = report.to_json(list(self.results))
        try:
            atomic.write_json(self.path, data)
        except OSError as e:
            from ..errors import UserError
            raise UserError(f"cannot write {self.path}: {e.strerror or e}",
                            "preflight keeps its report (and which hosts it changed) there: make it writable") from None


def facts_script(infos: list[verdict.ModuleInfo]) -> str:
    return factsmod.script([n for i in infos for n in i.imports])


def read_host(run: Run, host: Host, script: str, prog: Progress | None = None) -> HostResult:
    """Connect, read the facts, judge every module. Never raises for the host's own trouble."""
    started = time.monotonic()
    r = HostResult(host, started=started + _WALL)
    s = None
    try:
        s = run.session(host, run.options.ssh.timeout)
        s.open()
        r.label = s.label
        if prog:
            prog.note(host.name, f"reading {r.label}")
        out = s.run("exec sh -c " + _quote(script))   # POSIX sh whatever the login shell is
        if run.cancel.is_set():
            raise sshmod.HostError("interrupted")
        if not out.stdout.strip():
            raise sshmod.HostError(f"the facts script printed nothing (exit {out.exit_code}): "
                                f"{out.stderr.strip()[:200]}", "is /bin/sh there?")
        r.facts = factsmod.parse(out.stdout)
        if run.symbols and r.facts.kallsyms_first:
            kallsymsmod.fill(run.kallsyms, s, r.facts, run.symbols, host.name)
            if run.cancel.is_set():
                raise sshmod.HostError("interrupted")
        r.kernel = kernels.classify(r.facts.release, r.facts.machine, r.facts.debian_version)
        exports = None
        if not r.facts.symvers_source and r.kernel.kind == kernels.PINNED:
            exports = run.pinned_exports(r)
        r.verdicts = [verdict.judge(r.facts, r.kernel, info, host.name, exports) for info in run.infos]
        if r.facts.privilege == "none":
            r.notes.append("not root and no passwordless sudo: root-only files (the kprobe blacklist, "
                           "kallsyms addresses) were not read")
    except KmodError as e:
        r.error = e.message + (f" ({e.hint})" if e.hint else "")
    except Exception as e:  # noqa: BLE001 - one host's surprise must not end the run for the others
        r.error = f"unexpected {type(e).__name__}: {e}"
    finally:
        if s is not None:
            r.notes += s.notes
            run.release(s)
    r.seconds = time.monotonic() - started
    return r


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)


def _row_detail(r: HostResult) -> tuple[str, str]:
    if r.error:
        return "failed", r.error
    worst = r.worst
    detail = f"{r.facts.release}: " + "; ".join(f"{v.module} {v.status}" for v in r.verdicts)
    return {"pass": "ok", "warn": "ok", "fail": "failed"}.get(worst, "failed"), f"{detail} ({r.seconds:.1f}s)"


def read_all(run: Run, hosts: list[Host], title: str = "preflight") -> list[HostResult]:
    script = facts_script(run.infos)
    results: dict[str, HostResult] = {}
    with Progress(title, [h.name for h in hosts], run.options.quiet) as prog:
        def one(h: Host):
            prog.update(h.name, "running")
            r = read_host(run, h, script, prog)
            results[h.name] = r
            if not run.cancel.is_set():   # after Ctrl-C the run's last line is "interrupted", not rows
                prog.update(h.name, *_row_detail(r))
        parallel(one, hosts, min(run.options.jobs or DEFAULT_JOBS, len(hosts)), on_abort=run.abort_reading)
    return [results[h.name] for h in hosts]


def install_host(run: Run, r: HostResult, prog: Progress | None = None) -> None:
    """--install on one host that was read: every module whose verdict is not a fail, one after the other."""
    todo = [(v, i) for v, i in zip(r.verdicts, run.infos) if v.status != verdict.FAIL]
    if r.error or not todo:
        return
    fmt = installmod.package_format(r.facts)
    if not fmt:
        r.error = "--install needs dpkg or rpm on the host"
        return
    if r.facts.privilege == "none":
        r.error = "--install needs root or passwordless sudo on the host (log in as root, or allow `sudo -n`)"
        return
    with run.lock:
        if run.cancel.is_set():
            return
        run.changing += 1
    s = None
    try:
        s = run.session(r.host, run.options.install_timeout)
        s.open()
        for v, info in todo:
            if run.cancel.is_set():
                break
            path = package_for(run, info, fmt)
            inst = installmod.Installer(s, r.facts, info, path, f"{info.module.package_name}-dkms",
                                        run.options.keep, run.cancel)
            r.attention = (f"{inst.package_name} is being installed by a preflight run that has not finished "
                           f"(pid {os.getpid()})")
            run.save()
            trial = installmod.Trial(info.module.name, inst.package_name)
            try:
                # each step is a line in a CI log too (not only on a terminal): an install takes minutes,
                # and whoever reads the log (or presses Ctrl-C) should see that the host is being changed
                trial = inst.run(on_step=lambda step: prog and prog.update(r.host.name, "changing",
                                                                           f"{info.module.name}: {step}"))
            except installmod.Interrupted:
                trial.status, trial.reason = verdict.FAIL, "interrupted: the package was removed again"
            except KmodError as e:
                trial.status, trial.reason = verdict.FAIL, e.message
            finally:
                trial.cleanup = _cleanup(run, r, inst)
                r.trials.append(trial)
                if trial.cleanup in ("removed", "kept (--keep)", "nothing installed", "untouched"):
                    r.attention = ""
                else:
                    by_hand = [f"{'dpkg -P' if fmt == 'deb' else 'rpm -e'} {inst.package_name}"]
                    if inst.keys_left:
                        by_hand.append("rm -f " + " ".join(inst.keys_left))
                    r.attention = f"{trial.cleanup} (remove it by hand: {'; '.join(by_hand)})"
                if inst.keys_made:
                    r.notes.append(f"{inst.package_name}: dkms made its signing key for this install "
                                   f"({', '.join(inst.keys_made)}): " +
                                   ("kept with the package (--keep)" if inst.keep else
                                    "removed again" if not inst.keys_left else "NOT removed"))
                run.save()
    except KmodError as e:
        r.error = e.message
    finally:
        if s is not None:
            run.release(s)
        with run.lock:
            run.changing -= 1
            run.lock.notify_all()


def _cleanup(run: Run, r: HostResult, inst: installmod.Installer) -> str:
    """Put the host back, on the same session or, if that one broke, on a new one."""
    for attempt in range(2):
        try:
            inst.session.deadline = time.monotonic() + 600   # cleanup has its own budget
            return inst.cleanup()
        except KmodError as e:
            if attempt:
                return f"could not clean up ({e.message})"
            try:
                fresh = sshmod.Session(r.host, replace(run.options.ssh, timeout=600)).open()
            except KmodError as e2:
                return f"could not reconnect to clean up ({e2.message})"
            inst.session = fresh
    return "could not clean up"


def package_for(run: Run, info: verdict.ModuleInfo, fmt: str) -> Path:
    """The module's DKMS package, made now (reproducible: the same bytes as `invoke package`)."""
    from ..package import package
    with run.lock:   # two hosts may want the same package at once: make it once
        built = package(run.project, [info.module], [fmt], lint=False)
    return built[0].path


def run(project, hosts: list[Host], selected: list, options: Options) -> list[HostResult]:
    """Preflight `selected` modules on `hosts`; returns one HostResult per host, in order."""
    r = Run(project, modules.infos(project, selected), options)
    ended = False
    try:
        with sigterm_as_interrupt():
            r.results = read_all(r, hosts)
            if options.auto_pin:
                auto_pin(r, selected)
            if options.install:
                install_all(r)
        ended = True
    except KeyboardInterrupt:
        from ..progress import log
        for x in r.results:
            if x.attention:
                log(f"NEEDS ATTENTION {x.host}: {x.attention}")
        raise
    finally:
        # whatever ended the run, what was read (and which hosts were left changed) is kept for whoever
        # looks next; a failure to write it must not hide the error that is already on its way
        try:
            r.save()
            r.record()
        except KmodError:
            if ended:
                raise
    return r.results


def auto_pin(r: Run, selected: list) -> None:
    from . import autopin
    redo, notes = autopin.run(r.project, selected, r.results, quiet=r.options.quiet)
    if redo:
        r.infos = modules.infos(r.project, selected)   # the new cells are in the manifest now
        again = {x.host.name: x for x in read_all(r, [x.host for x in redo], "preflight (again)")}
        r.results = [again.get(x.host.name, x) for x in r.results]
    for x in r.results:   # a group's trouble is its hosts' note; their verdicts stand as read
        x.notes += notes.get(x.host.name, [])


def install_all(r: Run) -> None:
    with Progress("preflight --install", [x.host.name for x in r.results], r.options.quiet) as prog:
        def one(x: HostResult):
            prog.update(x.host.name, "running")
            install_host(r, x, prog)
            bad = x.error or x.attention or any(t.status == verdict.FAIL for t in x.trials)
            prog.update(x.host.name, "failed" if bad else "ok",
                        "; ".join(f"{t.module} {t.status}: {t.cleanup}" for t in x.trials) or x.error)
        parallel(one, r.results, min(r.options.jobs or DEFAULT_JOBS, len(r.results)), on_abort=r.abort_installing)
