"""Write files so that a reader never sees half of one: a temp file in the same folder, written, given
the mode the umask allows (like any tool: `mode` is what open(2) would be asked for), then renamed over
the old one. A failure (a full disk, a signal) leaves the old file and no temp. Records (the manifest,
the lock: write_json) are also flushed to disk before the rename, so that a crash cannot leave a renamed
but empty record; artifacts are not, as a lost one is only rebuilt (its record then disagrees)."""
import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it (os.umask() would, for every thread at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # no /proc: at import time, before any thread starts
    os.umask(old)
    return old


UMASK = _umask()


def _replace(tmp: str, path: Path, mode: int) -> None:
    os.chmod(tmp, mode & 0o7777 & ~UMASK)
    os.replace(tmp, path)


def _named(e: OSError, path: Path) -> OSError:
    """A write error that says which file (a full disk reports none)."""
    return e if e.filename else OSError(e.errno, e.strerror, str(path))


def write_bytes(path: Path, data: bytes, mode: int = 0o666, durable: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        _replace(tmp, path, mode)
    except OSError as e:
        _unlink(tmp)
        raise _named(e, path) from None
    except BaseException:
        _unlink(tmp)
        raise


def write_text(path: Path, text: str, mode: int = 0o666, durable: bool = False) -> None:
    write_bytes(path, text.encode(), mode, durable)


def write_json(path: Path, obj) -> None:
    """A record (the manifest, the lock): on disk before it replaces the old one."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", durable=True)


def copy_file(src: Path, dst: Path) -> None:
    """Copy with the source's permission bits, less the umask (as cp does)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with open(src, "rb") as s, os.fdopen(fd, "wb") as d:
            shutil.copyfileobj(s, d)
            mode = os.fstat(s.fileno()).st_mode
        _replace(tmp, dst, mode & 0o777)
    except OSError as e:
        _unlink(tmp)
        raise _named(e, dst) from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def replace_dir(staging: Path, dst: Path) -> None:
    """Swap a fully written staging folder into place."""
    dst = Path(dst)
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(staging, dst)
    if old.exists():
        shutil.rmtree(old)
