"""Where build commands run, behind one narrow contract (base.py): prepare, run, collect, cleanup.

Docker is the default; `host` runs the same commands with local tools against a user-given KDIR.
Images are made beforehand by kmod.build.images; an engine only runs commands in them.
"""
from .base import Mount, Result, Runtime, Workspace


NAMES = ("docker", "host")


def check(name: str) -> str:
    from ...errors import unsupported
    if name not in NAMES:
        raise unsupported("runtime", name, list(NAMES))
    return name


def get(name: str, **kwargs) -> Runtime:
    check(name)
    if name == "docker":
        from .docker import DockerRuntime
        return DockerRuntime(**kwargs)
    if name == "host":
        from .host import HostRuntime
        return HostRuntime(**kwargs)


__all__ = ["Mount", "Result", "Runtime", "Workspace", "get"]
