"""A suite's signed Release, and the indexes it vouches for.

Nothing read from the mirror is believed until it is vouched for: the suite's InRelease (or Release +
Release.gpg) must carry a good signature from a key of Debian's archive keyring (gpgv), name the suite
asked for and not be expired; every index is then checked against the size and sha256 the Release gives
for it. Only gpgv's own output (the signed text) is parsed, never the file as served, so text appended
around a signature is never read. A signature that does not verify is refused with one line; an index
whose hash differs is discarded with a note, like apt does while a mirror syncs.
"""
import email.utils
import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InfraError, UserError
from . import fetch

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def keyring() -> Path:
    """Debian's archive keyring; KMOD_ARCHIVE_KEYRING names another (a private mirror, the tests)."""
    path = Path(os.environ.get("KMOD_ARCHIVE_KEYRING") or DEFAULT_KEYRING)
    if not path.is_file():
        raise InfraError(f"the archive keyring {path} is missing: the mirror's signatures cannot be checked",
                         "apt-get install debian-archive-keyring, or set KMOD_ARCHIVE_KEYRING")
    return path


@dataclass(frozen=True)
class Release:
    """A verified Release: which (size, sha256) each index path below dists/SUITE/ must have."""
    uri: str
    suite: str
    hashes: dict[str, tuple[int, str]]

    def url(self, path: str) -> str:
        return f"{self.uri}/dists/{self.suite}/{path}"

    def index(self, path: str, log=lambda s: None) -> bytes | None:
        """The bytes of index `path`, checked against this Release; None when the Release does not
        list it (the suite has no such index) or when what the mirror serves does not match it."""
        if path not in self.hashes:
            return None
        size, sha = self.hashes[path]
        data = fetch.read_url(self.url(path))
        if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            got = "missing" if data is None else f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}..."
            log(f"  discarding {self.url(path)}: it does not match its signed Release "
                f"(expected {size} bytes, sha256 {sha[:16]}...; got {got}); mirror sync in progress or tampered")
            return None
        return data


def _gpgv(signed: bytes, detached: bytes | None) -> tuple[bytes | None, str]:
    """(the signed text, gpgv's complaint). The text is None unless a key of the keyring made a valid
    signature and no signature is bad."""
    with tempfile.TemporaryDirectory(prefix="kmod-gpgv-") as tmp:
        data = Path(tmp) / "data"
        data.write_bytes(signed)
        argv = ["gpgv", "--status-fd", "2", "--keyring", str(keyring())]
        if detached is None:
            argv += ["--output", str(Path(tmp) / "out"), str(data)]
        else:
            (Path(tmp) / "sig").write_bytes(detached)
            argv += [str(Path(tmp) / "sig"), str(data)]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise InfraError("gpgv is missing: the mirror's signatures cannot be checked", "apt-get install gpgv") from None
        status = proc.stderr.decode("utf-8", "replace").splitlines()
        ok, why = judge_signatures(status)
        if not ok:
            return None, why
        return (data.read_bytes() if detached is not None else (Path(tmp) / "out").read_bytes()), ""


# gpgv's status words for a signature that is good in itself but made by a key that is no longer to be
# trusted: apt counts such signers as worthless, so a Release signed by them alone is refused.
_WORTHLESS = {"EXPKEYSIG": "made by an expired key", "REVKEYSIG": "made by a revoked key",
              "EXPSIG": "expired"}


def judge_signatures(status: list[str]) -> tuple[bool, str]:
    """apt's rule over gpgv's --status-fd lines: at least one good signature (GOODSIG: a key of the keyring,
    neither expired nor revoked) and no bad one (BADSIG). (ok, why not)."""
    words = [line.split()[1:3] for line in status if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
    if any(w[0] == "BADSIG" for w in words):
        return False, "BAD signature"
    if any(w[0] == "GOODSIG" for w in words):
        return True, ""
    worthless = [f"{_WORTHLESS[w[0]]} ({w[1]})" for w in words if w[0] in _WORTHLESS and len(w) > 1]
    if worthless:
        return False, "its only signature is " + ", ".join(worthless)
    if any(w[0] in ("NO_PUBKEY", "ERRSIG") for w in words):
        return False, "signed by no key of the keyring"
    return False, "no valid signature"


def verified(uri: str, suite: str, now: float | None = None) -> Release:
    """The Release of `suite` at `uri`, signature, name and date checked; refuses with one line."""
    from debian import deb822
    base = f"{uri}/dists/{suite}"
    signed = fetch.read_url(f"{base}/InRelease")
    if signed is not None:
        text, why, where = *_gpgv(signed, None), f"{base}/InRelease"
    else:
        plain, sig = fetch.read_url(f"{base}/Release"), fetch.read_url(f"{base}/Release.gpg")
        if plain is None or sig is None:
            raise InfraError(f"the mirror has no signed Release for {suite} ({base}/InRelease is missing)",
                             "check KMOD_MIRROR / KMOD_SECURITY_MIRROR")
        text, why, where = *_gpgv(plain, sig), f"{base}/Release"
    if text is None:
        raise UserError(f"refusing {where}: its signature does not verify against {keyring()} ({why})",
                        "the mirror may be compromised, or the keyring is outdated")
    rel = deb822.Release(text.decode("utf-8", "replace"))
    names = {rel.get("Suite", ""), rel.get("Codename", "")}
    if suite not in names:
        raise UserError(f"refusing {where}: it is signed for {' / '.join(sorted(n for n in names if n))}, "
                        f"not {suite}", "the mirror serves another suite's Release (a downgrade?)")
    until = rel.get("Valid-Until")
    if until:
        try:
            expires = email.utils.parsedate_to_datetime(until).timestamp()
        except (TypeError, ValueError):
            raise UserError(f"refusing {where}: unreadable Valid-Until {until!r}") from None
        if expires < (now if now is not None else time.time()):
            raise UserError(f"refusing {where}: it expired on {until}",
                            "the mirror is stale or replays an old Release; use an up-to-date mirror")
    hashes = {}
    for entry in rel.get("SHA256", []):
        hashes[entry["name"]] = (int(entry["size"]), entry["sha256"])
    if not hashes:
        raise UserError(f"refusing {where}: it lists no SHA256 hashes")
    return Release(uri, suite, hashes)
