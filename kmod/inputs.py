"""Reading a file someone hands kmod (a spec, a certificate, a signing key, a host list) or that kmod
keeps for itself where others can write (the manifest, the lock): a regular file only, and never more
than a bound. A FIFO would block forever; a link to /dev/zero would never end and take all memory.
Each is one line instead; a missing file or a folder raise as open(2) does, for the caller's own line."""
import errno
import os
import stat

from .errors import UserError

KIB, MIB = 1 << 10, 1 << 20

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def read(path, what: str, limit: int, hint: str = "") -> bytes:
    """The bytes of `path` (links followed: a spec may be a link to a shared one). Opened non-blocking
    and judged on the open descriptor, so nothing swapped in after a stat can block or stream forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, "
                            f"not a file", hint or "give a regular file")
        if st.st_size > limit:
            raise UserError(f"{what} {path} is {_size(st.st_size)}, more than the {_size(limit)} it can be",
                            hint or "is that the right file?")
        os.set_blocking(fd, True)
        chunks, got = [], 0
        while got <= limit:
            piece = f.read(limit + 1 - got)
            if not piece:
                break
            chunks.append(piece)
            got += len(piece)
    if got > limit:
        raise UserError(f"{what} {path} grew past {_size(limit)} while being read", hint or "is that the right file?")
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / KIB:.0f} KiB" if n >= KIB else f"{n} bytes"
