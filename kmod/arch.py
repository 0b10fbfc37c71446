"""Architectures, loaded from toolchains/arch/*.toml (one file each; adding an arch is a data change)."""
import platform
import tomllib
from dataclasses import dataclass, field
from functools import cache

from . import paths
from .errors import unsupported


@dataclass(frozen=True)
class Arch:
    name: str
    aliases: tuple[str, ...]
    make_arch: str
    gnu_triplet: str
    debian_arch: str
    kernel_flavour: str
    elf_machine: str
    vermagic_arch: str
    fpu_guard_begin: tuple[str, ...]
    fpu_guard_end: tuple[str, ...]
    qemu: dict = field(hash=False, compare=False)

    def cross_compile(self, build_debian_arch: str) -> str:
        """CROSS_COMPILE for a build running on `build_debian_arch` ("" when native)."""
        return "" if build_debian_arch == self.debian_arch else f"{self.gnu_triplet}-"

    def make_vars(self, build_debian_arch: str) -> list[str]:
        return [f"ARCH={self.make_arch}", f"CROSS_COMPILE={self.cross_compile(build_debian_arch)}"]


@cache
def all_arches() -> dict[str, Arch]:
    arches = {}
    for path in sorted((paths.toolchains() / "arch").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        data["aliases"] = tuple(data.get("aliases", ()))
        data["fpu_guard_begin"] = tuple(data["fpu_guard_begin"])
        data["fpu_guard_end"] = tuple(data["fpu_guard_end"])
        arches[data["name"]] = Arch(**data)
    return arches


def names() -> list[str]:
    return list(all_arches())


def get(name: str) -> Arch:
    for arch in all_arches().values():
        if name == arch.name or name in arch.aliases:
            return arch
    raise unsupported("architecture", name, names())


def by_elf_machine(machine: str) -> Arch | None:
    return next((a for a in all_arches().values() if a.elf_machine == machine), None)


def select(spec: str) -> list[Arch]:
    """`all`, one name, or a comma list."""
    if spec in ("all", "", None):
        return list(all_arches().values())
    return [get(part.strip()) for part in spec.split(",")]


def host_debian_arch() -> str:
    machine = platform.machine()
    for arch in all_arches().values():
        if machine == arch.name or machine in arch.aliases:
            return arch.debian_arch
    return machine
