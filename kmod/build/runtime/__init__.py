"""Where build commands run, behind one narrow contract (base.py): prepare, run, collect, cleanup.

Docker is the default; `host` runs the same commands with local tools against a user-given KDIR.
Images are made beforehand by kmod.build.images; an engine only runs commands in them.
"""
from .base import Mount, Result, Runtime, Workspace


def get(name: str, **kwargs) -> Runtime:
    from ...errors import unsupported
    if name == "docker":
        from .docker import DockerRuntime
        return DockerRuntime(**kwargs)
    if name == "host":
        from .host import HostRuntime
        return HostRuntime(**kwargs)
    raise unsupported("runtime", name, ["docker", "host"])


__all__ = ["Mount", "Result", "Runtime", "Workspace", "get"]
