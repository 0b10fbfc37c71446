"""Build with the host's own tools against a KDIR the user gives (the seed's "point KDIR at the VM's
compiled kernel"). Same contract as Docker; no image, no isolation beyond a private build folder."""
import os
import shutil
import subprocess
import threading
import time

from ...errors import InfraError, UserError
from .base import Result, Runtime


class HostRuntime(Runtime):
    name = "host"

    def __init__(self):
        super().__init__()
        self._procs: set[subprocess.Popen] = set()
        self._procs_lock = threading.Lock()
        self._stopped = False

    def run(self, ws, argv, *, image, env, mounts=(), timeout=None, on_output=None) -> Result:
        if not shutil.which("make"):
            raise InfraError("make is not installed on this host", "apt-get install make gcc")
        start = time.monotonic()
        try:
            # a session of its own: make's whole tree (sh, gcc, ...) is ended at once on clean-up, also
            # when the signal reached kmod alone (SIGTERM, a terminal's hang-up)
            proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, cwd=ws.dir, errors="replace",
                                    start_new_session=True)
        except FileNotFoundError as e:
            raise UserError(f"cannot run {argv[0]}: {e.strerror}") from None
        with self._procs_lock:
            self._procs.add(proc)
            stopped = self._stopped
        try:
            if stopped:
                _kill(proc)
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                out, _ = proc.communicate()
        finally:
            with self._procs_lock:
                self._procs.discard(proc)
        return Result(proc.returncode, out, time.monotonic() - start)

    def cleanup(self, ws=None) -> None:
        if ws is None:   # the whole run ends (Ctrl-C, a signal, an error): nothing of it keeps running
            with self._procs_lock:
                self._stopped = True
                procs = list(self._procs)
            for p in procs:
                _kill(p)
        super().cleanup(ws)


def _kill(proc: subprocess.Popen) -> None:
    from ... import run as runmod
    runmod.kill_group(proc)
