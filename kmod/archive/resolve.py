"""`invoke toolchains --update`: find the newest ABI of each pinned series that the mirror really serves
for every arch of the pin, and lock the exact packages (name, version, sha256)."""
import lzma
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .. import arch as archmod
from .. import pins as pinsmod
from ..errors import InfraError, UserError
from . import debversion, fetch
from . import mirror as mirrormod

FIELDS = ("Package", "Version", "Architecture", "Filename", "SHA256", "Size")


def parse_packages(text: str) -> list[dict]:
    out = []
    for stanza in text.split("\n\n"):
        rec = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                k, _, v = line.partition(":")
                if k in FIELDS:
                    rec[k] = v.strip()
        if "Package" in rec and "Filename" in rec:
            out.append(rec)
    return out


def _index(uri: str, suite: str, debian_arch: str) -> list[dict]:
    url = f"{uri}/dists/{suite}/main/binary-{debian_arch}/Packages.xz"
    try:
        with urllib.request.urlopen(url, timeout=fetch.TIMEOUT) as resp:
            return parse_packages(lzma.decompress(resp.read()).decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []  # e.g. a suite without -updates content
        raise InfraError(f"mirror answered HTTP {e.code} for {url}", "check KMOD_MIRROR") from None
    except (urllib.error.URLError, OSError) as e:
        raise InfraError(f"cannot read {url}: {getattr(e, 'reason', e)}", "check the network or set KMOD_MIRROR") from None


class Catalogue:
    """Every version of every package of one suite (main, -updates, -security) for some arches."""

    def __init__(self, mirror: mirrormod.Mirror, suite: str, debian_arches: list[str]):
        self.by_name: dict[tuple[str, str], list[tuple[dict, str]]] = {}
        jobs = [(uri, s, a) for uri, s in mirror.archives(suite) for a in debian_arches]
        with ThreadPoolExecutor(len(jobs)) as pool:
            for (uri, s, a), recs in zip(jobs, pool.map(lambda j: _index(*j), jobs)):
                archive = "security" if uri == mirror.security else "main"
                for r in recs:
                    self.by_name.setdefault((r["Package"], r["Architecture"]), []).append((r, archive))

    def versions(self, name: str, debian_arch: str) -> list[tuple[dict, str]]:
        """Every (record, archive) of a package, newest first."""
        cands = self.by_name.get((name, debian_arch)) or self.by_name.get((name, "all")) or []
        return sorted(cands, key=lambda c: debversion.key(c[0]["Version"]), reverse=True)

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


def _package(cat: Catalogue, mirror: mirrormod.Mirror, name: str, debian_arch: str, role: str,
             for_arch: str) -> pinsmod.Package | None:
    """The newest version of `name` that really downloads."""
    for rec, archive in cat.versions(name, debian_arch):
        pkg = pinsmod.Package(name=rec["Package"], version=rec["Version"], arch=rec["Architecture"], role=role,
                              filename=rec["Filename"], archive=archive, sha256=rec["SHA256"],
                              size=int(rec["Size"]), for_arch=for_arch)
        if _downloadable(pkg, mirror):
            return pkg
    return None


def packages_for_abi(cat: Catalogue, mirror: mirrormod.Mirror, pin: pinsmod.Pin, abi: str,
                     build_arch: str, log=print) -> list[pinsmod.Package] | None:
    arches = [archmod.get(a) for a in pin.arches]
    wanted = [(f"linux-headers-{abi}-common", "all", "headers-common", ""),
              (pin.kbuild_package.format(abi=abi), build_arch, "kbuild", "")]
    for a in arches:
        wanted += [(f"linux-headers-{abi}-{a.kernel_flavour}", a.debian_arch, "headers", a.name),
                   (f"linux-image-{abi}-{a.kernel_flavour}-unsigned", a.debian_arch, "image", a.name),
                   ("busybox-static", a.debian_arch, "busybox", a.name)]
    out = []
    for name, deb_arch, role, for_arch in wanted:
        pkg = _package(cat, mirror, name, deb_arch, role, for_arch)
        if pkg is None:
            log(f"  {pin.name}: ABI {abi}: no downloadable {name} ({deb_arch}); trying an older ABI")
            return None
        out.append(pkg)
    return out


def resolve_pin(pin: pinsmod.Pin, mirror: mirrormod.Mirror, log=print) -> dict:
    build_arch = archmod.host_debian_arch()
    arches = [archmod.get(a) for a in pin.arches]
    log(f"  {pin.name}: reading the {pin.suite} package indexes")
    cat = Catalogue(mirror, pin.suite, sorted({a.debian_arch for a in arches} | {build_arch}))
    common = set.intersection(*(cat.abis(pin.abi_regex, a.kernel_flavour, a.debian_arch) for a in arches))
    for abi in sorted(common, key=_abi_key, reverse=True):
        pkgs = packages_for_abi(cat, mirror, pin, abi, build_arch, log)
        if pkgs is not None:
            log(f"  {pin.name}: ABI {abi} downloads for {', '.join(a.name for a in arches)}")
            return {"abi": abi, "packages": [p.__dict__ for p in pkgs]}
    raise UserError(f"no ABI matching {pin.abi_regex} downloads for every arch of {pin.name}",
                    "check the pin file and the mirror")


def update(selected: list[pinsmod.Pin], log=print) -> dict[str, str]:
    """Resolve `selected` pins and rewrite the lock; returns pin -> ABI."""
    mirror = mirrormod.configured()
    lock = pinsmod.read_lock()
    with ThreadPoolExecutor(len(selected)) as pool:
        results = list(pool.map(lambda p: resolve_pin(p, mirror, log), selected))
    for pin, res in zip(selected, results):
        lock[pin.name] = res
    pinsmod.write_lock(lock)
    return {p.name: r["abi"] for p, r in zip(selected, results)}
