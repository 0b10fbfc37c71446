"""`invoke toolchains --update`: find, for each arch and flavour of each pin, the newest ABI of the pinned
series that the mirror really serves, and lock the exact packages (name, version, sha256)."""
import dataclasses
import lzma
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from .. import arch as archmod
from .. import flavour as flavourmod
from .. import pins as pinsmod
from ..errors import InfraError, UserError
from . import debversion, fetch, release, toolchain
from . import mirror as mirrormod

FIELDS = ("Package", "Version", "Architecture", "Filename", "SHA256", "Size", "Depends", "Pre-Depends",
          "Provides", "Priority")


def parse_packages(text: str) -> list[dict]:
    from debian import deb822
    return [dict(p) for p in deb822.Packages.iter_paragraphs(text.splitlines(True), fields=list(FIELDS),
                                                              use_apt_pkg=False)
            if "Package" in p and "Filename" in p]


def _index(rel: release.Release, debian_arch: str, log, discarded: list[str]) -> list[dict]:
    """The packages of one verified index; [] when the suite has none for this arch or it did not verify."""
    path = f"main/binary-{debian_arch}/Packages.xz"
    data = rel.index(path, log)
    if data is None:
        if path in rel.hashes:
            discarded.append(rel.url(path))
        return []
    try:
        return parse_packages(lzma.decompress(data).decode("utf-8", "replace"))
    except lzma.LZMAError as e:
        raise UserError(f"{rel.url(f'main/binary-{debian_arch}/Packages.xz')} matches its Release but does "
                        f"not decompress ({e})") from None


class Catalogue:
    """Every version of every package of one suite (main, -updates, -security) for some arches, read only
    from indexes that the suite's signed Release vouches for (kmod.archive.release)."""

    def __init__(self, mirror: mirrormod.Mirror, suite: str, debian_arches: list[str], log=print):
        self.suite = suite
        self.by_name: dict[tuple[str, str], list[tuple[dict, str]]] = {}
        self.discarded: list[str] = []  # indexes that did not match their signed Release
        archives = mirror.archives(suite)
        with ThreadPoolExecutor(len(archives)) as pool:
            releases = list(pool.map(lambda a: release.verified(*a), archives))
        jobs = [(rel, a) for rel in releases for a in debian_arches]
        with ThreadPoolExecutor(len(jobs)) as pool:
            for (rel, a), recs in zip(jobs, pool.map(lambda j: _index(*j, log, self.discarded), jobs)):
                archive = "security" if rel.uri == mirror.security else "main"
                for r in recs:
                    self.by_name.setdefault((r["Package"], r["Architecture"]), []).append((r, archive))

    def versions(self, name: str, debian_arch: str) -> list[tuple[dict, str]]:
        """Every (record, archive) of a package, newest first."""
        cands = self.by_name.get((name, debian_arch)) or self.by_name.get((name, "all")) or []
        return sorted(cands, key=lambda c: debversion.key(c[0]["Version"]), reverse=True)

    def newest(self, name: str, debian_arch: str) -> pinsmod.Package | None:
        """The newest version of a package, as a Package that kmod.archive.fetch downloads and checks."""
        found = self.versions(name, debian_arch)
        return to_package(*found[0]) if found else None

    def abis(self, regex: str, flavour: str, debian_arch: str) -> set[str]:
        pat = re.compile(rf"^linux-headers-(.+)-{re.escape(flavour)}$")
        found = set()
        for name, a in self.by_name:
            m = pat.match(name)
            if m and a == debian_arch and re.match(regex, m.group(1)):
                found.add(m.group(1))
        return found


def _abi_key(abi: str):
    return [int(x) for x in re.findall(r"\d+", abi)]


# Proof that a package downloads. An index entry is not proof: some arm64 .debs are listed but answer
# 404. The headers are downloaded outright (small, and the image build needs them); the rest get a HEAD.
PREFETCH_ROLES = ("headers", "headers-common", "kbuild")


def _downloadable(pkg: pinsmod.Package, mirror: mirrormod.Mirror) -> bool:
    if pkg.role in PREFETCH_ROLES:
        try:
            fetch.fetch(pkg)
            return True
        except (InfraError, UserError):
            return False
    return fetch.reachable(fetch.url_of(pkg, mirror))


def to_package(rec: dict, archive: str, role: str = "", for_arch: str = "") -> pinsmod.Package:
    return pinsmod.Package(name=rec["Package"], version=rec["Version"], arch=rec["Architecture"], role=role,
                           filename=rec["Filename"], archive=archive, sha256=rec["SHA256"],
                           size=int(rec["Size"]), for_arch=for_arch)


def _package(cat: Catalogue, mirror: mirrormod.Mirror, name: str, debian_arch: str, role: str,
             for_arch: str, version: str = "") -> pinsmod.Package | None:
    """The newest version of `name` (or exactly `version`) that really downloads."""
    for rec, archive in cat.versions(name, debian_arch):
        if version and rec["Version"] != version:
            continue
        pkg = to_package(rec, archive, role, for_arch)
        if _downloadable(pkg, mirror):
            return pkg
    return None


KERNEL_ROLES = ("headers-common", "headers", "image")   # built from one source: one Debian version


def packages_for_abi(cat: Catalogue, mirror: mirrormod.Mirror, pin: pinsmod.Pin, abi: str,
                     build_arch: str, log=print, flavours: dict[str, str] | None = None,
                     version: str = "") -> list[pinsmod.Package] | None:
    """The packages of `abi` for every arch of the pin; with `flavours` (arch -> uname -r flavour, e.g.
    cloud-amd64) for those arches and flavours instead, and with `version` exactly that kernel build."""
    arches = [archmod.get(a) for a in (flavours or pin.arches)]
    chosen = {a.name: (flavours or {}).get(a.name, a.kernel_flavour) for a in arches}
    # The common headers each flavour's headers need (toolchains/flavours/*.toml common_headers: rt has
    # its own); a release word no flavour file makes is taken as the generic flavour's, as pins.py does.
    generic = flavourmod.get(flavourmod.GENERIC)
    commons = dict.fromkeys((flavourmod.of_release(chosen[a.name], a) or generic).common_package(abi) for a in arches)
    wanted = [*((name, "all", "headers-common", "") for name in commons),
              (pin.kbuild_package.format(abi=abi), build_arch, "kbuild", "")]
    for a in arches:
        wanted += [(f"linux-headers-{abi}-{chosen[a.name]}", a.debian_arch, "headers", a.name),
                   (a.image_package_name(f"{abi}-{chosen[a.name]}"), a.debian_arch, "image", a.name),
                   ("busybox-static", a.debian_arch, "busybox", a.name)]
    out = []
    for name, deb_arch, role, for_arch in wanted:
        exact = version if role in KERNEL_ROLES else ""
        pkg = _package(cat, mirror, name, deb_arch, role, for_arch, exact)
        if pkg is None:
            log(f"  {pin.name}: ABI {abi}: no downloadable {name}{' ' + exact if exact else ''} ({deb_arch})")
            return None
        out.append(pkg)
    return out


def resolve_kernel(base: pinsmod.Pin, arch: archmod.Arch, abi: str, flavour: str, version: str = "",
                   log=print) -> dict:
    """Exactly one Debian kernel of a pinned suite (a host's: ABI, flavour and Debian version) as a lock
    entry of its own, from the same verified indexes as every pin (`invoke preflight --auto-pin`)."""
    mirror = mirrormod.configured()
    build_arch = archmod.host_debian_arch()
    log(f"  {base.suite}: reading the package indexes for {abi}-{flavour} {version}".rstrip())
    cat = Catalogue(mirror, base.suite, sorted({arch.debian_arch, build_arch}), log)
    pkgs = packages_for_abi(cat, mirror, base, abi, build_arch, log, {arch.name: flavour}, version)
    if pkgs is None:
        raise UserError(f"the {base.suite} archives have no downloadable kernel {abi}-{flavour}"
                        f"{' ' + version if version else ''} for {arch.name}",
                        "the host runs a build the mirror no longer serves: upgrade its kernel, then preflight again")
    pin = dataclasses.replace(base, name=f"{base.suite}-{abi}-{flavour}", arches=(arch.name,),
                              flavours=(flavourmod.GENERIC,), kernels={arch.name: {flavourmod.GENERIC: abi}},
                              base=base.name, flavour=flavour, packages=tuple(pkgs))
    image = toolchain.lock(cat, pin, pkgs, build_arch)
    log(f"  {pin.name}: the image's base and toolchain locked ({len(image)} packages)")
    return {"abi": abi, "base": base.name, "flavour": flavour, "arches": [arch.name],
            "packages": [p.__dict__ for p in pkgs + image]}


class Resolver:
    """One pin's packages from one catalogue. What was proven to download (or not) is remembered, so
    the arches and flavours that share an ABI's common headers and kbuild ask once."""

    def __init__(self, cat: Catalogue, mirror: mirrormod.Mirror, pin: pinsmod.Pin, build_arch: str, log):
        self.cat, self.mirror, self.pin, self.build_arch, self.log = cat, mirror, pin, build_arch, log
        self._found: dict[tuple, pinsmod.Package | None] = {}
        self._lock = threading.Lock()

    def package(self, name: str, debian_arch: str, role: str, for_arch: str = "", flavour: str = "",
                abi: str = "") -> pinsmod.Package | None:
        """The newest version of `name` that really downloads."""
        key = (name, debian_arch)
        with self._lock:
            known = key in self._found
            found = self._found.get(key)
        if not known:
            found = None
            for rec, archive in self.cat.versions(name, debian_arch):
                pkg = to_package(rec, archive, role)
                if _downloadable(pkg, self.mirror):
                    found = pkg
                    break
            with self._lock:
                self._found[key] = found
        if found is None:
            return None
        return dataclasses.replace(found, role=role, for_arch=for_arch, flavour=flavour, abi=abi)

    def kernel(self, a: archmod.Arch, fl: flavourmod.Flavour) -> tuple[str, list[pinsmod.Package]] | None:
        """The newest ABI of the pin's series whose packages all download for this arch and flavour."""
        pin, kflavour = self.pin, fl.kernel_flavour(a)
        for abi in sorted(self.cat.abis(pin.abi_regex, kflavour, a.debian_arch), key=_abi_key, reverse=True):
            release = f"{abi}-{kflavour}"
            wanted = [(fl.common_package(abi), "all", "headers-common", "", ""),
                      (pin.kbuild_package.format(abi=abi), self.build_arch, "kbuild", "", ""),
                      (f"linux-headers-{release}", a.debian_arch, "headers", a.name, fl.name),
                      (a.image_package_name(release), a.debian_arch, "image", a.name, fl.name)]
            out = []
            for name, deb_arch, role, for_arch, flavour in wanted:
                pkg = self.package(name, deb_arch, role, for_arch, flavour, abi)
                if pkg is None:
                    self.log(f"  {pin.name}: {a.name}/{fl.name} ABI {abi}: no downloadable {name} ({deb_arch}); "
                             f"trying an older ABI")
                    break
                out.append(pkg)
            else:
                return abi, out
        return None


def resolve_pin(pin: pinsmod.Pin, mirror: mirrormod.Mirror, log=print) -> dict:
    """Lock each arch x flavour of `pin` on its own newest downloadable ABI. A generic kernel the mirror
    does not have is an error; another flavour it does not have is left out (and said so)."""
    build_arch = archmod.host_debian_arch()
    arches = [archmod.get(a) for a in pin.arches]
    log(f"  {pin.name}: reading the {pin.suite} package indexes")
    cat = Catalogue(mirror, pin.suite, sorted({a.debian_arch for a in arches} | {build_arch}), log)
    res = Resolver(cat, mirror, pin, build_arch, log)
    cells = pin.planned()
    with ThreadPoolExecutor(min(len(cells), 8)) as pool:
        found = list(pool.map(lambda c: res.kernel(*c), cells))
    kernels: dict[str, dict[str, str]] = {}
    packages: dict[tuple, pinsmod.Package] = {}
    for (a, fl), got in zip(cells, found):
        if got is None:
            if fl.is_generic:
                if cat.discarded:
                    raise UserError(f"no ABI matching {pin.abi_regex} downloads for {a.name} in {pin.name}, with "
                                    f"{len(cat.discarded)} index(es) discarded for not matching their signed "
                                    f"Release ({cat.discarded[0]})",
                                    "the mirror is mid-sync or tampered with; try again later or use another")
                raise UserError(f"no ABI matching {pin.abi_regex} downloads for {a.name} in {pin.name}",
                                "check the pin file and the mirror")
            log(f"  {pin.name}: no {fl.name} kernel of this series downloads for {a.name}: left out")
            continue
        abi, pkgs = got
        kernels.setdefault(a.name, {})[fl.name] = abi
        for p in pkgs:
            packages.setdefault((p.role, p.name, p.arch, p.for_arch, p.flavour, p.abi), p)
    for a in arches:
        bb = res.package("busybox-static", a.debian_arch, "busybox", a.name)
        if bb is None:
            raise UserError(f"no downloadable busybox-static for {a.debian_arch} in {pin.suite}",
                            "check the mirror")
        packages.setdefault(("busybox", bb.name, bb.arch, a.name, "", ""), bb)
    log(f"  {pin.name}: " + "; ".join(f"{a} {', '.join(f'{f} {abi}' for f, abi in fl.items())}"
                                      for a, fl in kernels.items()))
    kernel = list(packages.values())
    image = toolchain.lock(cat, pin, kernel, build_arch)
    log(f"  {pin.name}: the image's base and toolchain locked ({len(image)} packages)")
    return {"kernels": kernels, "packages": [p.__dict__ for p in kernel + image]}


def relock_tools(pin: pinsmod.Pin, mirror: mirrormod.Mirror, log=print) -> dict:
    """Lock `pin`'s base and toolchain anew, its kernel packages kept as they are locked."""
    build_arch = archmod.host_debian_arch()
    kernel = [p for p in pinsmod.require_locked(pin).packages if p.role not in ("base", "toolchain")]
    log(f"  {pin.name}: reading the {pin.suite} package indexes")
    cat = Catalogue(mirror, pin.suite, [build_arch], log)
    image = toolchain.lock(cat, pin, kernel, build_arch)
    log(f"  {pin.name}: the image's base and toolchain locked ({len(image)} packages), "
        f"ABIs {', '.join(pin.abis)} kept")
    return {**pin.lock_entry(), "packages": [p.__dict__ for p in kernel + image]}


def update(selected: list[pinsmod.Pin], log=print, tools_only: bool = False) -> dict[str, dict]:
    """Resolve `selected` pins and rewrite the lock; returns pin -> arch -> flavour -> ABI. With
    `tools_only`, only the images' base and toolchain are locked anew."""
    mirror = mirrormod.configured()
    lock = pinsmod.read_lock()
    def one(p: pinsmod.Pin) -> dict:
        if p.base:   # an auto-pin stays exactly the kernel it was made for
            a = archmod.get(p.arches[0])
            return resolve_kernel(pinsmod.get(p.base), a, p.abi(a), p.flavour, p.package("image", a).version, log)
        return (relock_tools if tools_only else resolve_pin)(p, mirror, log)
    with ThreadPoolExecutor(len(selected)) as pool:
        results = list(pool.map(one, selected))
    for pin, res in zip(selected, results):
        lock[pin.name] = res
    pinsmod.write_lock(lock)
    return {p.name: r["kernels"] if "kernels" in r else {r["arches"][0]: {flavourmod.GENERIC: r["abi"]}}
            for p, r in zip(selected, results)}
