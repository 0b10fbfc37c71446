"""--auto-pin: the fleet's real kernels become cells. A host that runs a Debian kernel of a pinned suite
with another ABI or flavour gets exactly that kernel (ABI, flavour, Debian version) resolved from the
mirror's verified indexes and locked as a pin of its own (kmod.archive.resolve.resolve_kernel, into
toolchains/kernels.lock like every pin); the modules are built for it, linted against it and
boot-tested on it, and the host is preflighted again. A host that runs a pinned kernel no cell was built
for (a flavour or arch the build left out) gets that cell built the same way, the lock untouched. Any
other kernel is left to the host's dkms."""
from .. import build as buildmod
from .. import pins as pinsmod
from ..archive import resolve
from ..errors import KmodError
from ..progress import log
from .kernels import DEBIAN, OTHER, PINNED
from .report import HostResult


def wanted(results: list[HostResult]) -> dict[str, list[HostResult]]:
    """Auto-pin name -> the hosts that run that kernel."""
    out: dict[str, list[HostResult]] = {}
    for r in results:
        if not r.error and r.kernel is not None and r.kernel.kind == DEBIAN:
            out.setdefault(r.kernel.auto_pin_name, []).append(r)
    return out


def unbuilt(results: list[HostResult]) -> dict[tuple[str, str, str], list[HostResult]]:
    """(pin, flavour, arch) of a pinned kernel that some module's verdict had no built cell for -> hosts."""
    out: dict[tuple[str, str, str], list[HostResult]] = {}
    for r in results:
        k = r.kernel
        if r.error or k is None or k.kind != PINNED:
            continue
        if any(v.route != "prebuilt" for v in r.verdicts):   # a verdict no built cell serves
            out.setdefault((k.pin.name, k.pin_flavour, k.arch.name), []).append(r)
    return out


def lock(name: str, r: HostResult) -> pinsmod.Pin:
    k = r.kernel
    entry = resolve.resolve_kernel(k.pin, k.arch, k.abi, k.flavour, k.version, log=log)
    data = pinsmod.read_lock()
    data[name] = entry
    pinsmod.write_lock(data)
    return pinsmod.get(name)


def run(project, modules: list, results: list[HostResult],
        quiet: bool = False) -> tuple[list[HostResult], dict[str, list[str]]]:
    """Pin, build, lint and boot-test the hosts' unpinned Debian kernels. Returns the hosts to read again
    and, per host name, what went wrong on the way: a kernel the mirror no longer serves, a build that
    could not run, is that group's note; the other groups go on (one host's kernel never ends the run)."""
    from .. import arch as archmod
    from .. import boot
    notes: dict[str, list[str]] = {}

    def note(hosts: list[HostResult], message: str) -> None:
        log(f"--auto-pin: {', '.join(h.host.name for h in hosts)}: {message}")
        for h in hosts:
            notes.setdefault(h.host.name, []).append(f"--auto-pin: {message}")

    groups = wanted(results)
    for r in results:
        if not r.error and r.kernel is not None and r.kernel.kind == OTHER:
            log(f"--auto-pin: {r.host} runs {r.kernel.release}, not a Debian kernel of a pinned suite: checked "
                f"against its own kallsyms and Module.symvers; only dkms on the host can build for it")
    missing = unbuilt(results)
    if not groups and not missing:
        log("--auto-pin: no host runs an unpinned Debian kernel of a pinned suite; nothing to pin")
        return [], notes
    planned: list[tuple[list[HostResult], list]] = []   # (the hosts, the cells built for them)
    for (pin_name, flavour, arch), hosts in missing.items():
        log(f"--auto-pin: {', '.join(h.host.name for h in hosts)} run(s) {hosts[0].kernel.release}, pinned as "
            f"{pinsmod.get(pin_name).label(flavour)} but not built: building it")
        mods = [m for m in modules if not m.arches or arch in m.arches]
        try:
            cells = buildmod.plan(project, mods, [pinsmod.get(pin_name)], [archmod.get(arch)],
                                  flavours=(flavour,)) if mods else []
        except KmodError as e:
            note(hosts, f"{hosts[0].kernel.release} cannot be built: {_line(e)}")
            continue
        planned.append((hosts, cells))
    for name, hosts in groups.items():
        k = hosts[0].kernel
        log(f"--auto-pin: {', '.join(h.host.name for h in hosts)} run(s) {k.release} (Debian {k.version}), "
            f"not pinned: locking exactly it as {name}")
        try:
            pin = lock(name, hosts[0])
            arch = pinsmod.get(pin.name).arches[0]
            mods = [m for m in modules if not m.arches or arch in m.arches]
            cells = buildmod.plan(project, mods, [pin], [archmod.get(arch)]) if mods else []
        except KmodError as e:   # the mirror no longer serves that build, or cannot be read now
            note(hosts, f"{k.release} (Debian {k.version}) could not be locked: {_line(e)}")
            continue
        planned.append((hosts, cells))
    cells = [c for _, cs in planned for c in cs]
    if not cells:
        return [], notes
    from ..tasks.build import _lint_hook   # the build's own lint step, as `invoke build` runs it
    from ..tasks.common import command_line
    try:
        outcome = buildmod.run(project, cells, command=command_line(), quiet=quiet, after_build=_lint_hook(project))
    except KmodError as e:   # no Docker engine, the mirror down...: nothing was built for any of them
        for hosts, _ in planned:
            note(hosts, f"the build could not run: {_line(e)}")
        return [], notes
    failed = {c.id for c in outcome.failed}
    for c in outcome.failed:
        rec = c.record or {}
        why = (rec.get("diagnosis") or [{}])[0].get("advice") or next(
            (f["message"] for f in rec.get("lint", []) if f["severity"] == "error"), "see its build.log")
        note([h for hosts, cs in planned if any(x.id == c.id for x in cs) for h in hosts], f"{c.id} failed: {why}")
    try:   # it prints its own line on an error, and each cell's boot record says what happened to it
        code, why = boot.run_for_cells(project, [c for c in outcome.cells if c.result in ("ok", "cached")]), "its line above"
    except KmodError as e:
        code, why = e.exit_code, _line(e)
    if code == 1:
        for hosts, cs in planned:
            if any(c.id not in failed for c in cs):
                note(hosts, f"the boot test ended in an error ({why}): a cell it did not boot is judged without it")
    return [r for hosts, cs in planned if any(c.id not in failed for c in cs) for r in hosts], notes


def _line(e: KmodError) -> str:
    return e.message + (f" ({e.hint})" if e.hint else "")
