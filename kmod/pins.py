"""Pinned kernels: toolchains/kernels/*.toml say what a pin is, toolchains/kernels.lock says exactly
which packages (name, version, sha256) it resolved to. Builds use the lock and nothing else."""
import json
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from . import arch as archmod
from . import datafile, paths
from .errors import UserError, unsupported
from .schema import parse

LOCK_NAME = "kernels.lock"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str          # dpkg architecture of the .deb ("all", "amd64", "arm64")
    role: str          # headers-common, kbuild, headers, image, busybox
    filename: str      # path below the archive base URI
    archive: str       # "main" or "security": which mirror base serves it
    sha256: str
    size: int
    for_arch: str = "" # kmod arch name the package serves, "" when it serves all

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Pin:
    name: str
    suite: str
    series: str
    abi_regex: str
    compiler: str
    kbuild_package: str
    arches: tuple[str, ...]
    abi: str = ""
    packages: tuple[Package, ...] = field(default=(), compare=False)
    # An auto-pin (`invoke preflight --auto-pin`): one exact kernel a host runs, locked on its own, with
    # the suite, compiler and kbuild of the pin it derives from (`base`) and its own flavour.
    base: str = ""
    flavour: str = ""   # uname -r after the ABI ("cloud-amd64"); "" means the arch's default flavour

    @property
    def locked(self) -> bool:
        return bool(self.abi)

    def release(self, arch: archmod.Arch) -> str:
        """The kernel release (uname -r) of this pin on `arch`."""
        return f"{self.abi}-{self.flavour or arch.kernel_flavour}"

    def kdir(self, arch: archmod.Arch) -> str:
        return f"/usr/src/linux-headers-{self.release(arch)}"

    def packages_for(self, role: str, arch: archmod.Arch | None = None) -> list[Package]:
        return [p for p in self.packages
                if p.role == role and (arch is None or p.for_arch in ("", arch.name))]

    def package(self, role: str, arch: archmod.Arch | None = None) -> Package:
        found = self.packages_for(role, arch)
        if not found:
            raise UserError(f"the lock has no {role} package for {self.name}"
                            + (f" on {arch.name}" if arch else ""),
                            "run `invoke toolchains --update`")
        return found[0]

    def lock_entry(self) -> dict:
        entry = {"abi": self.abi, "packages": [p.__dict__ for p in self.packages]}
        if self.base:
            entry.update(base=self.base, flavour=self.flavour, arches=list(self.arches))
        return entry


def lock_path() -> Path:
    return paths.toolchains() / LOCK_NAME


LOCK_HINT = "restore it from git or run `invoke toolchains --update`"


def read_lock() -> dict:
    """pin name -> {"abi": ..., "packages": [...]}, every entry checked for its shape (one line if not)."""
    path = lock_path()
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a valid lock ({e})", LOCK_HINT) from None
    pins = data.get("pins", {}) if isinstance(data, dict) else None
    if not isinstance(pins, dict):
        raise UserError(f"{path} is not a valid lock (no table of pins)", LOCK_HINT)
    for name, entry in pins.items():
        where = f"{path.name}: pins.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("abi", ""), str) \
                or not isinstance(entry.get("packages", []), list):
            raise UserError(f"{where} is not a table with an abi and a list of packages", LOCK_HINT)
        for i, p in enumerate(entry.get("packages", []), 1):
            try:
                parse(Package, p, f"{where}: package {i}")
            except UserError as e:
                raise UserError(e.message, LOCK_HINT) from None
    return pins


@cache
def all_pins() -> dict[str, Pin]:
    lock = read_lock()
    pins = {}
    for path in sorted((paths.toolchains() / "kernels").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for a in data["arches"]:
            archmod.get(a)  # unknown arch in a pin file is a data error: fail loudly
        entry = lock.get(data["name"], {})
        pins[data["name"]] = Pin(
            name=data["name"], suite=data["suite"], series=data["series"], abi_regex=data["abi_regex"],
            compiler=data["compiler"], kbuild_package=data["kbuild_package"], arches=tuple(data["arches"]),
            abi=entry.get("abi", ""), packages=tuple(Package(**p) for p in entry.get("packages", [])))
    for name, entry in lock.items():
        base = pins.get(entry.get("base", "")) if isinstance(entry, dict) else None
        if base is not None and name not in pins:
            for a in entry["arches"]:
                archmod.get(a)
            pins[name] = Pin(name=name, suite=base.suite, series=base.series, abi_regex=base.abi_regex,
                             compiler=base.compiler, kbuild_package=base.kbuild_package,
                             arches=tuple(entry["arches"]), abi=entry["abi"], base=base.name,
                             flavour=entry["flavour"], packages=tuple(Package(**p) for p in entry["packages"]))
    return pins


def names() -> list[str]:
    return list(all_pins())


def get(name: str) -> Pin:
    pins = all_pins()
    if name in pins:
        return pins[name]
    # Let people say the series ("6.1") or the suite ("bookworm") when that is unambiguous.
    matches = [p for p in pins.values() if name in (p.series, p.suite) and not p.base]
    if len(matches) == 1:
        return matches[0]
    raise unsupported("kernel", name, names())


def select(spec: str | None) -> list[Pin]:
    """`all`, one pin, or a comma list (`6.1,bookworm` is one pin)."""
    return datafile.select(all_pins(), spec, get, "--kernel")


def require_locked(pin: Pin) -> Pin:
    if not pin.locked:
        raise UserError(f"kernel {pin.name} is not in {lock_path()}", "run `invoke toolchains --update`")
    return pin


def write_lock(pins: dict[str, dict]) -> None:
    from .atomic import write_json
    write_json(lock_path(), {"format": 1, "comment": "written by `invoke toolchains --update`; do not edit",
                             "pins": pins})
    all_pins.cache_clear()
