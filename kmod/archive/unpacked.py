"""Trees unpacked from verified .debs into the cache (the lint's linux-image trees, the boot test's
kernels) are checked on every use, like a cached .deb (kmod.archive.fetch.verified): when a tree is
unpacked, a manifest of its entries (each file's sha256, each link's target, each folder's names) is
written next to it (TREE.files.json), with the stat (size, mtime, inode, ctime) each had. A use lstat()s
every entry and hashes only a file whose stat changed; a folder whose stat changed is listed (a planted
file changes it). A tree that differs is unpacked again from its .deb by the caller, with a one-line note.

    record(tree)   write the manifest of `tree` as it is now (right after unpacking it)
    check(tree)    "" when the tree is what its manifest says, else what differs (one line)
    note(deb, why) says on stderr, in one line, that a tree is unpacked again and why
"""
import json
import os
import stat
from pathlib import Path

from .. import atomic
from .fetch import sha256_stream

FORMAT = 1


def manifest_path(tree: Path) -> Path:
    return tree.with_name(tree.name + ".files.json")


def _key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]   # check() compares the same inline


def _hash(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return sha256_stream(f)


def _entry(path: str, st: os.stat_result) -> list:
    """[kind, stat key, what it holds]: f and its sha256, l and its target, d (its names are the entries
    below it)."""
    if stat.S_ISREG(st.st_mode):
        return ["f", _key(st), _hash(path)]
    if stat.S_ISLNK(st.st_mode):
        return ["l", _key(st), os.readlink(path)]
    if stat.S_ISDIR(st.st_mode):
        return ["d", _key(st), ""]
    return ["?", _key(st), stat.S_IFMT(st.st_mode)]


def _write(tree: Path, entries: dict) -> None:
    atomic.write_text(manifest_path(tree), json.dumps({"format": FORMAT, "entries": entries}, separators=(",", ":")))


def record(tree: Path) -> None:
    """The manifest of every entry below `tree` (the tree itself is "."), read through no link."""
    entries = {}
    top = str(tree)
    for root, dirs, files in os.walk(top):
        for name in (".", *dirs, *files) if root == top else (*dirs, *files):
            path = os.path.join(root, name) if name != "." else top
            entries[os.path.relpath(path, top)] = _entry(path, os.lstat(path))
    _write(tree, entries)


def check(tree: Path) -> str:
    """"" when every entry is as recorded; else the first difference, as a short phrase. Entries whose
    stat changed but whose content did not are recorded anew (the next use skips their hash)."""
    try:
        doc = json.loads(manifest_path(tree).read_bytes())
        entries = doc["entries"] if doc.get("format") == FORMAT else None
        if not isinstance(entries, dict):
            raise ValueError
    except (OSError, ValueError, AttributeError, TypeError):
        return "has no manifest of its files"
    top = str(tree)
    prefix, lstat = top + "/", os.lstat   # no os.path.join, no call per entry: this loop is the check's time
    changed = {}
    for rel, (kind, key, held) in entries.items():
        path = prefix + rel if rel != "." else top
        try:
            st = lstat(path)
        except OSError:
            return f"changed: {rel} is missing"
        if [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns] == key:
            continue
        try:
            now = _entry(path, st)
        except OSError:
            return f"changed: {rel} cannot be read"
        if kind == "d" == now[0]:
            names, below = set(os.listdir(path)), "" if rel == "." else rel + "/"
            recorded = {k[len(below):] for k in entries if k.startswith(below) and "/" not in k[len(below):]}
            added, gone = sorted(names - recorded - {"."}), sorted(recorded - names - {"."})
            if added or gone:
                name = below + (added or gone)[0]
                return f"changed: {name} was added" if added else f"changed: {name} is missing"
        elif now[0] != kind or now[2] != held:
            return f"changed: {rel} differs from what was unpacked"
        changed[rel] = now
    if changed:
        _write(tree, {**entries, **changed})
    return ""


def note(deb: str, why: str) -> None:
    from .fetch import note as say
    say(f"the unpacked {deb} in the cache {why}; unpacking it again from the verified .deb")


def replace(staging: Path, dest: Path) -> None:
    """Put a tree just unpacked into `staging` at `dest` and record its manifest. An old tree there
    (damaged, half unpacked, or without a manifest) is moved aside first, then removed."""
    import shutil
    import tempfile
    manifest_path(dest).unlink(missing_ok=True)   # no reader trusts the old tree meanwhile
    old = None
    if os.path.lexists(dest):
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old."))
        os.replace(dest, old / "tree")
    os.replace(staging, dest)
    record(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
