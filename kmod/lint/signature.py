"""A module's signature, as the kernel's module loader reads it: the PKCS#7 blob that scripts/sign-file
appends, then a struct module_signature and the magic string, at the very end of the file.

    check(data)            the lint's finding for a signed module: present (size) or malformed; an
                           unsigned module gets none (most modules are, and rules stay quiet on them)
    state(data, cert)      "absent", "present", "verifies" or "does not verify" against `cert`
    verifies(data, cert)   whether it is a valid signature of the module by `cert`'s key (openssl cms)
"""
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .findings import Finding

MAGIC = b"~Module signature appended~\n"
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 pad[3]; be32 sig_len; }
TRAILER = struct.Struct(">BBBBB3xI")
PKEY_ID_PKCS7 = 2


@dataclass(frozen=True)
class Signature:
    blob: bytes      # the PKCS#7 (DER) signature
    signed: bytes    # the bytes it signs: the module without the signature


def read(data: bytes) -> Signature | None:
    if not data.endswith(MAGIC) or len(data) < len(MAGIC) + TRAILER.size:
        return None
    end = len(data) - len(MAGIC)
    _, _, id_type, _, _, sig_len = TRAILER.unpack(data[end - TRAILER.size:end])
    start = end - TRAILER.size - sig_len
    if id_type != PKEY_ID_PKCS7 or start < 0:
        return None
    return Signature(data[start:end - TRAILER.size], data[:start])


def check(data: bytes) -> list[Finding]:
    sig = read(data)
    if sig is None:
        return [Finding("module-signature", "warning", "module signature: malformed (the magic is there, "
                        "the PKCS#7 trailer is not); the kernel will refuse it")] if data.endswith(MAGIC) else []
    return [Finding("module-signature", "info", f"module signature: present (PKCS#7, {len(sig.blob)} bytes)")]


def state(data: bytes, cert: Path | None = None) -> str:
    if read(data) is None:
        return "absent"
    if cert is None:
        return "present"
    return "verifies" if verifies(data, cert) else "does not verify"


def verifies(data: bytes, cert: Path) -> bool:
    """True when the appended signature is valid for these bytes under `cert` (PEM or DER X.509)."""
    sig = read(data)
    openssl = shutil.which("openssl")
    if sig is None or openssl is None:
        return False
    with tempfile.TemporaryDirectory(prefix="kmod-sig-") as tmp:
        blob, body = os.path.join(tmp, "sig.p7"), os.path.join(tmp, "body")
        Path(blob).write_bytes(sig.blob)
        Path(body).write_bytes(sig.signed)
        fmt = "PEM" if Path(cert).read_bytes().lstrip().startswith(b"-----") else "DER"
        pem = os.path.join(tmp, "cert.pem")
        subprocess.run([openssl, "x509", "-inform", fmt, "-in", str(cert), "-out", pem], capture_output=True)
        proc = subprocess.run([openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", blob, "-content",
                               body, "-certfile", pem, "-nointern", "-noverify", "-out", os.devnull],
                              capture_output=True)
        return proc.returncode == 0
