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
import stat
import subprocess
import threading
from pathlib import Path

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
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"is {kind}, not a regular file"


def read_raw(path: Path | str) -> bytes:
    """The bytes of a regular file, at most MAX_MODULE of them. Opened non-blocking and checked on the
    open descriptor, so a FIFO or device swapped in after a stat cannot block or stream forever."""
    data = read_head(path, MAX_MODULE + 1)
    if len(data) > MAX_MODULE:
        raise Unreadable(f"grew past {MAX_MODULE >> 20} MiB while being read")
    return data


def read_head(path: Path | str, limit: int) -> bytes:
    """At most `limit` bytes from the start of a regular file (see read_raw)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        why = not_regular(st)
        if why:
            raise Unreadable(why)
        if st.st_size > MAX_MODULE:
            raise Unreadable(f"is {st.st_size >> 20} MiB, more than the {MAX_MODULE >> 20} MiB any module has")
        chunks, got = [], 0
        # the whole file in one read(2), with a byte to spare to see that it did not grow: asking for
        # `limit` (256 MiB) each time made the kernel map and unmap that much for every module, four
        # times the system time of the reads themselves over the 4,023 in-tree modules
        size = min(limit, st.st_size + 1)
        try:
            while got < limit:
                piece = f.read(min(limit - got, size if not chunks else _STREAM))   # a short one is not the end
                if not piece:
                    break
                chunks.append(piece)
                got += len(piece)
        except OSError as e:
            raise Unreadable(f"cannot read: {e.strerror}") from None
    return b"".join(chunks)


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
