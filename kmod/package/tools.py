"""External packaging tools: found on PATH or refused in one line that says what to install."""
import os
import shutil
import subprocess

from ..errors import BuildFailed, InfraError

# tool -> the Debian package that provides it
PROVIDERS = {"dpkg-deb": "dpkg", "rpmbuild": "rpm", "lintian": "lintian", "rpmlint": "rpmlint"}


def require(tool: str, why: str = "") -> str:
    path = shutil.which(tool)
    if not path:
        raise InfraError(f"{tool} is missing" + (f" ({why})" if why else ""),
                         f"apt-get install {PROVIDERS.get(tool, tool)}")
    return path


def run(argv: list[str], env: dict | None = None, cwd=None, what: str = "") -> str:
    """Run a packaging tool with a fixed locale and time zone; its failure is a BuildFailed."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC",
                "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    proc = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()][-3:]
        raise BuildFailed(f"{what or argv[0]} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout + proc.stderr
