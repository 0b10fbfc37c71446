"""The program's name shadows nothing on a Debian host and is free on PyPI, checked where the facts are:
the mirror's Contents index of each Debian suite kmod supports (what apt-file reads: every file of every
package, signature and hash verified), and the package index pip uses. `kmod`, the name left behind,
is found by the same checks: they see what they must."""
import gzip
import re
import subprocess
import sys

import pytest

from kmod import PROGRAM
from kmod import pins as pinsmod
from kmod.archive import mirror, release

pytestmark = pytest.mark.integration
COMMAND = re.compile(rb"^(?:usr/)?(?:local/)?(?:s?bin|games)/([^/\s]+)\s", re.M)  # a command on PATH
HOST_SUITE = "bookworm"  # this machine's (and CI's) Debian: its index must verify


COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")


def commands(suite: str, log) -> set[bytes] | None:
    """Every command name the suite's archive installs (amd64; arch-all packages included; every component
    the suite has), or None when the mirror serves main's Contents index unmatched by its signed Release."""
    rel = release.verified(mirror.configured().main, suite)
    found = set()
    for component in COMPONENTS:
        path = f"{component}/Contents-amd64.gz"
        data = rel.index(path, log=log)
        if data is None and component == "main":
            return None
        if data is not None:
            found |= set(COMMAND.findall(gzip.decompress(data)))
    return found


def test_no_debian_package_ships_the_command():
    notes, checked = [], {}
    for suite in sorted({p.suite for p in pinsmod.all_pins().values()}):
        checked[suite] = commands(suite, notes.append)
    verified = {s: names for s, names in checked.items() if names is not None}
    assert HOST_SUITE in verified, notes
    for suite, names in verified.items():
        assert b"kmod" in names, f"{suite}: the check should see Debian's own kmod"
        assert PROGRAM.encode() not in names, f"{suite}: a Debian package ships a command named {PROGRAM}"
    print(f"{PROGRAM}: in no Contents index of {', '.join(sorted(verified))}; not verifiable now: "
          f"{', '.join(sorted(set(checked) - set(verified))) or 'none'} {notes}")


def pypi(name: str) -> subprocess.CompletedProcess:
    # --pre: a project with pre-releases only is taken too
    return subprocess.run([sys.executable, "-m", "pip", "index", "versions", "--pre", "--disable-pip-version-check",
                           name], capture_output=True, text=True, timeout=120)


def test_the_distribution_name_is_free_on_pypi():
    taken = pypi("kmod")
    assert taken.returncode == 0 and "kmod (" in taken.stdout, f"the package index did not answer: {taken.stderr}"
    # the name, and the spellings PyPI treats as too close to register beside it
    for name in (PROGRAM, "kmod-kit", "kmod_kit", "kmod.kit"):
        free = pypi(name)
        assert free.returncode != 0 and "No matching distribution" in free.stderr, (name, free.stdout)
