"""Read files that something untrusted could have replaced (a build's output, a package's sources, what
goes into a boot initramfs) without ever going through a link: every path component is opened relative
to the one before with O_NOFOLLOW, and only a regular file with a single name is read. A symlink, a hard
link, a FIFO, a device or a socket is refused with a line that says which it is; nothing blocks (a FIFO
is opened non-blocking and refused before any read)."""
import hashlib
import os
import stat
from pathlib import Path

from .errors import UserError

_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


class UnsafeFile(UserError):
    """A file that is not a plain regular file of its own; refused, never read."""


def _refuse(what: str, rel: str, kind: str) -> UnsafeFile:
    return UnsafeFile(f"{what} {rel} is {kind}: refused, only regular files are read",
                      "a build or source folder must not leave links or special files where files belong")


def open_regular(root: Path, rel: str, what: str = "file", single_link: bool = True) -> int:
    """A read-only fd of `root`/`rel`. `root` is ours (followed); nothing below it is."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeFile(f"{what} {rel!r} is not a plain relative path")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                fd = os.open(part, flags | (os.O_NONBLOCK | os.O_NOCTTY if last else os.O_DIRECTORY), dir_fd=dfd)
            except OSError as e:
                try:
                    kind = _KINDS.get(stat.S_IFMT(os.lstat(part, dir_fd=dfd).st_mode), "not openable")
                except OSError:
                    kind = "missing"
                if kind == "missing" and last:
                    raise FileNotFoundError(e.errno, e.strerror, str(Path(root) / rel)) from None
                raise _refuse(what, rel if last else "/".join(parts[:i + 1]), kind) from None
            os.close(dfd)
            dfd = fd
        st = os.fstat(dfd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(what, rel, _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file"))
        if single_link and st.st_nlink != 1:
            raise _refuse(what, rel, f"a hard link ({st.st_nlink} names for one file)")
        fd, dfd = dfd, -1
        os.set_blocking(fd, True)
        return fd
    finally:
        if dfd >= 0:
            os.close(dfd)


def read_bytes(root: Path, rel: str, what: str = "file", single_link: bool = True) -> bytes:
    fd = open_regular(root, rel, what, single_link)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_path(path: Path, what: str = "file", single_link: bool = True) -> bytes:
    """The same for a path whose folder is ours and whose last component is not to be trusted."""
    path = Path(path)
    return read_bytes(path.parent, path.name, what, single_link)


def copy_out(root: Path, rel: str, dest: Path, what: str = "artifact") -> str:
    """Copy `root`/`rel` to `dest` atomically (kmod.atomic), through no link; returns its sha256."""
    from . import atomic
    data = read_bytes(root, rel, what)
    atomic.write_bytes(dest, data)
    return hashlib.sha256(data).hexdigest()
