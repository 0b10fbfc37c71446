"""Build with the host's own tools against a KDIR the user gives (the seed's "point KDIR at the VM's
compiled kernel"). Same contract as Docker; no image, no isolation beyond a private build folder."""
import os
import shutil
import subprocess
import time

from ...errors import InfraError, UserError
from .base import Result, Runtime


class HostRuntime(Runtime):
    name = "host"

    def run(self, ws, argv, *, image, env, mounts=(), timeout=None, on_output=None) -> Result:
        if not shutil.which("make"):
            raise InfraError("make is not installed on this host", "apt-get install make gcc")
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, cwd=ws.dir,
                                  timeout=timeout, errors="replace")
        except FileNotFoundError as e:
            raise UserError(f"cannot run {argv[0]}: {e.strerror}") from None
        return Result(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)
