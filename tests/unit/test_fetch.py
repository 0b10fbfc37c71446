"""Locked downloads: the sha256 in the lock is checked, a mismatch is an error and leaves no file."""
import hashlib

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
