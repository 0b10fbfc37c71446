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


class _FlakyMirror:
    """A real HTTP server on loopback that answers 503 (a mirror mid-sync) `failures` times, then the file;
    404 for any other path."""

    def __init__(self, body: bytes, failures: int):
        import http.server
        import threading
        self.body, self.failures, self.requests = body, failures, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if self.path != "/pool/x_1_all.deb":
                    self.send_error(404)
                elif outer.failures:
                    outer.failures -= 1
                    self.send_error(503)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.body)))
                    self.end_headers()
                    self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    servers = []

    def start(failures: int) -> _FlakyMirror:
        m = _FlakyMirror(b"not really a deb", failures)
        servers.append(m)
        monkeypatch.setattr(mirror, "configured", lambda: mirror.Mirror(m.url, m.url))
        return m
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    yield start
    for m in servers:
        m.server.shutdown()


def test_a_mirror_that_fails_for_a_moment_is_asked_again_with_a_note(flaky):
    m = flaky(failures=2)
    notes = []
    good = hashlib.sha256(b"not really a deb").hexdigest()
    assert fetch.fetch(pkg(good), note=notes.append).read_bytes() == b"not really a deb"
    assert m.requests == 3
    assert len(notes) == 2 and all("x_1_all.deb" in n and "trying again" in n for n in notes)


def test_a_mirror_that_keeps_failing_ends_in_one_line_after_its_retries(flaky):
    m = flaky(failures=100)
    good = hashlib.sha256(b"not really a deb").hexdigest()
    with pytest.raises(InfraError, match="HTTP 503"):
        fetch.fetch(pkg(good), note=lambda _: None)
    assert m.requests == len(fetch.RETRY_DELAYS) + 1
    assert not list(fetch.cached_path(pkg(good)).parent.iterdir())     # no half-written file


def test_an_answer_is_not_retried(flaky):
    """A 404 is the mirror's answer, not a hiccup: one request, one line."""
    m = flaky(failures=0)
    bad = Package(name="y", version="1", arch="all", role="headers", filename="pool/y.deb", archive="main",
                  sha256="0" * 64, size=1)
    with pytest.raises(InfraError, match="HTTP 404"):
        fetch.fetch(bad, note=lambda _: None)
    assert m.requests == 1
    assert fetch.read_url(f"{m.url}/dists/nowhere/InRelease") is None and m.requests == 2


def test_temporary_name_resolution_failure_is_transient():
    import socket
    import urllib.error
    assert fetch._transient(urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure")))
    assert not fetch._transient(urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name not known")))
    assert not fetch._transient(urllib.error.URLError(ConnectionRefusedError()))
