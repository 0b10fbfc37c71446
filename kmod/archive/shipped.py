"""Which binary packages a suite's archives ship (main, -updates, -security), read from the verified
indexes (resolve.Catalogue): a package kmod makes under a name Debian already uses would be replaced by,
or replace, Debian's. The names are kept in the cache for a day, as data."""
import json
import time

from .. import atomic, paths
from . import mirror as mirrormod
from . import resolve

MAX_AGE = 24 * 3600


def names(suite: str, debian_arch: str) -> set[str]:
    path = paths.cache_dir() / "archive" / f"names-{suite}-{debian_arch}.json"
    try:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and time.time() - doc.get("at", 0) < MAX_AGE and isinstance(doc.get("names"), list):
            return set(doc["names"])
    except (OSError, ValueError):
        pass  # missing or damaged: read the indexes again
    cat = resolve.Catalogue(mirrormod.configured(), suite, [debian_arch], log=lambda s: None)
    found = sorted({name for name, _arch in cat.by_name})
    atomic.write_json(path, {"at": time.time(), "suite": suite, "names": found})
    return set(found)


def clashes(package: str, suites: list[str], debian_arch: str) -> list[str]:
    """The suites whose archives already ship `package`."""
    return [s for s in suites if package in names(s, debian_arch)]
