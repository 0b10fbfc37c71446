"""One lock for "only one of us does this at a time", between threads and processes alike: an
exclusive flock(2) on a lock file beside what it guards. The kernel drops it when its holder dies,
so a killed run never leaves a stale lock behind."""
import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path

# flock() locks belong to an open file description: two threads of one process that each open the
# file do exclude each other, but a per-path thread lock keeps that cheap and obvious.
_thread_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextmanager
def locked(path: Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path)
    with _guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    with tlock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
