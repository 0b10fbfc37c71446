"""Which exact packages a pin's toolchain image is made of (toolchains/image.toml): the base system
(as debootstrap's minbase would install it) and the compilers, cross compilers, binutils, libc headers
and make, closed under Depends over the suite's verified indexes (kmod.archive.depends). The locked
kernel packages the image installs natively (kbuild, headers) are part of the closure, at their locked
versions. Nothing here is arch-specific: names come from the pin and the arch files."""
import tomllib
from functools import cache

from .. import arch as archmod
from .. import paths
from .. import pins as pinsmod
from .depends import Closure

NATIVE_KERNEL_ROLES = ("headers-common", "kbuild", "headers")  # installed by apt in the image


@cache
def image_spec() -> dict:
    return tomllib.loads((paths.toolchains() / "image.toml").read_text())


def tool_names(pin: pinsmod.Pin, build_arch: str, arch: archmod.Arch | None = None) -> list[str]:
    """The tool packages of `pin` (of one cell's `arch` when given): native, plus cross for foreign arches."""
    spec = image_spec()
    names = [t.format(compiler=pin.compiler) for t in spec["tools"]]
    for a in ([arch] if arch else [archmod.get(n) for n in pin.arches]):
        if a.debian_arch != build_arch:
            names += [t.format(compiler=pin.compiler, triplet=a.gnu_triplet) for t in spec["cross_tools"]]
    return list(dict.fromkeys(names))


def _package(rec: dict, archive: str, role: str) -> pinsmod.Package:
    return pinsmod.Package(name=rec["Package"], version=rec["Version"], arch=rec["Architecture"], role=role,
                           filename=rec["Filename"], archive=archive, sha256=rec["SHA256"], size=int(rec["Size"]))


def _record(cat, pkg: pinsmod.Package, build_arch: str) -> tuple[dict, str]:
    """The index record of a locked package; its own control file when the index moved on (an older
    ABI kept in the lock), read from the .deb fetched and checked against the lock."""
    for rec, archive in cat.versions(pkg.name, build_arch if pkg.arch != "all" else "all"):
        if rec["Version"] == pkg.version and rec["SHA256"] == pkg.sha256:
            return rec, archive
    from debian.debfile import DebFile
    from . import fetch
    return dict(DebFile(str(fetch.fetch(pkg))).debcontrol()), pkg.archive


def lock(cat, pin: pinsmod.Pin, kernel_pkgs: list[pinsmod.Package], build_arch: str) -> list[pinsmod.Package]:
    """The base and toolchain packages of `pin`'s image, roles "base" and "toolchain", sorted by name."""
    spec = image_spec()
    suite = spec.get("base_suite", {}).get(pin.suite, {})
    base = Closure(cat, build_arch, exclude=suite.get("exclude_dependency", ()))
    required = sorted({name for (name, a), recs in cat.by_name.items() if a in (build_arch, "all")
                       and any(r.get("Priority") == spec["base_priority"] for r, _ in recs)})
    for name in [*suite.get("extra", ()), *spec["base_extra"], *required]:
        base.add(name, why="the base system")
    tools = Closure(cat, build_arch, have=base.chosen)
    native = [p for p in kernel_pkgs if p.role in NATIVE_KERNEL_ROLES and p.arch in (build_arch, "all")]
    for p in native:
        tools._take(*_record(cat, p, build_arch))
    for name in tool_names(pin, build_arch):
        tools.add(name, why=f"the {pin.name} toolchain")
    skip = {p.name for p in native}
    out = [_package(rec, archive, "base") for rec, archive in base.chosen.values()]
    out += [_package(rec, archive, "toolchain") for name, (rec, archive) in tools.chosen.items()
            if name not in base.chosen and name not in skip]
    return sorted(out, key=lambda p: (p.role, p.name))
