"""Docker through the SDK: containers are created, waited for and removed on every path (Ctrl-C too)."""
import os
import re
import threading
import time

from ... import run as runmod
from ...errors import InfraError, UserError
from .base import CONTAINER_BUILD_PATH, Mount, Result, Runtime, Workspace

NO_ENGINE_HINT = ("start one: `sudo dockerd &` (Debian: `apt-get install docker.io`), "
                  "or set DOCKER_HOST")


def client():
    """A client of the engine that answers (and, once per process, the containers of dead runs reaped)."""
    try:
        import docker
        import docker.errors
    except ImportError:
        raise InfraError("the docker Python SDK is missing", "pip install docker") from None
    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except docker.errors.DockerException as e:
        raise engine_error(e) from None
    reap(c)
    return c


def _socket() -> str:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return host[len("unix://"):] if host.startswith("unix://") else ""


def engine_error(e: Exception) -> InfraError:
    """Why no engine answers, in full and in one line, with the advice that fits: a socket this user
    may not open is not an engine to start."""
    reason = " ".join(str(e).split()) or type(e).__name__
    # requests nests the reason: "...: ('Connection aborted.', ConnectionRefusedError(111, 'Connection refused'))"
    inner = re.findall(r"\w+Error\(\d+, '([^']+)'\)", reason)
    reason = inner[-1] if inner else reason
    sock = _socket()
    if "Invalid bind address" in reason or "URLSchemeUnknown" in reason or "Not supported URL scheme" in reason:
        return InfraError(f"DOCKER_HOST={os.environ.get('DOCKER_HOST')!r} is not an engine address ({reason})",
                          "e.g. unix:///var/run/docker.sock or tcp://HOST:2375; or unset it")
    if "Permission denied" in reason or "PermissionError" in reason:
        return InfraError(f"the Docker engine's socket {sock or os.environ.get('DOCKER_HOST')} refused permission "
                          "to this user (the engine runs)",
                          "ask for access: `sudo usermod -aG docker $USER`, then log in again; or run as root")
    if sock and not os.path.exists(sock):
        return InfraError(f"no Docker engine answers: {sock} does not exist", NO_ENGINE_HINT)
    where = f" at {os.environ.get('DOCKER_HOST') or 'unix://' + sock}"
    return InfraError(f"no Docker engine answers{where}: {reason}", NO_ENGINE_HINT)


_REAPED = threading.Event()  # once per process is enough: runs die rarely, listing costs a round trip


def reap(c) -> list[str]:
    """Remove the containers (and their volumes) of kmod runs whose process is gone (SIGKILL): those
    labelled with a liveness lock on this host that nobody holds any more."""
    if _REAPED.is_set():
        return []
    _REAPED.set()
    import docker.errors
    gone = []
    try:
        found = c.containers.list(all=True, filters={"label": runmod.LOCK_LABEL})
    except docker.errors.DockerException:
        return gone
    for container in found:
        labels = container.labels or {}
        if (labels.get(runmod.HOST_LABEL) != runmod.HOST or not runmod.owns(container.name, labels)
                or runmod.alive(labels.get(runmod.LOCK_LABEL))):
            continue   # another host's, inherited from an image (not made by that run), or alive
        remove(container)
        gone.append(container.id)
    runmod.reap_lock_files()
    return gone


def bind_mounts(binds) -> list:
    """Bind mounts as `mounts=`, not `volumes=`: with `volumes=` the SDK also declares each target as
    a VOLUME in the container's config, which `commit` then writes into the image, and every later
    container of that image gets an anonymous volume that outlives it."""
    from docker.types import Mount as DockerMount
    return [DockerMount(m.target, str(m.source), type="bind", read_only=m.read_only) for m in binds]


# Every container this process started and has not removed yet: on Ctrl-C (or any error) they are
# force-removed, which also unblocks the threads waiting on them.
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def track(container) -> None:
    with _LIVE_LOCK:
        _LIVE.add(container)


def remove(container) -> None:
    try:
        container.remove(force=True, v=True)  # v: its anonymous volumes too
    except Exception:
        pass  # already gone; nothing the user can act on
    with _LIVE_LOCK:
        _LIVE.discard(container)


def remove_all() -> None:
    for c in list(_LIVE):
        remove(c)


# The sandbox every build runs in (docs/security.md): the module's Kbuild is untrusted code.
UNPRIVILEGED = (65534, 65534)  # nobody:nogroup, when kmod itself runs as root
SANDBOX = dict(
    read_only=True,                                           # the image's root cannot be changed
    tmpfs={"/tmp": "rw,nosuid,nodev,size=512m,mode=1777"},    # scratch (HOME=/tmp, gcc's temporaries)
    cap_drop=["ALL"], security_opt=["no-new-privileges"], privileged=False,
    pids_limit=512, mem_limit="2g", memswap_limit="2g",       # a fork bomb or a runaway cc1 stays contained
    network_mode="none",
)


def build_user() -> tuple[int, int]:
    """Never uid 0 in a build: as root, kmod builds as nobody (the build folder is handed to it)."""
    return UNPRIVILEGED if os.geteuid() == 0 else (os.getuid(), os.getgid())


class DockerRuntime(Runtime):
    name = "docker"
    build_path = CONTAINER_BUILD_PATH

    def __init__(self):
        super().__init__()
        self.client = client()

    def build_user(self) -> tuple[int, int]:
        return build_user()

    def prepare(self, sources, names, work_root, prefix="cell.") -> Workspace:
        ws = super().prepare(sources, names, work_root, prefix)
        uid, gid = build_user()
        if (uid, gid) != (os.getuid(), os.getgid()):
            for p in [ws.dir, *ws.dir.rglob("*")]:
                os.chown(p, uid, gid, follow_symlinks=False)
        return ws

    def run(self, ws: Workspace, argv, *, image, env, mounts=(), timeout=None, on_output=None) -> Result:
        import docker.errors
        start = time.monotonic()
        container = None
        try:
            container = self.client.containers.create(
                image, argv, environment=env, working_dir=ws.path,
                mounts=bind_mounts([Mount(ws.dir, ws.path, False), *mounts]),
                user="%d:%d" % build_user(), **SANDBOX, detach=True,
                **runmod.container("build"))
            track(container)
            container.start()
            if on_output:
                buf = []
                for chunk in container.logs(stream=True, follow=True):
                    text = chunk.decode("utf-8", "replace")
                    buf.append(text)
                    on_output(text)
                status = container.wait(timeout=timeout)
                output = "".join(buf)
            else:
                status = container.wait(timeout=timeout)
                output = container.logs().decode("utf-8", "replace")
            return Result(status.get("StatusCode", 1), output, time.monotonic() - start)
        except docker.errors.ImageNotFound:
            raise UserError(f"image {image} is missing", "run `invoke toolchains --build`") from None
        except docker.errors.APIError as e:
            raise InfraError(f"Docker refused to run the build: {e.explanation or e}") from None
        except Exception as e:  # requests timeouts and connection drops
            if type(e).__name__ in ("ReadTimeout", "ConnectionError"):
                raise InfraError(f"the Docker engine stopped answering: {e}", NO_ENGINE_HINT) from None
            raise
        finally:
            if container is not None:
                remove(container)

    def cleanup(self, ws: Workspace | None = None) -> None:
        if ws is None:
            remove_all()
        super().cleanup(ws)

