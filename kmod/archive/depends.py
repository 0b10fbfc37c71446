"""The exact set of packages an image is made of, worked out from the verified indexes: the closure of
some root packages under Depends and Pre-Depends, as apt (--no-install-recommends) or debootstrap would
install it, each at the newest version the suite (main, -updates, -security) offers that satisfies every
constraint. Relations are parsed by python-debian; versions are ordered by kmod.archive.debversion.

Used by `toolchains --update` to lock the compilers and the base system (kmod.archive.toolchain)."""
from ..errors import UserError
from . import debversion

OPS = {"<<": lambda c: c < 0, "<=": lambda c: c <= 0, "=": lambda c: c == 0, ">=": lambda c: c >= 0,
       ">>": lambda c: c > 0}


def satisfies(version: str, constraint) -> bool:
    if not constraint:
        return True
    op, want = constraint
    return OPS[op](debversion.compare(version, want))


def relations(rec: dict) -> list[list[dict]]:
    from debian.deb822 import PkgRelation
    text = ", ".join(v for v in (rec.get("Pre-Depends"), rec.get("Depends")) if v)
    return PkgRelation.parse_relations(text) if text else []


class Closure:
    """Packages chosen so far (name -> (record, archive)) for one dpkg architecture."""

    def __init__(self, cat, debian_arch: str, have: dict | None = None, exclude=()):
        self.cat, self.arch, self.exclude = cat, debian_arch, set(exclude)  # exclude: never a dependency
        self.chosen: dict[str, tuple[dict, str]] = dict(have or {})
        self._provides: dict[str, list[tuple[str, str]]] | None = None

    def provides(self) -> dict[str, list[tuple[str, str]]]:
        """virtual name -> [(real package, provided version or "")], for this arch."""
        if self._provides is None:
            from debian.deb822 import PkgRelation
            out: dict[str, list[tuple[str, str]]] = {}
            for (name, a), recs in self.cat.by_name.items():
                if a not in (self.arch, "all"):
                    continue
                for rec, _ in recs:
                    if not rec.get("Provides"):
                        continue
                    for group in PkgRelation.parse_relations(rec["Provides"]):
                        for p in group:
                            pv = p["version"][1] if p.get("version") else ""
                            if (name, pv) not in out.setdefault(p["name"], []):
                                out[p["name"]].append((name, pv))
            self._provides = out
        return self._provides

    def _met(self, rel: dict) -> bool:
        name, constraint = rel["name"], rel.get("version")
        if name in self.chosen and satisfies(self.chosen[name][0]["Version"], constraint):
            return True
        return any(real in self.chosen and (not constraint or (pv and satisfies(pv, constraint)))
                   for real, pv in self.provides().get(name, []))

    def add(self, name: str, constraint=None, why: str = "") -> None:
        for rec, archive in self.cat.versions(name, self.arch):
            if satisfies(rec["Version"], constraint):
                self._take(rec, archive)
                return
        raise UserError(f"no version of {name} {' '.join(constraint or ())} in the indexes"
                        + (f" (needed by {why})" if why else ""), "check the pin's suite and the mirror")

    def _take(self, rec: dict, archive: str) -> None:
        name = rec["Package"]
        if name in self.chosen:
            return
        self.chosen[name] = (rec, archive)
        for group in relations(rec):
            self._group(group, name)

    def _group(self, group: list[dict], why: str) -> None:
        if any(r["name"] in self.exclude for r in group):
            return  # dropped, as debootstrap's EXCLUDE_DEPENDENCY does
        group = [r for r in group if r.get("archqual") in (None, "any", "native")]
        if not group or any(self._met(r) for r in group):
            return
        for r in group:  # the first alternative that exists as a real package, as apt prefers
            if any(satisfies(rec["Version"], r.get("version")) for rec, _ in self.cat.versions(r["name"], self.arch)):
                self.add(r["name"], r.get("version"), why)
                return
        for r in group:  # else a provider of a virtual package (the first by name: deterministic)
            providers = sorted(real for real, pv in self.provides().get(r["name"], [])
                               if not r.get("version") or (pv and satisfies(pv, r["version"])))
            if providers:
                self.add(providers[0], None, why)
                return
        names = " | ".join(r["name"] + (f" ({' '.join(r['version'])})" if r.get("version") else "") for r in group)
        if any(r["name"] in self.chosen for r in group):
            raise UserError(f"{why} needs {names}, which the chosen versions do not satisfy",
                            "the suite's indexes are inconsistent; try again later")
        raise UserError(f"{why} needs {names}, which no index offers", "check the pin's suite and the mirror")
