"""Signing pinned builds with the kernel's own scripts/sign-file, in a container of its own.

The build runs the module's own Makefile, Kbuild and dkms scripts: untrusted code, so it never sees the
key. Once its modules are collected (regular files, through no link), a second container of the same
sealed kind, from the same locked image, runs nothing but sign-file over copies of them, and the signed
copies are collected back the same way. The private key is a secret: it is copied into a private folder
in memory (/dev/shm when there is one), readable by the signing container's uid only, mounted read-only
for that one container and removed right after. It never lands in an image layer (containers are never
committed), a log, the manifest (which records the certificate's sha256) or dist/ (the .ko carries the
signature only)."""
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import inputs
from ..errors import UserError

SECRET_MOUNT = "/run/kmod-sign"


@dataclass(frozen=True)
class BuildSigning:
    key: Path
    cert: Path
    cert_sha256: str

    @classmethod
    def from_flags(cls, key: str, cert: str) -> "BuildSigning | None":
        if not key and not cert:
            return None
        if not key or not cert:
            raise UserError("--sign-key and --sign-cert go together", "give both, PEM files on this machine")
        paths = []
        for flag, value, marker in (("--sign-key", key, b"PRIVATE KEY-----"), ("--sign-cert", cert, b"CERTIFICATE-----")):
            p = Path(value).expanduser()
            try:
                head = inputs.read(p, flag, inputs.MIB, "give a PEM file")
            except OSError as e:
                raise UserError(f"{flag} {value}: cannot read it ({e.strerror})") from None
            if marker not in head:
                raise UserError(f"{flag} {value} is not a PEM {marker.decode().rstrip('-').lower()}",
                                "e.g. openssl req -new -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem")
            paths.append(p.resolve())
        public = _public_key(["pkey", "-pubout", "-passin", "pass:"], paths[0])
        if not public:
            raise UserError(f"--sign-key {key}: openssl cannot read the key (a passphrase?)",
                            "sign-file needs an unencrypted PEM key (openssl pkey -in KEY -out PLAIN.pem)")
        if public != _public_key(["x509", "-noout", "-pubkey"], paths[1]):
            # sign-file would fail in every container; the build's lint could never verify it
            raise UserError(f"--sign-key {key} is not the private key of --sign-cert {cert}",
                            "give the key and the certificate made together")
        return cls(paths[0], paths[1], hashlib.sha256(paths[1].read_bytes()).hexdigest())

    def command(self, kdir: str, names: list[str]) -> list[str]:
        """Sign each of `names` (in the container's working folder) with the kernel's sign-file; say which
        one failed, by its name, in one line."""
        sign = " ".join(map(shlex.quote, [f"{kdir}/scripts/sign-file", "sha256", f"{SECRET_MOUNT}/key.pem",
                                          f"{SECRET_MOUNT}/cert.pem"]))
        script = f'for ko; do {sign} "$ko" || {{ echo "sign-file could not sign $ko (exit $?)"; exit 11; }}; done'
        return ["sh", "-c", script, "kmod-sign", *names]

    @contextlib.contextmanager
    def secret_dir(self, uid: int, gid: int):
        """A folder holding key.pem and cert.pem for one build, owned by the build's uid, gone afterwards."""
        from .. import run as runmod
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        d = runmod.scratch_dir("sign", base)    # after a SIGKILL, the next run removes it
        try:
            for name, src in (("key.pem", self.key), ("cert.pem", self.cert)):
                fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                with os.fdopen(fd, "wb") as f:
                    f.write(src.read_bytes())
                os.chown(d / name, uid, gid)
            os.chown(d, uid, gid)
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)


def sign_collected(signing: BuildSigning, runtime, image: str, kdir: str, out: Path, names: list[str],
                   work_root: Path, prefix: str) -> str:
    """Sign the collected modules `out`/NAME in a container that runs sign-file and nothing else; the
    signed copies replace them. "" when every one is signed, else the one line that says why not."""
    from .runtime.base import Mount
    ws = runtime.prepare(out, names, work_root, prefix=prefix)
    try:
        with signing.secret_dir(*runtime.build_user()) as secret:
            res = runtime.run(ws, signing.command(kdir, names), image=image, env={},
                              mounts=(Mount(secret, SECRET_MOUNT, True),))
        if res.exit_code != 0:
            lines = [line for line in res.output.splitlines() if line.strip()]
            return lines[-1] if lines else f"sign-file failed (exit {res.exit_code})"
        got = runtime.collect(ws, names, out)
        missing = [n for n in names if n not in got]
        return f"sign-file left no {missing[0]}" if missing else ""
    finally:
        runtime.cleanup(ws)


def _public_key(args: list[str], pem: Path) -> bytes:
    """The public key of a PEM key or certificate ("" when openssl cannot read it)."""
    from ..lint.signature import _openssl
    proc = subprocess.run([_openssl(), *args, "-in", str(pem)], capture_output=True, stdin=subprocess.DEVNULL)
    return proc.stdout if proc.returncode == 0 else b""
