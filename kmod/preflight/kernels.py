"""Which kind of kernel a host runs, measured against the pins: exactly a pinned one (its cells apply),
a Debian kernel of a pinned suite with another ABI or flavour (--auto-pin can lock and build exactly
it), or any other kernel (only dkms on the host can build for it)."""
import re
from dataclasses import dataclass

from .. import arch as archmod
from .. import pins as pinsmod

PINNED, DEBIAN, OTHER = "pinned", "debian", "other"


@dataclass(frozen=True)
class Kernel:
    kind: str
    release: str
    arch: archmod.Arch | None
    pin: pinsmod.Pin | None = None     # pinned: the pin; debian: the pin of its suite (the base of an auto-pin)
    abi: str = ""
    flavour: str = ""                  # uname -r after the ABI: amd64, cloud-amd64, rt-arm64...
    version: str = ""                  # Debian package version of the running kernel
    pin_flavour: str = ""              # pinned: the pin's flavour name (generic, cloud, rt)

    @property
    def auto_pin_name(self) -> str:
        return f"{self.pin.suite}-{self.release}" if self.pin else ""

    def describe(self) -> str:
        if self.kind == PINNED:
            return f"pinned kernel {self.pin.name}"
        if self.kind == DEBIAN:
            return f"Debian {self.pin.suite} kernel {self.release}, not pinned"
        return f"kernel {self.release} (not a Debian kernel of a pinned suite)"


def split_release(release: str, arch: archmod.Arch) -> tuple[str, str] | None:
    """'6.1.0-56-cloud-amd64' -> ('6.1.0-56', 'cloud-amd64'): Debian names a kernel ABI-[FEATURE-]FLAVOUR."""
    m = re.fullmatch(rf"(?P<abi>.+?)-(?P<flavour>(?:[a-z]+-)?{re.escape(arch.kernel_flavour)})", release)
    return (m["abi"], m["flavour"]) if m else None


def classify(release: str, machine: str, debian_version: str) -> Kernel:
    try:
        arch = archmod.get(machine)
    except Exception:   # an arch kmod does not build for: nothing of ours can match it
        return Kernel(OTHER, release, None)
    for pin in pinsmod.all_pins().values():
        for a, f in (pin.planned() if pin.locked else []):
            if a is arch and pin.has(a, f.name) and pin.release(a, f.name) == release:
                abi = pin.abi(a, f.name)
                return Kernel(PINNED, release, arch, pin, abi, release[len(abi) + 1:], debian_version, f.name)
    parts = split_release(release, arch)
    if parts and debian_version:
        abi, flavour = parts
        for pin in pinsmod.all_pins().values():
            if not pin.base and arch.name in pin.arches and re.match(pin.abi_regex, abi):
                return Kernel(DEBIAN, release, arch, pin, abi, flavour, debian_version)
    return Kernel(OTHER, release, arch, abi=parts[0] if parts else "", version=debian_version)
