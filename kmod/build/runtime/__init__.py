"""Where build commands run. One narrow contract so that a build cell can run on any engine:

    run(...)        run one command in an image (prepared by kmod.build.images), return its exit code
                    and output
    cleanup()       release what run took (containers still alive after Ctrl-C)

Docker is the default; `host` runs the same commands with local tools against a user-given KDIR.
"""
from .base import Mount, Result, Runtime


def get(name: str, **kwargs) -> Runtime:
    from ...errors import unsupported
    if name == "docker":
        from .docker import DockerRuntime
        return DockerRuntime(**kwargs)
    if name == "host":
        from .host import HostRuntime
        return HostRuntime(**kwargs)
    raise unsupported("runtime", name, ["docker", "host"])


__all__ = ["Mount", "Result", "Runtime", "get"]
