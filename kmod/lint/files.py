"""Which files a PATH means, and their bytes (distributions ship .ko.xz and .ko.zst)."""
import gzip
import lzma
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import UserError

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
MAX_MODULE = 1 << 30    # a decompressed module larger than 1 GiB is a bomb, not a module


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
        elif os.path.exists(p):
            out.append(p)
        else:
            raise UserError(f"no such file or directory: {p}")
    # the same file named twice is linted once (abspath, not realpath: resolving every symlink of
    # thousands of paths costs more than the cached lint itself)
    return [Path(p) for p in dict.fromkeys(out)]


def read_module(path: Path, raw: bytes | None = None) -> bytes:
    try:
        data = raw if raw is not None else path.read_bytes()
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror}") from None
    name = path.name
    try:
        if name.endswith(".xz"):
            d = lzma.LZMADecompressor()
            out = d.decompress(data, max_length=MAX_MODULE)
            if not d.eof:
                raise Unreadable("truncated or oversized xz data")
            return out
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=__import__("io").BytesIO(data)) as f:
                return f.read(MAX_MODULE)
        if name.endswith(".zst"):
            return _unzstd(data)
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise Unreadable(f"cannot decompress: {e}") from None
    return data


def _unzstd(data: bytes) -> bytes:
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_MODULE)
    except ImportError:
        pass
    except Exception as e:  # zstandard.ZstdError
        raise Unreadable(f"cannot decompress: {e}") from None
    if not shutil.which("zstd"):
        raise Unreadable("is zstd-compressed and neither the zstd program nor the zstandard module is installed")
    p = subprocess.run(["zstd", "-dc", "-q"], input=data, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise Unreadable(f"cannot decompress: {p.stderr.decode(errors='replace').strip()[:200]}")
    return p.stdout
