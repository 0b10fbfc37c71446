"""The runtime contract: everything a build cell asks of an engine, in four steps.

    prepare(sources, names, work_root)   a private build folder holding a copy of the sources
    run(ws, argv, image=, env=, ...)     run one command there, return its exit code and output
    collect(ws, names, dest)             take artifacts out of the build folder: regular files only,
                                         opened with O_NOFOLLOW (kmod.nofollow); a link or special file
                                         is refused (UnsafeFile), never followed
    cleanup(ws)                          remove the build folder and whatever still runs for it;
                                         cleanup() with no argument releases everything (Ctrl-C)

Engines differ only in run() (and in where the build folder appears to the command: `path`). Copying in
and out is done here, on the host, for every engine alike, so the untrusted side never decides which host
file is read.
"""
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ... import nofollow

# Where the build folder appears inside a container: fixed, so the same inputs give the same bytes from
# any checkout path (the host runtime maps its folder here with -ffile-prefix-map).
CONTAINER_BUILD_PATH = "/kmod/build"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass
class Result:
    exit_code: int
    output: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Workspace:
    dir: Path    # the build folder on the host
    path: str    # where the command sees it


class Runtime:
    name = "base"
    build_path: str | None = None  # where the build folder appears to the command; None: its own path

    def __init__(self):
        self._workspaces: set[Path] = set()
        self._ws_lock = threading.Lock()

    def prepare(self, sources: Path, names, work_root: Path, prefix: str = "cell.") -> Workspace:
        work_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=work_root))
        with self._ws_lock:
            self._workspaces.add(work)
        for name in sorted(names):
            dest = work / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(nofollow.read_bytes(sources, name, "source file"))
        return Workspace(work, self.build_path or str(work))

    def build_user(self) -> tuple[int, int]:
        """The uid:gid the command runs as (secrets handed to a build are made readable by it)."""
        import os
        return os.getuid(), os.getgid()

    def run(self, ws: Workspace, argv: list[str], *, image: str | None, env: dict[str, str],
            mounts: tuple[Mount, ...] = (), timeout: float | None = None, on_output=None) -> Result:
        raise NotImplementedError

    def collect(self, ws: Workspace, names, dest: Path) -> dict[str, str]:
        """Copy each artifact that exists to `dest`/name; name -> sha256. Missing ones are left out."""
        out = {}
        for name in names:
            try:
                out[name] = nofollow.copy_out(ws.dir, name, Path(dest) / name, "artifact")
            except FileNotFoundError:
                continue
        return out

    def cleanup(self, ws: Workspace | None = None) -> None:
        with self._ws_lock:
            dirs = [ws.dir] if ws else list(self._workspaces)
            self._workspaces.difference_update(dirs)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
