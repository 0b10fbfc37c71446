"""Reading a file someone hands kmod (a spec, a certificate, a signing key, a host list, a module to lint)
or that kmod keeps for itself where others can write (the manifest, the lock): a regular file only, and
never more than a bound. A FIFO would block forever; a link to /dev/zero would never end and take all
memory. One primitive (read_regular) serves every reader; read() turns its refusals into one line."""
import errno
import os
import stat

from .errors import UserError

KIB, MIB = 1 << 10, 1 << 20
_STREAM = 1 << 20
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


class NotAFile(OSError):
    """Not a regular file; `kind` says what it is ("a FIFO", ...)."""

    def __init__(self, kind: str):
        super().__init__(f"is {kind}, not a regular file")
        self.kind = kind


class TooLarge(OSError):
    """Its size is over the bound it was read under; `size` is what it said."""

    def __init__(self, size: int):
        super().__init__(f"is {size} bytes")
        self.size = size


def kind(mode: int) -> str | None:
    """What a file of this st_mode is, or None for a regular file."""
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_regular(path, limit: int, size_cap: int | None = None) -> bytes:
    """At most `limit` bytes from the start of the regular file `path` (links followed). Opened
    non-blocking and judged on the open descriptor, so nothing swapped in after a stat can block or
    stream forever. NotAFile for anything else, TooLarge when its size is over `size_cap`; a missing file
    raises as open(2) does, for the caller's own line."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        what = kind(st.st_mode)
        if what == "a directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if what:
            raise NotAFile(what)
        if size_cap is not None and st.st_size > size_cap:
            raise TooLarge(st.st_size)
        os.set_blocking(fd, True)
        chunks, got = [], 0
        # the whole file in one read(2), with a byte to spare to see that it did not grow; asking for
        # `limit` outright makes Python allocate (and the kernel map) that much for every file
        first = min(limit, st.st_size + 1)
        while got < limit:
            piece = f.read(min(limit - got, first if not chunks else _STREAM))   # a short one is not the end
            if not piece:
                break
            chunks.append(piece)
            got += len(piece)
    return b"".join(chunks)


def read(path, what: str, limit: int, hint: str = "") -> bytes:
    """The bytes of `path`, at most `limit` of them, or one line saying what it is instead."""
    hint = hint or "give a regular file"
    try:
        data = read_regular(path, limit + 1, limit)
    except NotAFile as e:
        raise UserError(f"{what} {path} is {e.kind}, not a file", hint) from None
    except TooLarge as e:
        raise UserError(f"{what} {path} is {_size(e.size)}, more than the {_size(limit)} it can be",
                        hint) from None
    if len(data) > limit:
        raise UserError(f"{what} {path} grew past {_size(limit)} while being read", hint)
    return data


def _size(n: int) -> str:
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / KIB:.0f} KiB" if n >= KIB else f"{n} bytes"
