"""Pinned kernels: toolchains/kernels/*.toml say what a pin is (suite, series, arches, flavours),
toolchains/kernels.lock says exactly which kernel ABI each arch and flavour of it resolved to and which
packages (name, version, sha256) that takes. Builds use the lock and nothing else.

Each arch x flavour of a pin is locked on its own: the newest ABI that downloads for it. Some arches'
newest ABIs are not on the mirror, and adding an arch must never drag another arch's ABI back.
"""
import json
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from . import arch as archmod
from . import datafile, inputs, paths
from . import flavour as flavourmod
from .errors import UserError, unsupported
from .schema import fits, parse

LOCK_NAME = "kernels.lock"
LOCK_FORMAT = 2
# Packages shared by the kernels of one ABI (and serving all arches of it): picked by ABI, not by arch.
SHARED_ROLES = ("headers-common", "kbuild")


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
    flavour: str = ""  # the kernel flavour it serves (headers, image), "" when any
    abi: str = ""      # the kernel ABI it belongs to, "" when none (busybox)

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
    flavours: tuple[str, ...] = (flavourmod.GENERIC,)
    kernels: dict = field(default_factory=dict, compare=False, hash=False)   # arch -> flavour -> ABI
    packages: tuple[Package, ...] = field(default=(), compare=False)
    # An auto-pin (`invoke preflight --auto-pin`): one exact kernel a host runs, locked on its own, with
    # the suite, compiler and kbuild of the pin it derives from (`base`); its one kernel is its generic
    # one, and `flavour` is the uname -r word(s) after its ABI ("cloud-amd64"), whatever they are.
    base: str = ""
    flavour: str = ""

    @property
    def locked(self) -> bool:
        return bool(self.kernels)

    def planned(self) -> list[tuple[archmod.Arch, flavourmod.Flavour]]:
        """Every arch x flavour this pin asks for (whether or not the mirror ships it)."""
        out = []
        for a in (archmod.get(n) for n in self.arches):
            out += [(a, f) for f in (flavourmod.get(n) for n in self.flavours) if f.applies_to(a)]
        return out

    def has(self, arch: archmod.Arch, flavour: str = flavourmod.GENERIC) -> bool:
        """Is this arch x flavour locked (the mirror ships it)?"""
        return flavour in self.kernels.get(arch.name, {})

    def abi(self, arch: archmod.Arch, flavour: str = flavourmod.GENERIC) -> str:
        abi = self.kernels.get(arch.name, {}).get(flavour)
        if not abi:
            raise UserError(f"the lock has no {flavour} kernel of {self.name} for {arch.name}",
                            "run `invoke toolchains --update`, or choose one `invoke toolchains` lists")
        return abi

    @property
    def abis(self) -> list[str]:
        """The distinct ABIs locked for this pin, in lock order."""
        out = []
        for flavours in self.kernels.values():
            out += [a for a in flavours.values() if a not in out]
        return out

    def label(self, flavour: str = flavourmod.GENERIC) -> str:
        """The kernel's name in cell ids and dist/ paths: the pin, or PIN-FLAVOUR beyond generic."""
        return self.name if flavour == flavourmod.GENERIC else f"{self.name}-{flavour}"

    def release(self, arch: archmod.Arch, flavour: str = flavourmod.GENERIC) -> str:
        """The kernel release (uname -r) of this pin on `arch` in `flavour`."""
        word = self.flavour if self.base else flavourmod.get(flavour).kernel_flavour(arch)
        return f"{self.abi(arch, flavour)}-{word}"

    def kdir(self, arch: archmod.Arch, flavour: str = flavourmod.GENERIC) -> str:
        return f"/usr/src/linux-headers-{self.release(arch, flavour)}"

    def packages_for(self, role: str, arch: archmod.Arch | None = None,
                     flavour: str = flavourmod.GENERIC) -> list[Package]:
        if role in SHARED_ROLES and arch is not None:
            abi = self.abi(arch, flavour)
            wanted = self.flavour_of(arch, flavour).common_package(abi)
            return [p for p in self.packages if p.role == role and p.abi in (abi, "")   # "": an auto-pin's
                    and (role != "headers-common" or p.name == wanted)]
        return [p for p in self.packages
                if p.role == role and (arch is None or p.for_arch in ("", arch.name))
                and (arch is None or p.flavour in ("", flavour))]

    def flavour_of(self, arch: archmod.Arch, flavour: str = flavourmod.GENERIC) -> flavourmod.Flavour:
        """The flavour's data; an auto-pin's is the one whose release word its kernel carries (an auto-pin
        of a host's rt-amd64 kernel is a "generic" cell of its own pin, and still an rt kernel)."""
        if self.base:
            return flavourmod.of_release(self.flavour, arch) or flavourmod.get(flavourmod.GENERIC)
        return flavourmod.get(flavour)

    def package(self, role: str, arch: archmod.Arch | None = None, flavour: str = flavourmod.GENERIC) -> Package:
        found = self.packages_for(role, arch, flavour)
        if not found:
            raise UserError(f"the lock has no {role} package for {self.name}"
                            + (f" on {arch.name} ({flavour})" if arch else ""),
                            "run `invoke toolchains --update`")
        return found[0]

    def lock_entry(self) -> dict:
        if self.base:
            a = self.arches[0]
            return {"abi": self.kernels[a][flavourmod.GENERIC], "base": self.base, "flavour": self.flavour,
                    "arches": list(self.arches), "packages": [p.__dict__ for p in self.packages]}
        return {"kernels": self.kernels, "packages": [p.__dict__ for p in self.packages]}


def lock_path() -> Path:
    return paths.toolchains() / LOCK_NAME


LOCK_HINT = "restore it from git or run `invoke toolchains --update`"


def read_lock() -> dict:
    """pin name -> {"kernels": {arch: {flavour: ABI}}, "packages": [...]} (an auto-pin's: "abi", "base",
    "flavour", "arches"), every entry checked for its shape (one line if not)."""
    path = lock_path()
    try:
        data = json.loads(inputs.read(path, "the lock", 256 * inputs.MIB, LOCK_HINT))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a valid lock ({e})", LOCK_HINT) from None
    pins = data.get("pins", {}) if isinstance(data, dict) else None
    if not isinstance(pins, dict):
        raise UserError(f"{path} is not a valid lock (no table of pins)", LOCK_HINT)
    for name, entry in pins.items():
        where = f"{path.name}: pins.{name}"
        kernels = entry.get("kernels", {}) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("abi", ""), str) \
                or not isinstance(entry.get("packages", []), list) or not isinstance(kernels, dict) \
                or not all(isinstance(f, dict) and all(isinstance(a, str) for a in f.values())
                           for f in kernels.values()):
            raise UserError(f"{where} is not a table with an abi or kernels (arch -> flavour -> ABI) and a "
                            f"list of packages", LOCK_HINT)
        for i, p in enumerate(entry.get("packages", []), 1):
            if fits(Package, p):
                continue
            try:
                parse(Package, p, f"{where}: package {i}")
            except UserError as e:
                raise UserError(e.message, LOCK_HINT) from None
    return pins


def _entry(data: dict, entry: dict) -> tuple[dict, tuple[Package, ...]]:
    """(kernels, packages) of a lock entry; a format-1 entry (one ABI for every arch) reads as generic."""
    packages = [dict(p) for p in entry.get("packages", [])]
    kernels = entry.get("kernels")
    if kernels is None and entry.get("abi"):
        kernels = {a: {flavourmod.GENERIC: entry["abi"]} for a in data["arches"]}
        for p in packages:
            p.setdefault("abi", entry["abi"] if p["role"] != "busybox" else "")
            p.setdefault("flavour", flavourmod.GENERIC if p["role"] in ("headers", "image") else "")
    return kernels or {}, tuple(Package(**p) for p in packages)


@cache
def all_pins() -> dict[str, Pin]:
    lock = read_lock()
    pins = {}
    for path in sorted((paths.toolchains() / "kernels").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for a in data["arches"]:
            archmod.get(a)  # unknown arch or flavour in a pin file is a data error: fail loudly
        for f in data.get("flavours", [flavourmod.GENERIC]):
            flavourmod.get(f)
        kernels, packages = _entry(data, lock.get(data["name"], {}))
        pins[data["name"]] = Pin(
            name=data["name"], suite=data["suite"], series=data["series"], abi_regex=data["abi_regex"],
            compiler=data["compiler"], kbuild_package=data["kbuild_package"], arches=tuple(data["arches"]),
            flavours=tuple(data.get("flavours", [flavourmod.GENERIC])), kernels=kernels, packages=packages)
    for name, entry in lock.items():
        base = pins.get(entry.get("base", "")) if isinstance(entry, dict) else None
        if base is not None and name not in pins:
            for a in entry["arches"]:
                archmod.get(a)
            pins[name] = Pin(name=name, suite=base.suite, series=base.series, abi_regex=base.abi_regex,
                             compiler=base.compiler, kbuild_package=base.kbuild_package,
                             arches=tuple(entry["arches"]), base=base.name, flavour=entry["flavour"],
                             kernels={a: {flavourmod.GENERIC: entry["abi"]} for a in entry["arches"]},
                             packages=tuple(Package(**p) for p in entry["packages"]))
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


def get_label(label: str) -> tuple[Pin, str]:
    """(pin, flavour) of a kernel label: PIN (generic) or PIN-FLAVOUR (bookworm-6.1-rt)."""
    if label in all_pins():
        return all_pins()[label], flavourmod.GENERIC
    for f in flavourmod.names():
        if label.endswith(f"-{f}") and label[:-len(f) - 1] in all_pins():
            return all_pins()[label[:-len(f) - 1]], f
    return get(label), flavourmod.GENERIC


def select(spec: str | None) -> list[Pin]:
    """`all`, one pin, or a comma list (`6.1,bookworm` is one pin)."""
    return datafile.select(all_pins(), spec, get, "--kernel")


def require_locked(pin: Pin) -> Pin:
    if not pin.locked:
        raise UserError(f"kernel {pin.name} is not in {lock_path()}", "run `invoke toolchains --update`")
    return pin


def write_lock(pins: dict[str, dict]) -> None:
    from .atomic import write_json
    write_json(lock_path(), {"format": LOCK_FORMAT,
                             "comment": "written by `invoke toolchains --update`; do not edit",
                             "pins": pins})
    all_pins.cache_clear()
