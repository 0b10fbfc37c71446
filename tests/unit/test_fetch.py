"""Locked downloads: the sha256 in the lock is checked, a mismatch is an error and leaves no file."""
import hashlib
import os

import pytest

from kmod.archive import fetch, mirror
from kmod.errors import InfraError, UserError
from kmod.pins import Package


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "x_1_all.deb").write_bytes(b"not really a deb")
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    mirror.configured.cache_clear()
    monkeypatch.setattr(mirror, "configured", lambda: mirror.Mirror(f"file://{tmp_path}", f"file://{tmp_path}"))
    return tmp_path


def pkg(sha: str) -> Package:
    return Package(name="x", version="1", arch="all", role="headers", filename="pool/x_1_all.deb",
                   archive="main", sha256=sha, size=16)


def test_good_download_is_cached(local_mirror):
    good = hashlib.sha256(b"not really a deb").hexdigest()
    path = fetch.fetch(pkg(good))
    assert path.read_bytes() == b"not really a deb"
    (local_mirror / "pool" / "x_1_all.deb").unlink()
    assert fetch.fetch(pkg(good)) == path  # served from the cache


def test_sha_mismatch_is_an_error(local_mirror):
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch.fetch(pkg("0" * 64))
    assert not any((local_mirror / "cache" / "debs").iterdir())


def test_missing_file_is_one_line(local_mirror):
    bad = Package(name="y", version="1", arch="all", role="headers", filename="pool/y.deb", archive="main",
                  sha256="0" * 64, size=1)
    with pytest.raises(InfraError, match="cannot download y.deb"):
        fetch.fetch(bad)


def test_flipped_byte_in_the_cache_is_fetched_again_with_a_note(local_mirror):
    """Even with size and mtime put back as they were: the ctime in the stat index gives it away."""
    good = hashlib.sha256(b"not really a deb").hexdigest()
    path = fetch.fetch(pkg(good))
    st = path.stat()
    path.write_bytes(b"not really a dEb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    notes = []
    assert fetch.fetch(pkg(good), note=notes.append) == path
    assert path.read_bytes() == b"not really a deb"
    assert len(notes) == 1 and "x_1_all.deb no longer matches the lock's sha256" in notes[0]


def test_planted_symlink_in_the_cache_is_replaced_not_followed(local_mirror, tmp_path):
    good = hashlib.sha256(b"not really a deb").hexdigest()
    path = fetch.cached_path(pkg(good))
    path.parent.mkdir(parents=True)
    (tmp_path / "elsewhere").write_bytes(b"not really a deb")  # even the right bytes, behind a link
    os.symlink(tmp_path / "elsewhere", path)
    notes = []
    assert fetch.fetch(pkg(good), note=notes.append) == path
    assert not path.is_symlink() and len(notes) == 1


def test_unchanged_cache_entry_is_not_rehashed(local_mirror, monkeypatch):
    good = hashlib.sha256(b"not really a deb").hexdigest()
    fetch.fetch(pkg(good))
    calls = []
    monkeypatch.setattr(fetch, "sha256_stream", lambda f: calls.append(f) or good)
    fetch.fetch(pkg(good))
    assert calls == []  # stat unchanged: the index answers
    fetch.cached_path(pkg(good)).touch()
    fetch.fetch(pkg(good))
    assert len(calls) == 1  # mtime changed: hashed again


def test_corrupt_cache_whose_mirror_copy_is_gone_is_an_error(local_mirror):
    good = hashlib.sha256(b"not really a deb").hexdigest()
    path = fetch.fetch(pkg(good))
    path.write_bytes(b"garbage")
    (local_mirror / "pool" / "x_1_all.deb").unlink()
    with pytest.raises(InfraError, match="cannot download x_1_all.deb"):
        fetch.fetch(pkg(good), note=lambda s: None)
    assert not path.exists()
