"""Invoke tasks of the boot stage: `boot-test` and `probe-map` (loaded by kmod/tasks.py)."""

from invoke.exceptions import Exit

from .args import task
from .common import COMMON_HELP, FLAVOUR_HELP, cli_errors, command_line, count, kernel_words, output_folder, seconds

TIMEOUT_ENV = "KMOD_BOOT_TIMEOUT"


def boot_timeout(value) -> float:
    """--timeout, else $KMOD_BOOT_TIMEOUT, else the default; refused before a VM starts."""
    from ..boot.qemu import DEFAULT_TIMEOUT
    return seconds(value, "--timeout", DEFAULT_TIMEOUT, env=TIMEOUT_ENV)


@task(help={**COMMON_HELP,
            "flavour": FLAVOUR_HELP,
            "timeout": f"hard timeout per VM in seconds (default: 300, or ${TIMEOUT_ENV})",
            "jobs": "VMs at once (default: number of cores)",
            "append": "extra kernel command line words, e.g. for debugging (space separated)"})
@cli_errors
def boot_test(c, arch="all", kernel="all", flavour="generic", module="", spec="", timeout="", jobs="", append=""):
    """Boot each built cell's pinned kernel in QEMU: insmod, probes fire, rmmod, no oops. Exit 0/2/1."""
    from .. import arch as archmod
    from .. import boot
    from .. import flavour as flavourmod
    from .. import pins as pinsmod
    from .. import spec as specmod
    from ..manifest import Manifest
    timeout, jobs, words = boot_timeout(timeout), count(jobs, "--jobs"), kernel_words(append, "--append")
    arches, pins = archmod.select(arch), pinsmod.select(kernel)
    flavours = tuple(f.name for f in flavourmod.select(flavour))
    project = specmod.load(specmod.find(spec or None))
    modules = project.select(module or None)
    output_folder(project)
    manifest = Manifest(project.dist / "manifest.json")
    targets = boot.targets_from_manifest(project, manifest, arches, pins, modules, flavours)
    code = boot.run(project, targets, timeout, jobs, words, command=command_line())
    if code:
        raise Exit(code=code)


@task(help={"kernel": COMMON_HELP["kernel"], "arch": COMMON_HELP["arch"], "flavour": FLAVOUR_HELP,
            "refresh": "boot again even when the map is cached",
            "timeout": "hard timeout per VM in seconds (default: 300)",
            "symbol": "print what the map says about these symbols (comma list)"})
@cli_errors
def probe_map(c, kernel="all", arch="all", flavour="generic", refresh=False, timeout="", symbol=""):
    """Boot each pinned kernel without a module and cache its /proc/kallsyms and kprobe blacklist."""
    from .. import arch as archmod
    from .. import flavour as flavourmod
    from .. import pins as pinsmod
    from ..boot import probemap
    from ..errors import UserError
    timeout = seconds(timeout, "--timeout", probemap.qemu.DEFAULT_TIMEOUT)
    arches, flavours = archmod.select(arch), flavourmod.select(flavour)
    kernels = [(p, a, f.name) for p in pinsmod.select(kernel) for a in arches if a.name in p.arches
               for f in flavours if p.has(a, f.name)]
    if not kernels:
        raise UserError("no locked kernel matches --kernel/--arch/--flavour", "`invoke toolchains` lists them")
    maps = probemap.ensure(kernels, refresh=refresh, timeout=timeout)
    for (p, a, f), m in zip(kernels, maps):
        print(f"{p.label(f)}/{a.name}: {len(m.functions)} functions, {len(m.blacklist)} blacklisted, {m.dir}")
        for sym in filter(None, symbol.split(",")):
            print(f"  {sym}: {m.describe(sym.strip())}")


TASKS = [boot_test, probe_map]
