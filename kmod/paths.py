"""Where the data folders, the project and the caches live.

The data folders (templates/, toolchains/, rules/) sit beside the package in a checkout and
inside it in an installed wheel; both layouts resolve here and nowhere else.
"""
import hashlib
import os
from functools import cache
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


def ensure_dir(path: Path, what: str, hint: str) -> Path:
    """A folder kmod writes to: created if missing; one line when it cannot be (a file in the way, no
    permission, a read-only file system)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        usable = os.access(path, os.W_OK | os.X_OK)
        why = "no permission to write there"
    except OSError as e:
        usable, why = False, e.strerror or str(e)
    if not usable:
        from .errors import UserError
        raise UserError(f"cannot write {what} {path}: {why}", hint)
    return path


def cache_dir() -> Path:
    """Downloads and bootstrap trees, shared by all checkouts (never inside the repo)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(xdg):
        xdg = os.path.expanduser("~/.cache")  # the XDG spec: a relative value is invalid, ignore it
    base = os.environ.get("KMOD_CACHE") or os.path.join(xdg, "kmod")
    # Absolute: the run's liveness lock is named by its path in container labels, read from anywhere.
    return ensure_dir(Path(base).absolute(), "the cache folder", "set KMOD_CACHE to a folder you can write")


def probe_map_dir(image_sha256: str, release: str) -> Path:
    """Where `invoke probe-map` keeps a booted kernel's kallsyms and kprobe blacklist. Here, not in
    kmod.boot, so that the lint can see whether a map exists without importing the boot stage."""
    return cache_dir() / "boot" / "probemap" / f"{image_sha256[:16]}_{release}"


@cache
def lint_fingerprint() -> str:
    """Hash of the lint's data (its rules and the arch facts) and its own code: a lint verdict holds while
    this is unchanged. Here, not in kmod.lint, so that a build's cache check can ask without importing
    the linter."""
    h = hashlib.sha256()
    for base in (rules() / "lint", toolchains() / "arch", PACKAGE / "lint"):
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix in (".toml", ".txt", ".py"):
                h.update(p.name.encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:24]
