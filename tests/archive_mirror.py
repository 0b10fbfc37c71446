"""A small signed Debian archive on disk, served as file://, for tests of what kmod believes of a mirror.

The archive is real in every part kmod checks: a gpg key made for the test signs each suite's InRelease
(clearsigned, as Debian does), the Release lists every index's size and sha256, the Packages.xz list
each .deb's sha256. Tests then tamper with one part and expect a refusal.
"""
import hashlib
import lzma
import subprocess
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.conftest import need_tool


class SigningKey:
    def __init__(self, home: Path, made_at: str = ""):
        """`made_at` (gpg's YYYYMMDDThhmmss): a key made and used at that time, valid for one day: by now,
        an expired key whose old signatures are good in themselves (gpgv: EXPKEYSIG), as an archive key
        past its expiry is."""
        gpg = need_tool("gpg")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home, self.gpg = home, gpg
        self.time = ["--faked-system-time", made_at] if made_at else []
        self._run("--quick-gen-key", "kmod test archive <archive@kmod.invalid>", "ed25519", "sign",
                  "1d" if made_at else "never")
        self.keyring = home / "archive-keyring.gpg"
        self.keyring.write_bytes(self._run("--export"))

    def _run(self, *args, input: bytes | None = None) -> bytes:
        return subprocess.run([self.gpg, "--homedir", str(self.home), "--batch", "--yes", "--passphrase", "",
                               "--pinentry-mode", "loopback", *self.time, *args], input=input, capture_output=True,
                              check=True).stdout

    def clearsign(self, text: bytes) -> bytes:
        return self._run("--clearsign", "--digest-algo", "SHA256", input=text)

    def detach_sign(self, text: bytes) -> bytes:
        """Release.gpg: the older form, a detached armoured signature beside a plain Release."""
        return self._run("--detach-sign", "--armor", "--digest-algo", "SHA256", input=text)


def stanza(fields: dict) -> str:
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


class Archive:
    """One archive base (a folder) with suites; add .debs, then publish() writes and signs the indexes."""

    def __init__(self, root: Path, key: SigningKey):
        self.root, self.key = root, key
        self.packages: dict[tuple[str, str], list[dict]] = {}  # (suite, arch) -> stanzas
        root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"file://{self.root}"

    def add(self, suite: str, name: str, version: str, arch: str, data: bytes, index_arch: str | None = None,
            **extra) -> dict:
        filename = f"pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb"
        (self.root / filename).parent.mkdir(parents=True, exist_ok=True)
        (self.root / filename).write_bytes(data)
        rec = {"Package": name, "Version": version, "Architecture": arch, **extra, "Filename": filename,
               "Size": len(data), "SHA256": hashlib.sha256(data).hexdigest()}
        self.packages.setdefault((suite, index_arch or arch), []).append(rec)
        return rec

    def publish(self, suite: str, arches: list[str], valid_days: float = 7) -> None:
        dists = self.root / "dists" / suite
        lines = []
        for a in arches:
            text = "\n".join(stanza(r) for r in self.packages.get((suite, a), [])).encode()
            for rel, data in ((f"main/binary-{a}/Packages", text), (f"main/binary-{a}/Packages.xz", lzma.compress(text))):
                (dists / rel).parent.mkdir(parents=True, exist_ok=True)
                (dists / rel).write_bytes(data)
                lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>10} {rel}")
        release = (f"Origin: kmod-test\nSuite: {suite}\nCodename: {suite}\nDate: {formatdate(time.time(), usegmt=True)}\n"
                   f"Valid-Until: {formatdate(time.time() + valid_days * 86400, usegmt=True)}\n"
                   f"Architectures: {' '.join(arches)}\nComponents: main\nSHA256:\n" + "\n".join(lines) + "\n")
        (dists / "Release").write_text(release)
        (dists / "InRelease").write_bytes(self.key.clearsign(release.encode()))


@pytest.fixture(scope="session")
def key(tmp_path_factory) -> SigningKey:
    """One archive signing key per test session (import this fixture into a test module)."""
    return SigningKey(tmp_path_factory.mktemp("gnupg"))
