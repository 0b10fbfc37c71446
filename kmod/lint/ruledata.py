"""The linter's data (rules/lint/*): loaded once per process, hashed into the cache key so that
editing a data file invalidates cached results."""
import fnmatch
import re
import tomllib
from functools import cache
from pathlib import Path

from .. import paths


def folder() -> Path:
    return paths.rules() / "lint"


@cache
def load(name: str) -> dict:
    return tomllib.loads((folder() / f"{name}.toml").read_text())


def rules() -> dict:
    return load("rules")


def severity(rule: str) -> str:
    return rules()[rule]["severity"]


# Hash of every data file and of the linter's own code: any change means a fresh lint. It lives in
# kmod.paths so that a build's cache check can ask without importing the linter.
fingerprint = paths.lint_fingerprint


class GlobSet:
    """Match names against many globs with one compiled regex."""

    def __init__(self, patterns, exclude=()):
        self.rx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")
        self.ex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in exclude) or r"(?!)")

    def __contains__(self, name: str) -> bool:
        return bool(self.rx.match(name)) and not self.ex.match(name)


@cache
def softfloat(arch_name: str = "") -> GlobSet:
    """The common libgcc helper globs, and the arch's own (toolchains/arch/*.toml, [lint] softfloat)."""
    from .. import arch as archmod
    d = load("softfloat")
    extra = archmod.get(arch_name).lint.softfloat if arch_name else ()
    return GlobSet([*d["patterns"], *extra], d.get("not_softfloat", ()))


@cache
def gpl_compatible() -> frozenset[str]:
    """From the one license table, rules/licenses.toml (kmod.licenses)."""
    from .. import licenses
    return licenses.gpl_compatible()


@cache
def metadata_sections() -> GlobSet:
    return GlobSet(load("fpu")["metadata_sections"])


@cache
def sleeping() -> list[tuple[GlobSet, str]]:
    d = load("sleeping")
    ex = d.get("not_sleeping", {}).get("names", [])
    return [(GlobSet(e["names"], ex), e["source"]) for e in d["sleeping"]]


def sleep_source(name: str) -> str | None:
    for globs, source in sleeping():
        if name in globs:
            return source
    return None


@cache
def gfp_alloc() -> dict[str, int]:
    return dict(load("sleeping")["gfp_alloc"])


def gfp_direct_reclaim() -> int:
    return load("sleeping")["gfp_direct_reclaim"]


@cache
def gpl_only_default() -> frozenset[str]:
    """GPL-only exports of the pinned kernels (rules/lint/gpl_only_symbols.txt, see gplonly.py)."""
    p = folder() / "gpl_only_symbols.txt"
    if not p.exists():
        return frozenset()
    return frozenset(l.split()[0] for l in p.read_text().splitlines() if l and not l.startswith("#"))
