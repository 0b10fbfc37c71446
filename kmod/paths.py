"""Where the data folders, the project and the caches live.

The data folders (templates/, toolchains/, rules/) sit beside the package in a checkout and
inside it in an installed wheel; both layouts resolve here and nowhere else.
"""
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (PACKAGE / name, PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kmod data folder {name!r} is missing from this installation")


def templates() -> Path:
    return data_dir("templates")


def toolchains() -> Path:
    """toolchains/ (arches, pins, the lock); KMOD_TOOLCHAINS points at another copy of it (a test's
    scratch lock, which `toolchains --update` and `preflight --auto-pin` may rewrite)."""
    override = os.environ.get("KMOD_TOOLCHAINS")
    return Path(override) if override else data_dir("toolchains")


def rules() -> Path:
    return data_dir("rules")


def cache_dir() -> Path:
    """Downloads and bootstrap trees, shared by all checkouts (never inside the repo)."""
    base = os.environ.get("KMOD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kmod")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def probe_map_dir(image_sha256: str, release: str) -> Path:
    """Where `invoke probe-map` keeps a booted kernel's kallsyms and kprobe blacklist. Here, not in
    kmod.boot, so that the lint can see whether a map exists without importing the boot stage."""
    return cache_dir() / "boot" / "probemap" / f"{image_sha256[:16]}_{release}"
