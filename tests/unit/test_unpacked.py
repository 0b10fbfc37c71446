"""Unpacked trees in the cache are checked on every use against the manifest written when they were
unpacked (kmod.archive.unpacked, issue 8 item 4): a changed, added, removed or swapped entry is seen
(also with its mtime put back), and the lint's and the boot test's trees are unpacked again from their
verified .deb with a one-line note. The .deb is a real one, the pin's busybox-static from the mirror."""
import os
import shutil
from types import SimpleNamespace

import pytest

from kmod.archive import fetch, unpacked
from tests.conftest import need_tool


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    (t / "lib/modules").mkdir(parents=True)
    (t / "boot").mkdir()
    (t / "boot/System.map").write_bytes(b"ffffffff81000000 T _text\n")
    (t / "lib/modules/a.ko").write_bytes(b"\x7fELF module a")
    os.symlink("../boot/System.map", t / "lib/map")
    unpacked.record(t)
    return t


def test_an_untouched_tree_checks(tree):
    assert unpacked.check(tree) == ""
    assert unpacked.manifest_path(tree).is_file() and not (tree / unpacked.manifest_path(tree).name).exists()


def test_a_flipped_byte_is_seen_with_its_mtime_put_back(tree):
    f = tree / "lib/modules/a.ko"
    st = f.stat()
    f.write_bytes(b"\x7fELF module A")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert unpacked.check(tree) == "changed: lib/modules/a.ko differs from what was unpacked"


@pytest.mark.parametrize("change, said", [
    (lambda t: (t / "lib/modules/b.ko").write_bytes(b"planted"), "lib/modules/b.ko was added"),
    (lambda t: (t / "boot/System.map").unlink(), "boot/System.map is missing"),
    (lambda t: ((t / "lib/modules/a.ko").unlink(), os.symlink("/etc/passwd", t / "lib/modules/a.ko")),
     "lib/modules/a.ko differs"),
    (lambda t: ((t / "lib/map").unlink(), os.symlink("/etc/shadow", t / "lib/map")), "lib/map differs"),
    (lambda t: ((t / "boot/System.map").unlink(), os.mkfifo(t / "boot/System.map")), "boot/System.map differs"),
])
def test_added_removed_and_swapped_entries_are_seen(tree, change, said):
    change(tree)
    assert unpacked.check(tree).startswith("changed: " + said)


def test_a_touched_file_is_hashed_once_then_trusted_by_its_stat(tree, monkeypatch):
    (tree / "boot/System.map").touch()
    assert unpacked.check(tree) == ""
    monkeypatch.setattr(unpacked, "_hash", lambda path: pytest.fail(f"hashed {path} again"))
    assert unpacked.check(tree) == ""


def test_no_or_a_damaged_manifest_is_a_difference(tree):
    unpacked.manifest_path(tree).write_text("{not json")
    assert unpacked.check(tree) == "has no manifest of its files"
    unpacked.manifest_path(tree).unlink()
    assert unpacked.check(tree) == "has no manifest of its files"


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A private KMOD_CACHE holding the pin's busybox-static .deb (downloaded into the shared cache once)."""
    need_tool("dpkg-deb")
    from kmod import arch, pins
    pkg = pins.get("bookworm-6.1").package("busybox", arch.host())
    deb = fetch.fetch(pkg)
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    fetch.cached_path(pkg).parent.mkdir(parents=True)
    shutil.copy(deb, fetch.cached_path(pkg))
    return pkg


def test_the_boot_tests_busybox_is_unpacked_again_when_changed(private_cache, capsys):
    from kmod import arch, pins
    from kmod.boot import kernel
    pin, host = pins.get("bookworm-6.1"), arch.host()
    path = kernel.busybox(pin, host)
    good = path.read_bytes()
    assert unpacked.check(path.parent) == "" and capsys.readouterr().err == ""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(bytes([good[1000] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert kernel.busybox(pin, host) == path and path.read_bytes() == good
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the unpacked {private_cache.basename} in the cache changed: busybox differs" in err[0]
    assert kernel.busybox(pin, host) == path and capsys.readouterr().err == ""   # checked, nothing to say


def test_the_lints_tree_is_unpacked_again_when_a_file_is_planted(private_cache, capsys):
    from kmod.lint import target
    pin = SimpleNamespace(package=lambda role, a, f: private_cache)   # image_tree reads the package alone
    tree = target.image_tree(pin, None)
    assert (tree / ".complete").is_file() and unpacked.check(tree) == ""
    capsys.readouterr()
    bins = next(p for p in ("bin", "usr/bin") if (tree / p / "busybox").is_file())
    (tree / bins / "planted").write_bytes(b"#!/bin/sh\n")
    assert target.image_tree(pin, None) == tree
    assert not (tree / bins / "planted").exists() and unpacked.check(tree) == ""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"changed: {bins}/planted was added; unpacking it again" in err[0]
    assert not [p for p in tree.parent.iterdir() if ".old." in p.name or p.name.startswith(".unpack.")]

