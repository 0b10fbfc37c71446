"""Which files a PATH means, and their bytes (distributions ship .ko.xz and .ko.zst).

Only regular files are read (a FIFO named x.ko would block forever, a link to /dev/zero never ends),
and never more than MAX_MODULE bytes, compressed or not: a decompression bomb ends in a finding, with
memory bounded by the cap.
"""
import gzip
import io
import lzma
import os
import shutil
import subprocess
import threading
from pathlib import Path

from .. import inputs
from ..errors import UserError

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# The largest real modules (GPU drivers with debug info) are a few tens of MiB; 256 MiB is far beyond
# any module and bounds what one lint worker holds in memory.
MAX_MODULE = 256 << 20
_STREAM = 1 << 20


class Unreadable(Exception):
    """The file cannot be read or decompressed; the message is the reason."""


def expand(paths: list) -> list[Path]:
    out: list[str] = []
    for p in paths:
        p = os.path.abspath(p)
        if os.path.isdir(p):
            found = []
            for root, _dirs, names in os.walk(p):
                found.extend(os.path.join(root, n) for n in names if n.endswith(SUFFIXES))
            if not found:
                raise UserError(f"no kernel modules (.ko, .ko.xz, .ko.zst) under {p}")
            out.extend(sorted(found))
        elif os.path.lexists(p):
            out.append(p)
        else:
            raise UserError(f"no such file or directory: {p}")
    # the same file named twice is linted once (abspath, not realpath: resolving every symlink of
    # thousands of paths costs more than the cached lint itself)
    return [Path(p) for p in dict.fromkeys(out)]


def not_regular(st: os.stat_result) -> str | None:
    """Why a file with this stat is not read, or None for a regular file."""
    what = inputs.kind(st.st_mode)
    return f"is {what}, not a regular file" if what else None


def read_raw(path: Path | str) -> bytes:
    """The bytes of a regular file, at most MAX_MODULE of them (kmod.inputs: a FIFO or device swapped in
    after a stat cannot block or stream forever)."""
    data = read_head(path, MAX_MODULE + 1)
    if len(data) > MAX_MODULE:
        raise Unreadable(f"grew past {MAX_MODULE >> 20} MiB while being read")
    return data


def read_head(path: Path | str, limit: int) -> bytes:
    """At most `limit` bytes from the start of a regular file (see read_raw)."""
    try:
        return inputs.read_regular(path, limit, MAX_MODULE)
    except inputs.NotAFile as e:
        raise Unreadable(f"is {e.kind}, not a regular file") from None
    except inputs.TooLarge as e:
        raise Unreadable(f"is {e.size >> 20} MiB, more than the {MAX_MODULE >> 20} MiB any module has") from None
    except IsADirectoryError:
        raise Unreadable("is a directory, not a regular file") from None
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror}") from None


def _bomb() -> Unreadable:
    return Unreadable(f"decompresses to more than {MAX_MODULE >> 20} MiB: a decompression bomb, not a module")


def read_module(path: Path, raw: bytes | None = None) -> bytes:
    data = raw if raw is not None else read_raw(path)
    name = path.name
    try:
        if name.endswith(".xz"):
            d = lzma.LZMADecompressor()
            out = d.decompress(data, max_length=MAX_MODULE + 1)
            if len(out) > MAX_MODULE:
                raise _bomb()
            if not d.eof:
                raise Unreadable("truncated xz data")
            return out
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                return _bounded(f.read)
        if name.endswith(".zst"):
            return _unzstd(data)
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise Unreadable(f"cannot decompress: {e}") from None
    return data


def _bounded(read) -> bytes:
    """Read a stream in pieces, stopping past the cap (so a bomb never fills memory)."""
    buf = io.BytesIO()
    while True:
        piece = read(_STREAM)
        if not piece:
            return buf.getvalue()
        buf.write(piece)
        if buf.tell() > MAX_MODULE:
            raise _bomb()


def _unzstd(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
                return _bounded(r.read)
        except zstandard.ZstdError as e:
            raise Unreadable(f"cannot decompress: {e}") from None
    if not shutil.which("zstd"):
        raise Unreadable("is zstd-compressed and neither the zstd program nor the zstandard module is installed")
    p = subprocess.Popen(["zstd", "-dc", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        # zstd's stdin is fed from a thread while its output is read here, bounded
        feeder = threading.Thread(target=_feed, args=(p.stdin, data), daemon=True)
        feeder.start()
        out = _bounded(p.stdout.read)
        feeder.join()
        err = p.stderr.read(4096)
        rc = p.wait(timeout=120)
    except BaseException:
        p.kill()
        p.wait()
        raise
    finally:
        for s in (p.stdout, p.stderr):
            s.close()
    if rc != 0:
        raise Unreadable(f"cannot decompress: {err.decode(errors='replace').strip()[:200]}")
    return out


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError):
        pass           # zstd stopped reading (it failed, or we stopped it at the cap)
    finally:
        try:
            pipe.close()
        except OSError:
            pass
