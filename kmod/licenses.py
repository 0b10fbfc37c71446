"""The one license table (rules/licenses.toml): every MODULE_LICENSE string the kernel knows, whether it
is GPL-compatible, and what it becomes in rendered sources, the .rpm and debian/copyright."""
import tomllib
from dataclasses import dataclass
from functools import cache

from . import paths


@dataclass(frozen=True)
class License:
    name: str            # the MODULE_LICENSE string
    gpl_compatible: bool
    spdx: str            # SPDX expression: rendered sources, the .rpm's License:
    dep5: str            # debian/copyright short name
    common: str          # /usr/share/common-licenses file, "" when Debian has none


@cache
def table() -> dict[str, License]:
    data = tomllib.loads((paths.rules() / "licenses.toml").read_text())["license"]
    return {name: License(name, **fields) for name, fields in data.items()}


def get(name: str) -> License:
    """A string the table does not know is what the kernel makes of it: proprietary."""
    found = table().get(name)
    if found:
        return found
    ref = "LicenseRef-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in name)
    return License(name, False, ref, ref, "")


def gpl_compatible() -> frozenset[str]:
    return frozenset(n for n, lic in table().items() if lic.gpl_compatible)
