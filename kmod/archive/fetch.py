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
# A mirror that does not answer for a moment (a DNS lookup that fails once, a reset connection, a 503
# while it syncs) is asked again, as apt's Acquire::Retries does: seconds to wait before each new try.
RETRY_DELAYS = (1.0, 3.0, 9.0)


def _transient(e: BaseException) -> bool:
    """Worth another try: the network or the mirror failed for a moment. A 404, an unknown host name or
    a file:// path that is not there are answers, never retried."""
    import socket
    import urllib.error
    if isinstance(e, urllib.error.HTTPError):
        return e.code in (408, 429, 500, 502, 503, 504)
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    if isinstance(e, socket.gaierror):
        return e.errno == socket.EAI_AGAIN         # "Temporary failure in name resolution"
    return isinstance(e, (TimeoutError, ConnectionResetError, ConnectionAbortedError, socket.timeout))


def _with_retries(what: str, attempt, say=None):
    """attempt() until it succeeds or fails for good; each new try is said in one line."""
    import time
    for delay in (*RETRY_DELAYS, None):
        try:
            return attempt()
        except Exception as e:  # noqa: BLE001 - only a transient failure is tried again, the rest re-raised
            if delay is None or not _transient(e):
                raise
            (say or note)(f"{what}: {getattr(e, 'reason', None) or e}; trying again in {delay:.0f}s")
            time.sleep(delay)


def url_of(pkg: Package, mirror: mirrormod.Mirror | None = None) -> str:
    mirror = mirror or mirrormod.configured()
    base = mirror.security if pkg.archive == "security" else mirror.main
    return f"{base}/{pkg.filename}"


def cached_path(pkg: Package) -> Path:
    return paths.cache_dir() / "debs" / f"{pkg.sha256[:16]}_{pkg.basename}"


def sha256_stream(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def _stat_key(path: Path, sha256: str) -> str | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_ctime_ns} {sha256}\n"


def _index_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _remember(path: Path, sha256: str) -> None:
    """Record that `path` hashed to `sha256` at its current stat (the stat index, one line beside it)."""
    from .. import atomic
    key = _stat_key(path, sha256)
    if key:
        atomic.write_text(_index_path(path), key)


def verified(path: Path, sha256: str) -> bool:
    """True when the cached file still has `sha256`. The hash is skipped only while the file's size,
    mtime, inode and ctime are those recorded when it last hashed right (touching a file back to its old
    mtime still changes its ctime). Read through no link: a planted symlink is never followed."""
    from .. import nofollow
    key = _stat_key(path, sha256)
    if key is None:
        return False
    try:
        if _index_path(path).read_text() == key:
            return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        with os.fdopen(nofollow.open_regular(path.parent, path.name, "cached file"), "rb") as f:
            if sha256_stream(f) != sha256:
                return False
    except (nofollow.UnsafeFile, OSError):
        return False
    _remember(path, sha256)
    return True


def note(text: str) -> None:
    """A one-line note on stderr: a cache entry that is used again only after it was fetched anew."""
    import sys
    print(f"note: {text}", file=sys.stderr, flush=True)


def fetch(pkg: Package, progress=None, note=note) -> Path:
    """Return the cached .deb for `pkg`, downloading it when missing or no longer matching the lock (a
    corrupt or altered cache entry is fetched again, with a one-line note). A download whose sha256
    differs from the lock is an error, never a warning."""
    dest = cached_path(pkg)
    if verified(dest, pkg.sha256):
        return dest
    if os.path.lexists(dest):
        note(f"cached {pkg.basename} no longer matches the lock's sha256 (corrupt or altered); fetching it again")
        os.unlink(dest)
    import urllib.error  # only when downloading: a cached run should not pay for urllib's import
    import urllib.request
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = url_of(pkg)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dl.")
    os.close(fd)

    def download() -> str:
        # each try starts the file again: a connection cut half-way leaves no half in the hash
        h = hashlib.sha256()
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        return h.hexdigest()

    try:
        digest = _with_retries(f"downloading {pkg.basename}", download, note)
        if digest != pkg.sha256:
            raise UserError(f"sha256 mismatch for {pkg.basename}: lock says {pkg.sha256[:16]}..., "
                            f"mirror served {digest[:16]}...",
                            "the mirror changed under the lock; run `invoke toolchains --update` and review the diff")
        os.replace(tmp, dest)
        _remember(dest, pkg.sha256)
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
    def read() -> bytes:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return resp.read()
    try:
        return _with_retries(f"reading {url}", read)
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

    def head() -> bool:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status == 200
    try:
        return _with_retries(f"asking for {url}", head)
    except (urllib.error.URLError, OSError):
        return False
