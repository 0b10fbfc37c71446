"""Download locked .debs from the mirror into the cache, checking each sha256 against the lock."""
import hashlib
import os
import tempfile
from pathlib import Path

from .. import paths
from ..errors import InfraError, UserError
from ..pins import Package
from . import mirror as mirrormod

TIMEOUT = 60


def url_of(pkg: Package, mirror: mirrormod.Mirror | None = None) -> str:
    mirror = mirror or mirrormod.configured()
    base = mirror.security if pkg.archive == "security" else mirror.main
    return f"{base}/{pkg.filename}"


def cached_path(pkg: Package) -> Path:
    return paths.cache_dir() / "debs" / f"{pkg.sha256[:16]}_{pkg.basename}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(pkg: Package, progress=None) -> Path:
    """Return the cached .deb for `pkg`, downloading it once. A sha256 mismatch is an error, never a warning."""
    dest = cached_path(pkg)
    if dest.exists():
        return dest
    import urllib.error  # only when downloading: a cached run should not pay for urllib's import
    import urllib.request
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = url_of(pkg)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dl.")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        if h.hexdigest() != pkg.sha256:
            raise UserError(f"sha256 mismatch for {pkg.basename}: lock says {pkg.sha256[:16]}..., "
                            f"mirror served {h.hexdigest()[:16]}...",
                            "the mirror changed under the lock; run `invoke toolchains --update` and review the diff")
        os.replace(tmp, dest)
        return dest
    except urllib.error.HTTPError as e:
        raise InfraError(f"cannot download {pkg.basename}: HTTP {e.code} from {url}",
                         "the locked version left the mirror; run `invoke toolchains --update`") from None
    except (urllib.error.URLError, OSError) as e:
        raise InfraError(f"cannot download {pkg.basename} from {url}: {getattr(e, 'reason', e)}",
                         "check the network or set KMOD_MIRROR") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_url(url: str) -> bytes | None:
    """The bytes at `url` (an index, a Release), or None when the mirror has no such file. Callers
    check what they read (kmod.archive.release); this only downloads."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise InfraError(f"mirror answered HTTP {e.code} for {url}", "check KMOD_MIRROR") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError):  # file:// mirrors
            return None
        raise InfraError(f"cannot read {url}: {e.reason}", "check the network or set KMOD_MIRROR") from None
    except OSError as e:
        raise InfraError(f"cannot read {url}: {e}", "check the network or set KMOD_MIRROR") from None


def reachable(url: str) -> bool:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
