"""This process's run: its id, the lock that says it is alive, its signals, and the reaping of what a
dead run left behind.

Everything a run creates carries the path of its liveness lock (a file in $KMOD_CACHE/runs/ that the
process holds with flock(2) until it exits; the kernel lets go of it when the process dies, SIGKILL
included): Docker containers as the label `kmod.run.lock`, work folders as their `.run` file, manifest
runs as their `lock` field. A later run that finds such a thing whose lock nobody holds removes it
(containers and work folders) or marks it `interrupted` (manifest runs, cells and VMs).

SIGTERM (CI timeouts, `docker stop`) and SIGHUP (a closed terminal) are turned into the same
KeyboardInterrupt as Ctrl-C, so one clean-up path serves all three; a second signal during that
clean-up is ignored rather than allowed to cut it short.
"""
import atexit
import fcntl
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import paths


def _new_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"


ID = _new_id()  # this process's run (a forked child gets its own: _forked)
LABEL, LOCK_LABEL, HOST_LABEL = "kmod.run", "kmod.run.lock", "kmod.run.host"
HOST = os.uname().nodename  # a liveness lock means something only on the host that holds it
WORK = ".work"           # dist/.work/RUN-ID/: this run's scratch folders
SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: the same clean-up, the conventional exit code of each."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return SIGNALS.get(self.signum, 130)


def interruption(e: KeyboardInterrupt) -> tuple[str, int]:
    """The one line and the exit code for a run that Ctrl-C (130), SIGTERM (143) or SIGHUP (129) stopped."""
    return (f"interrupted ({e})" if str(e) else "interrupted"), getattr(e, "exit_code", 130)


class _Liveness:
    """The lock file this process holds for its lifetime, taken the first time something needs it."""

    def __init__(self):
        self._guard = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None

    def path(self) -> Path:
        with self._guard:
            if self._path is None:
                folder = paths.cache_dir() / "runs"
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / f"{ID}.lock"
                # Locked before it has its name, so that no reaper ever sees it unlocked.
                tmp = folder / f".{ID}.lock.tmp"
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.replace(tmp, final)
                self._fd, self._path = fd, final
            return self._path

    def release(self) -> None:
        with self._guard:
            if self._fd is not None:
                try:
                    os.unlink(self._path)
                except OSError:
                    pass
                os.close(self._fd)
                self._fd = self._path = None


_LIVENESS = _Liveness()  # one per process, like the process id it stands for


def _forked() -> None:
    """A forked child is a run of its own: a new id, and none of the parent's lock (closing our copy of
    its descriptor does not release the parent's flock)."""
    global ID, _LIVENESS
    if _LIVENESS._fd is not None:
        os.close(_LIVENESS._fd)
    ID, _LIVENESS = _new_id(), _Liveness()


os.register_at_fork(after_in_child=_forked)


def lock_path() -> str:
    return str(_LIVENESS.path())


def release() -> None:
    """At the end of a task (and at exit): nothing of this run is left to protect."""
    _LIVENESS.release()


atexit.register(release)  # library use too (tests, bench): no stale lock file after a normal exit


def alive(lock: str | None) -> bool:
    """Does a live process hold the liveness lock at `lock`?"""
    if not lock:
        return False
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # gone: its run finished (or was reaped)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def labels() -> dict[str, str]:
    """Labels for every container this run creates, so that a later run can reap them if we die."""
    return {LABEL: ID, LOCK_LABEL: lock_path(), HOST_LABEL: HOST}


_names = iter(range(1, 1 << 62))
_names_lock = threading.Lock()


def container(role: str) -> dict:
    """`name` and `labels` for a container this run creates (containers.create(**container(role))).
    The name repeats the run id: an image committed from a container inherits its labels (so every
    container later made from a toolchain image would carry its builder's dead run), but not its name;
    the reaper only trusts run labels on a container whose name says the same run (owns())."""
    with _names_lock:
        n = next(_names)
    return {"name": f"kmod-{ID}-{role}-{n}", "labels": {"kmod.role": role, **labels()}}


def owns(name: str | None, labels_: dict) -> bool:
    """Were these run labels given to this container by the run they name (see container())?"""
    run = labels_.get(LABEL) or ""
    return bool(run) and (name or "").lstrip("/").startswith(f"kmod-{run}-")


def reap_lock_files() -> None:
    """Remove the liveness files of dead runs from this cache."""
    folder = paths.cache_dir() / "runs"
    for p in folder.glob("*.lock") if folder.is_dir() else ():
        if p.name != f"{ID}.lock" and not alive(str(p)):
            try:
                p.unlink()
            except OSError:
                pass


# --- work folders: dist/.work/RUN-ID/ -------------------------------------------------------------

def work_dir(dist: Path) -> Path:
    """This run's scratch folder below `dist` (created with a `.run` file naming our liveness lock)."""
    d = Path(dist) / WORK / ID
    if not (d / ".run").is_file():
        d.mkdir(parents=True, exist_ok=True)
        (d / ".run").write_text(lock_path() + "\n")
    return d


def remove_work_dir(dist: Path) -> None:
    shutil.rmtree(Path(dist) / WORK / ID, ignore_errors=True)
    try:
        (Path(dist) / WORK).rmdir()  # only when no other run is using it
    except OSError:
        pass


def reap_work_dirs(dist: Path, grace: float = 60.0) -> list[str]:
    """Remove the work folders of dead runs below `dist`; returns their run ids."""
    root = Path(dist) / WORK
    reaped = []
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        if d.name == ID:
            continue
        try:
            lock = (d / ".run").read_text().strip()
        except OSError:
            lock = None
            if time.time() - d.stat().st_mtime < grace:
                continue  # being created right now by a run that has not written its .run yet
        if not alive(lock):
            shutil.rmtree(d, ignore_errors=True)
            reaped.append(d.name)
    return reaped


def kill_group(proc) -> None:
    """SIGKILL a child started in a session of its own (start_new_session) with everything it started
    (make's compilers, QEMU): the one way kmod ends a process tree."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- scratch folders outside dist/: /tmp, /dev/shm, the cache ----------------------------------------

SCRATCH_GRACE = 60.0


def scratch_dir(kind: str, base: Path | str | None = None) -> Path:
    """A private folder for this run outside dist/ (a system temporary folder, /dev/shm, the cache),
    named `kmod-KIND.RUN-ID.XXXX` so that a later run can tell whose it is: the caller removes it, and
    when a SIGKILL stops that, the next run reaps it (reap_scratch_dirs)."""
    import tempfile
    lock_path()                    # held before the folder exists: a reaper never sees it ownerless
    return Path(tempfile.mkdtemp(prefix=f"kmod-{kind}.{ID}.", dir=base))


def scratch_bases() -> list[Path]:
    import tempfile
    out = [Path(tempfile.gettempdir()), paths.cache_dir()]
    if os.path.isdir("/dev/shm"):
        out.append(Path("/dev/shm"))
    return out


def reap_scratch_dirs(grace: float = SCRATCH_GRACE) -> list[str]:
    """Remove the scratch folders of dead runs of this cache (a signing key's folder in /dev/shm among
    them); returns their paths."""
    runs = paths.cache_dir() / "runs"
    reaped = []
    for base in scratch_bases():
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for e in entries:
            m = _SCRATCH.match(e.name)      # only names this kmod gives: nobody else's kmod-* folder
            if not m or m.group(1) == ID:
                continue
            try:
                if not e.is_dir(follow_symlinks=False) or time.time() - e.stat(follow_symlinks=False).st_mtime < grace:
                    continue
            except OSError:
                continue
            if not alive(str(runs / f"{m.group(1)}.lock")):
                shutil.rmtree(e.path, ignore_errors=True)
                reaped.append(e.path)
    return reaped


_SCRATCH = __import__("re").compile(r"^kmod-.+\.(\d{8}T\d{6}-\d+-[0-9a-f]{6})\.[^.]+$")


# --- signals --------------------------------------------------------------------------------------

@contextmanager
def signals():
    """SIGTERM and SIGHUP behave like Ctrl-C inside; a second signal during the clean-up is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"fired": False}
    ttys = _terminal_fds()

    def handler(signum, frame):
        if state["fired"]:
            return  # cleaning up already: let it finish
        state["fired"] = True
        if signum == signal.SIGHUP:
            terminal_gone(ttys)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _terminal_fds() -> tuple[int, ...]:
    """Standard output and error that are a terminal, asked while the terminal is there (once it hung up,
    isatty() says no)."""
    out = []
    for fd in (1, 2):
        try:
            if os.isatty(fd):
                out.append(fd)
        except OSError:
            pass
    return tuple(out)


def terminal_gone(fds: tuple[int, ...]) -> None:
    """SIGHUP: the terminal hung up, and a write to it now fails (EIO). Those of standard output and error
    that were the terminal go to /dev/null, so that the clean-up and the exit code (129) are not lost to
    a failed write; pipes and files (CI logs, `kill -HUP` of a run whose output is kept) keep theirs."""
    if not fds:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in fds:
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


class Pending:
    """The signal that arrived inside deferred_signals(), raised when the caller asks."""
    signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextmanager
def deferred_signals():
    """Inside, SIGINT, SIGTERM and SIGHUP only take note; `check()` raises Interrupted where the caller
    chooses. For waits on library code holding locks (a process pool's futures): an exception landing at
    a random point there can leave a lock held and hang the process at exit."""
    pending = Pending()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    ttys = _terminal_fds()

    def handler(signum, frame):
        if signum == signal.SIGHUP:
            terminal_gone(ttys)
        pending.signum = pending.signum or signum

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield pending
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
