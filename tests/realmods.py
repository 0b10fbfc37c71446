"""Real third-party module sources as Debian ships them, for tests: the `*-dkms` packages and the
kernel's own samples (from linux-source-SERIES), fetched from the mirror at test time, never copied
into the repository.

    mods = RealModules()                                  # one per session: it keeps the indexes it read
    src = mods.dkms_source("ddcci-dkms", "bookworm")      # .../usr/src/ddcci-0.4.2
    kprobes = mods.kernel_samples("bookworm", "6.1", "kprobes")

A package is looked up in the suite's indexes (main, -updates, -security) through kmod.archive (the
resolver's Catalogue), downloaded once into KMOD_CACHE by kmod.archive.fetch (its sha256 checked
against the index) and unpacked once below KMOD_CACHE/realmods/, keyed by that sha256. The unpacked
trees are shared by every test: copy one before changing it.
"""
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path

from kmod import paths
from kmod.archive import fetch, resolve
from kmod.archive import mirror as mirrormod
from kmod.pins import Package

ARCH = "amd64"  # *-dkms and linux-source packages are Architecture: all; any arch's index lists them


class RealModules:
    def __init__(self, log=print):
        self._catalogues: dict[str, resolve.Catalogue] = {}
        self._lock = threading.Lock()
        self.log = log

    def package(self, name: str, suite: str) -> Package:
        """The newest `name` in `suite`'s archives."""
        with self._lock:
            if suite not in self._catalogues:
                self._catalogues[suite] = resolve.Catalogue(mirrormod.configured(), suite, [ARCH], log=lambda s: None)
            cat = self._catalogues[suite]
        pkg = cat.newest(name, ARCH)
        if pkg is None:
            raise LookupError(f"{suite} has no package {name}")
        return pkg

    def deb(self, name: str, suite: str) -> Path:
        pkg = self.package(name, suite)
        if not fetch.cached_path(pkg).exists():
            self.log(f"realmods: downloading {pkg.basename} ({pkg.size // 1024} KiB)")
        return fetch.fetch(pkg)

    def unpacked(self, name: str, suite: str) -> Path:
        """The whole .deb unpacked (dpkg-deb -x) into the cache."""
        pkg = self.package(name, suite)
        return _once(_dest(pkg), lambda staging: _dpkg_x(self.deb(name, suite), staging))

    def dkms_source(self, name: str, suite: str) -> Path:
        """The DKMS source tree a `*-dkms` package installs: its one folder below /usr/src."""
        trees = [d for d in (self.unpacked(name, suite) / "usr" / "src").iterdir() if d.is_dir()]
        if len(trees) != 1:
            raise LookupError(f"{name} ships {len(trees)} folders below /usr/src, expected one")
        return trees[0]

    def kernel_samples(self, suite: str, series: str, sample: str) -> Path:
        """samples/SAMPLE of the kernel source that `suite` ships for `series` (linux-source-SERIES)."""
        name = f"linux-source-{series}"
        pkg = self.package(name, suite)

        def extract(staging: Path):
            self.log(f"realmods: unpacking samples/{sample} from {pkg.basename}")
            _tar_member(self.deb(name, suite), f"usr/src/linux-source-{series}.tar.xz",
                        f"linux-source-{series}/samples/{sample}/", staging)

        return _once(_dest(pkg, f"samples-{sample}"), extract) / f"linux-source-{series}" / "samples" / sample


def _dest(pkg: Package, what: str = "deb") -> Path:
    return paths.cache_dir() / "realmods" / f"{pkg.sha256[:16]}_{pkg.name}_{what}"


def _once(dest: Path, make) -> Path:
    """`dest`, made by `make(staging)` into a staging folder and renamed into place (a reader never sees
    half of it; of two racing writers the first rename wins)."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        make(staging)
        try:
            os.rename(staging, dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _dpkg_x(deb: Path, staging: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, capture_output=True)


def _tar_member(deb: Path, inner: str, prefix: str, staging: Path) -> None:
    """Extract the members below `prefix` of the tarball `inner` inside the .deb, streaming: the kernel
    source tarball is over a gigabyte unpacked, of which a sample is a few kilobytes."""
    outer = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=outer.stdout, mode="r|") as debtar:
            for member in debtar:
                if member.name.lstrip("./") != inner:
                    continue
                with tarfile.open(fileobj=debtar.extractfile(member), mode="r|xz") as src:
                    seen = False
                    for m in src:
                        if m.name.startswith(prefix) and (m.isfile() or m.isdir()):
                            src.extract(m, staging, filter="data")
                            seen = True
                        elif seen:
                            break  # members of one folder are contiguous: the rest is not needed
                if not seen:
                    raise LookupError(f"{deb.name}: {inner} has no {prefix}")
                return
        raise LookupError(f"{deb.name} has no {inner}")
    finally:
        outer.kill()
        outer.wait()
