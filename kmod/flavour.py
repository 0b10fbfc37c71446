"""Kernel flavours (generic, cloud, rt), loaded from toolchains/flavours/*.toml: what a flavour adds to a
kernel release, which common headers it needs and which arches Debian builds it for. A pin locks each
of its flavours per arch like any other package; adding a flavour is a data change."""
from dataclasses import dataclass
from functools import cache

from . import datafile, paths
from .arch import Arch

GENERIC = "generic"


@dataclass(frozen=True)
class Flavour:
    name: str
    description: str
    release: str                  # "{arch}", "cloud-{arch}": the flavour part of a kernel release
    common_headers: str           # "linux-headers-{abi}-common"
    arches: tuple[str, ...]       # the arches Debian builds it for (empty: every arch)
    boot_append: tuple[str, ...] = ()   # kernel command line words for every QEMU boot of this flavour

    def applies_to(self, arch: Arch) -> bool:
        return not self.arches or arch.name in self.arches

    def kernel_flavour(self, arch: Arch) -> str:
        """The flavour word of package names and uname -r: amd64, cloud-amd64, rt-arm64."""
        return self.release.format(arch=arch.kernel_flavour)

    def common_package(self, abi: str) -> str:
        return self.common_headers.format(abi=abi)

    @property
    def is_generic(self) -> bool:
        return self.name == GENERIC


def _build(d: dict, _path) -> Flavour:
    return Flavour(name=d["name"], description=d.get("description", ""), release=d["release"],
                   common_headers=d["common_headers"], arches=tuple(d.get("arches", ())),
                   boot_append=tuple(d.get("boot_append", ())))


@cache
def all_flavours() -> dict[str, Flavour]:
    return datafile.load_folder(paths.toolchains() / "flavours", _build)


def names() -> list[str]:
    return list(all_flavours())


def get(name: str) -> Flavour:
    return datafile.lookup(all_flavours(), name, "flavour", lambda f: ())


def of_release(word: str, arch: Arch) -> Flavour | None:
    """The flavour whose release word on `arch` is `word` (uname -r after the ABI: amd64, rt-arm64), as a
    host's kernel names it; None when no flavour file makes that word."""
    return next((f for f in all_flavours().values() if f.applies_to(arch) and f.kernel_flavour(arch) == word), None)


def select(spec: str | None) -> list[Flavour]:
    """`generic` by default; `all`, one name or a comma list otherwise."""
    return datafile.select(all_flavours(), spec or GENERIC, get)
