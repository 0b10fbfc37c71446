"""Signed Releases: a local file:// archive signed by a key made for the test, then tampered with.
What kmod reads from a mirror must carry a good signature and match the signed hashes (issue 8, item 2)."""
import json
import lzma
import shutil
import subprocess
import sys

import pytest

from kmod import paths, pins
from kmod.archive import mirror, release, resolve
from kmod.errors import UserError
from tests.archive_mirror import Archive, SigningKey, key  # noqa: F401 (a fixture)
from tests.conftest import ROOT

SUITES = ("bookworm", "bookworm-updates", "bookworm-security")


@pytest.fixture
def archive(tmp_path, key, monkeypatch):
    """bookworm with -updates and -security in one archive base, a few packages, signed."""
    a = Archive(tmp_path / "debian", key)
    a.add("bookworm", "hello", "1.0", "amd64", b"hello 1.0")
    a.add("bookworm-security", "hello", "1.1", "amd64", b"hello 1.1")
    for s in SUITES:
        a.publish(s, ["amd64"])
    monkeypatch.setenv("KMOD_ARCHIVE_KEYRING", str(key.keyring))
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mirror, "configured", lambda: mirror.Mirror(a.uri, a.uri))
    return a


def test_good_archive_is_read(archive):
    cat = resolve.Catalogue(mirror.configured(), "bookworm", ["amd64"], log=lambda s: None)
    assert [r["Version"] for r, _ in cat.versions("hello", "amd64")] == ["1.1", "1.0"]
    assert cat.discarded == []


def test_tampered_inrelease_is_refused(archive):
    path = archive.root / "dists/bookworm-security/InRelease"
    path.write_bytes(path.read_bytes().replace(b"Origin: kmod-test", b"Origin: kmod-evil"))
    with pytest.raises(UserError, match=r"refusing .*bookworm-security/InRelease: its signature does not verify"):
        resolve.Catalogue(mirror.configured(), "bookworm", ["amd64"], log=lambda s: None)


def test_text_outside_the_signature_is_never_read(archive):
    """Hashes appended after a valid signature block must not be believed."""
    path = archive.root / "dists/bookworm/InRelease"
    evil = b"\n-----BEGIN PGP SIGNED MESSAGE-----\nSHA256:\n 00 1 main/binary-amd64/Packages.xz\n"
    path.write_bytes(path.read_bytes() + evil)
    try:
        rel = release.verified(archive.uri, "bookworm")
    except UserError:
        return  # refusing outright is as good
    assert rel.hashes["main/binary-amd64/Packages.xz"][1] != "00"


def test_release_with_a_detached_signature_is_read_and_checked(archive):
    """No InRelease: Release + Release.gpg, as older mirrors serve them; a changed Release is refused."""
    dists = archive.root / "dists/bookworm"
    (dists / "InRelease").unlink()
    (dists / "Release.gpg").write_bytes(archive.key.detach_sign((dists / "Release").read_bytes()))
    assert "main/binary-amd64/Packages.xz" in release.verified(archive.uri, "bookworm").hashes
    (dists / "Release").write_text((dists / "Release").read_text().replace("kmod-test", "kmod-evil"))
    with pytest.raises(UserError, match=r"refusing .*bookworm/Release: its signature does not verify"):
        release.verified(archive.uri, "bookworm")


def test_a_signature_by_an_expired_key_is_refused(archive, tmp_path, monkeypatch):
    """A key past its expiry made a signature that is good in itself (gpgv: EXPKEYSIG, and VALIDSIG);
    apt does not trust it, nor does kmod."""
    old = SigningKey(tmp_path / "expired-gnupg", made_at="20200101T000000")
    monkeypatch.setenv("KMOD_ARCHIVE_KEYRING", str(old.keyring))
    path = archive.root / "dists/bookworm/InRelease"
    path.write_bytes(old.clearsign((archive.root / "dists/bookworm/Release").read_bytes()))
    with pytest.raises(UserError, match=r"refusing .*bookworm/InRelease: its signature does not verify.*expired"):
        release.verified(archive.uri, "bookworm")


def test_foreign_key_is_refused(archive, tmp_path, monkeypatch):
    other = SigningKey(tmp_path / "other-gnupg")
    monkeypatch.setenv("KMOD_ARCHIVE_KEYRING", str(other.keyring))
    with pytest.raises(UserError, match="signature does not verify"):
        release.verified(archive.uri, "bookworm")


def test_release_of_another_suite_is_refused(archive):
    """A validly signed bullseye Release served as bookworm's is a downgrade, not a Release."""
    dists = archive.root / "dists"
    shutil.copy(dists / "bookworm-updates/InRelease", dists / "bookworm/InRelease")
    with pytest.raises(UserError, match="signed for bookworm-updates, not bookworm"):
        release.verified(archive.uri, "bookworm")


def test_expired_release_is_refused(archive):
    archive.publish("bookworm", ["amd64"], valid_days=-1)
    with pytest.raises(UserError, match="expired"):
        release.verified(archive.uri, "bookworm")


def test_tampered_index_is_discarded_with_a_note(archive):
    path = archive.root / "dists/bookworm-security/main/binary-amd64/Packages.xz"
    text = lzma.decompress(path.read_bytes()).replace(b"Version: 1.1", b"Version: 9.9")
    path.write_bytes(lzma.compress(text))
    notes = []
    cat = resolve.Catalogue(mirror.configured(), "bookworm", ["amd64"], log=notes.append)
    assert [r["Version"] for r, _ in cat.versions("hello", "amd64")] == ["1.0"]  # what verifies remains
    assert cat.discarded == [f"{archive.uri}/dists/bookworm-security/main/binary-amd64/Packages.xz"]
    assert len(notes) == 1 and "does not match its signed Release" in notes[0]


def test_update_with_a_tampered_index_refuses_and_keeps_the_lock(archive, tmp_path, monkeypatch):
    """`toolchains --update` over a mirror whose only kernel index was altered: one line, lock untouched."""
    shutil.copytree(ROOT / "toolchains", tmp_path / "toolchains")
    monkeypatch.setattr(paths, "toolchains", lambda: tmp_path / "toolchains")
    pins.all_pins.cache_clear()
    try:
        for a in ("amd64", "arm64"):
            archive.add("bookworm", "linux-headers-6.1.0-99-" + a, "6.1.999-1", a, b"headers " + a.encode())
        for s in SUITES:
            archive.publish(s, ["amd64", "arm64"])
        path = archive.root / "dists/bookworm/main/binary-arm64/Packages.xz"
        path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
        before = (tmp_path / "toolchains/kernels.lock").read_bytes()
        with pytest.raises(UserError) as e:
            resolve.update([pins.get("bookworm-6.1")], log=lambda s: None)
        assert "1 index(es) discarded for not matching their signed Release" in str(e.value)
        assert "\n" not in e.value.line()
        assert (tmp_path / "toolchains/kernels.lock").read_bytes() == before
    finally:
        pins.all_pins.cache_clear()


def test_cli_refuses_a_tampered_inrelease_in_one_line(archive, tmp_path):
    """The real program, pointed at the tampered mirror by the user's own overrides."""
    path = archive.root / "dists/bookworm/InRelease"
    path.write_bytes(path.read_bytes().replace(b"main/binary-amd64/Packages.xz", b"main/binary-amd64/Packages.gz"))
    proc = subprocess.run([sys.executable, "-m", "kmod", "toolchains", "--update", "--kernel", "bookworm-6.1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KMOD_MIRROR": archive.uri,
                               "KMOD_SECURITY_MIRROR": archive.uri, "KMOD_CACHE": str(tmp_path / "cache"),
                               "KMOD_ARCHIVE_KEYRING": str(archive.key.keyring), "HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert errors == [ln for ln in proc.stderr.splitlines() if not ln.startswith("  ")]
    assert len(errors) == 1 and "bookworm/InRelease: its signature does not verify" in errors[0]
    assert "Traceback" not in proc.stderr
    assert json.loads((ROOT / "toolchains/kernels.lock").read_text())["pins"]["bookworm-6.1"]["kernels"]
