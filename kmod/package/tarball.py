"""NAME-VERSION.tar.gz: the DKMS source tree with dkms.conf in the layout `dkms mktarball --source-only`
writes (dkms_source_tree/ at the top). dkms 3.0.10 (bookworm) `ldtarball` accepts only that layout (its
"any dkms.conf inside" fallback is dead code); dkms 3.2 (trixie) `dkms add FILE` accepts it too. Written by tarfile: sorted, root-owned, fixed
modes and mtimes, no name or time in the gzip header."""
import gzip
import io
import tarfile
from pathlib import Path

from .. import atomic
from .payload import Payload


def file_name(p: Payload) -> str:
    return f"{p.dkms_name}-{p.module_version}.tar.gz"


def _info(name: str, when: int, mode: int, kind=tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.size = kind, mode, when, size
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def tar_bytes(p: Payload) -> bytes:
    top = p.top                                # usr/src/NAME-VERSION
    base = "dkms_source_tree"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in p.dirs(top):
            tar.addfile(_info(base + d[len(top):] + "/", p.epoch, 0o755, tarfile.DIRTYPE))
        for path, (data, mode) in p.files.items():
            if path.startswith(top + "/"):
                tar.addfile(_info(base + path[len(top):], p.epoch, mode, size=len(data)), io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=p.epoch, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def build(p: Payload, out_dir: Path, work_root: Path) -> Path:
    dest = out_dir / file_name(p)
    atomic.write_bytes(dest, tar_bytes(p), 0o644)
    return dest
