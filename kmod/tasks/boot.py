"""Invoke tasks of the boot stage: `boot-test` and `probe-map` (loaded by kmod/tasks.py)."""

from invoke.exceptions import Exit

from .args import task
from .common import COMMON_HELP, cli_errors


@task(help={**COMMON_HELP,
            "timeout": "hard timeout per VM in seconds (default: 300, or $KMOD_BOOT_TIMEOUT)",
            "jobs": "VMs at once (default: number of cores)",
            "append": "extra kernel command line words, e.g. for debugging (space separated)"})
@cli_errors
def boot_test(c, arch="all", kernel="all", module="", spec="", timeout=0, jobs=0, append=""):
    """Boot each built cell's pinned kernel in QEMU: insmod, probes fire, rmmod, no oops. Exit 0/2/1."""
    import os

    from .. import arch as archmod
    from .. import boot
    from .. import pins as pinsmod
    from .. import spec as specmod
    from ..manifest import Manifest
    project = specmod.load(specmod.find(spec or None))
    modules = project.select(module or None)
    manifest = Manifest(project.dist / "manifest.json")
    targets = boot.targets_from_manifest(project, manifest, archmod.select(arch), pinsmod.select(kernel), modules)
    timeout = float(timeout or os.environ.get("KMOD_BOOT_TIMEOUT") or boot.qemu.DEFAULT_TIMEOUT)
    code = boot.run(project, targets, timeout, jobs or None, tuple(append.split()))
    if code:
        raise Exit(code=code)


@task(help={"kernel": COMMON_HELP["kernel"], "arch": COMMON_HELP["arch"],
            "refresh": "boot again even when the map is cached",
            "timeout": "hard timeout per VM in seconds (default: 300)",
            "symbol": "print what the map says about these symbols (comma list)"})
@cli_errors
def probe_map(c, kernel="all", arch="all", refresh=False, timeout=0, symbol=""):
    """Boot each pinned kernel without a module and cache its /proc/kallsyms and kprobe blacklist."""
    from .. import arch as archmod
    from .. import pins as pinsmod
    from ..boot import probemap
    pairs = [(p, a) for p in pinsmod.select(kernel) for a in archmod.select(arch) if a.name in p.arches]
    maps = probemap.ensure(pairs, refresh=refresh, timeout=timeout or None)
    for (p, a), m in zip(pairs, maps):
        print(f"{p.name}/{a.name}: {len(m.functions)} functions, {len(m.blacklist)} blacklisted, {m.dir}")
        for sym in filter(None, symbol.split(",")):
            print(f"  {sym}: {m.describe(sym.strip())}")


TASKS = [boot_test, probe_map]
