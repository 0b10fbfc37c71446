"""A module's signature, as the kernel's module loader reads it: the PKCS#7 blob that scripts/sign-file
appends, then a struct module_signature and the magic string, at the very end of the file.

    check(data, cert)      the lint's findings: signature-present (signer, key, hash, as modinfo shows
                           them) or a malformed one; with a certificate also signature-absent and
                           signature-invalid (an unsigned module without --cert gets none: most are)
    Cert.load(path)        a PEM or DER X.509 certificate for --cert, refused with one line otherwise
    state(data, cert)      "absent", "present", "verifies" or "does not verify" against `cert`
    verifies(data, cert)   whether it is a valid signature of the module by `cert`'s key (openssl cms on
                           the module without its signature: the bytes the kernel checks)
"""
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import inputs
from ..errors import InfraError, UserError
from .findings import Finding

MAGIC = b"~Module signature appended~\n"
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 pad[3]; be32 sig_len; }
TRAILER = struct.Struct(">BBBBB3xI")
PKEY_ID_PKCS7 = 2
# digest algorithm OIDs (DER contents) -> the names sign-file and modinfo use
_NIST_HASH = bytes.fromhex("6086480165030402")
HASHES = {_NIST_HASH + b"\x01": "sha256", _NIST_HASH + b"\x02": "sha384", _NIST_HASH + b"\x03": "sha512",
          _NIST_HASH + b"\x04": "sha224", _NIST_HASH + b"\x08": "sha3-256", _NIST_HASH + b"\x09": "sha3-384",
          _NIST_HASH + b"\x0a": "sha3-512", bytes.fromhex("2b0e03021a"): "sha1"}
_CN, _O = bytes.fromhex("550403"), bytes.fromhex("55040a")


@dataclass(frozen=True)
class Signature:
    blob: bytes      # the PKCS#7 (DER) signature
    signed: bytes    # the bytes it signs: the module without the signature


@dataclass(frozen=True)
class Signer:
    """Who signed, as `modinfo` shows it: signer (the issuer's CN), sig_key (serial or key id), sig_hashalgo."""
    name: str
    key: str
    hash: str

    def __str__(self) -> str:
        return f"signer {self.name!r}, key {self.key}, {self.hash}"


@dataclass(frozen=True)
class Cert:
    """A certificate to verify against: its path as given, its PEM text and the sha256 of that (the
    lint cache's key: another certificate is another verdict)."""
    path: str
    pem: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.pem).hexdigest()

    @classmethod
    def load(cls, path: str) -> "Cert":
        openssl = _openssl()
        try:
            raw = inputs.read(Path(path).expanduser(), "--cert", inputs.MIB,
                              "give the X.509 certificate (PEM or DER) the modules should be signed with")
        except OSError as e:
            raise UserError(f"--cert {path}: cannot read it ({e.strerror})",
                            "give the X.509 certificate (PEM or DER) the modules should be signed with") from None
        fmt = "PEM" if raw.lstrip().startswith(b"-----") else "DER"
        proc = subprocess.run([openssl, "x509", "-inform", fmt], input=raw, capture_output=True)
        if proc.returncode != 0 or b"CERTIFICATE" not in proc.stdout:
            raise UserError(f"--cert {path} is not an X.509 certificate (PEM or DER)",
                            "give the certificate (e.g. the signing_key.x509 or the cert.pem of sign-file)")
        return cls(path, proc.stdout)


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise InfraError("openssl is not installed: module signatures cannot be verified", "apt-get install openssl")
    return found


def read(data: bytes) -> Signature | None:
    if not data.endswith(MAGIC) or len(data) < len(MAGIC) + TRAILER.size:
        return None
    end = len(data) - len(MAGIC)
    _, _, id_type, _, _, sig_len = TRAILER.unpack(data[end - TRAILER.size:end])
    start = end - TRAILER.size - sig_len
    if id_type != PKEY_ID_PKCS7 or start < 0:
        return None
    return Signature(data[start:end - TRAILER.size], data[:start])


def _tlv(b: bytes, i: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at i."""
    if i + 2 > end:
        raise ValueError("truncated DER")
    tag, n, i = b[i], b[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4 or i + k > end:
            raise ValueError("bad DER length")
        n, i = int.from_bytes(b[i:i + k], "big"), i + k
    if i + n > end:
        raise ValueError("truncated DER")
    return tag, i, i + n


def _children(b: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out, i = [], start
    while i < end:
        out.append(_tlv(b, i, end))
        i = out[-1][2]
    return out


def signer(blob: bytes) -> Signer | None:
    """The first SignerInfo of a PKCS#7 SignedData (RFC 5652), or None when the blob is not one."""
    try:
        _, s, e = _tlv(blob, 0, len(blob))
        content = [c for c in _children(blob, s, e) if c[0] == 0xA0][0]
        _, s, e = _tlv(blob, content[1], content[2])           # SignedData
        infos = [c for c in _children(blob, s, e) if c[0] == 0x31][-1]
        _, s, e = _children(blob, infos[1], infos[2])[0]      # the first SignerInfo
        _version, sid, digest = _children(blob, s, e)[:3]
        oid = _children(blob, digest[1], digest[2])[0]
        algo = HASHES.get(blob[oid[1]:oid[2]], "unknown hash")
        if sid[0] == 0x80:                                     # subjectKeyIdentifier
            return Signer("(by key id)", blob[sid[1]:sid[2]].hex(":"), algo)
        issuer, serial = _children(blob, sid[1], sid[2])[:2]
        return Signer(_name(blob, issuer), blob[serial[1]:serial[2]].hex(":"), algo)
    except (ValueError, IndexError):
        return None


def _name(b: bytes, name: tuple[int, int, int]) -> str:
    """The CN of an X.501 Name (the O when it has none), as the kernel names a signer."""
    attrs = {}
    for rdn in _children(b, name[1], name[2]):
        for atv in _children(b, rdn[1], rdn[2]):
            oid, value = _children(b, atv[1], atv[2])[:2]
            attrs.setdefault(b[oid[1]:oid[2]], b[value[1]:value[2]].decode("utf-8", "replace"))
    return attrs.get(_CN) or attrs.get(_O) or "(no name)"


def check(data: bytes, cert: Cert | None = None) -> list[Finding]:
    sig = read(data)
    if sig is None:
        if data.endswith(MAGIC):
            return [Finding("module-signature", "warning", "module signature: malformed (the magic is there, "
                            "the PKCS#7 trailer is not); the kernel will refuse it")]
        if cert is None:
            return []
        return [Finding("signature-absent", "error",
                        f"the module is not signed, and --cert {cert.path} asks for a signature: a kernel that "
                        f"enforces signatures refuses it (sign it: scripts/sign-file sha256 KEY CERT FILE.ko, "
                        f"or build with --sign-key/--sign-cert)")]
    who = signer(sig.blob)
    what = str(who) if who else "a PKCS#7 blob kmod cannot read"
    out = [Finding("signature-present", "info", f"module signature: present (PKCS#7, {len(sig.blob)} bytes, {what})")]
    if cert is not None and not verifies(data, cert):
        out.append(Finding("signature-invalid", "error",
                           f"the module's signature ({what}) does not verify against --cert {cert.path}: the "
                           f"kernel that trusts that certificate refuses it (re-sign with its key, or give the "
                           f"certificate it was signed with)"))
    return out


def state(data: bytes, cert: Path | Cert | None = None) -> str:
    if read(data) is None:
        return "absent"
    if cert is None:
        return "present"
    return "verifies" if verifies(data, cert if isinstance(cert, Cert) else Cert.load(str(cert))) else "does not verify"


def verifies(data: bytes, cert: Cert) -> bool:
    """True when the appended signature is valid for these bytes under `cert`'s key."""
    sig = read(data)
    if sig is None:
        return False
    with tempfile.TemporaryDirectory(prefix="kmod-sig-") as tmp:
        blob, body, pem = (os.path.join(tmp, n) for n in ("sig.p7", "body", "cert.pem"))
        Path(blob).write_bytes(sig.blob)
        Path(body).write_bytes(sig.signed)
        Path(pem).write_bytes(cert.pem)
        proc = subprocess.run([_openssl(), "cms", "-verify", "-binary", "-inform", "DER", "-in", blob, "-content",
                               body, "-certfile", pem, "-nointern", "-noverify", "-out", os.devnull],
                              capture_output=True)
        return proc.returncode == 0
