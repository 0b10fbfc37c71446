"""Packaging twice, from different folders with different umasks, gives byte-identical files; the
signing key's content never reaches a package or the output; bad input writes nothing."""
import hashlib
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, need_tool

pytestmark = pytest.mark.integration
SPEC = '[[module]]\nname = "clone_probe"\nversion = "0.1.0"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'
SECRET = "PRIVATE-KEY-MATERIAL-7f3a9c"


def kmod(*args, cwd, umask=None):
    def pre():
        if umask is not None:
            os.umask(umask)
    return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300, preexec_fn=pre)


def digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_packages_are_byte_identical(tmp_path):
    need_tool("dpkg-deb")
    need_tool("rpmbuild")
    results = []
    for name, umask in (("a", 0o022), ("b/deeper", 0o077)):
        work = tmp_path / name
        work.mkdir(parents=True)
        (work / "kmod.toml").write_text(SPEC)
        proc = kmod("package", "--no-lintian", cwd=work, umask=umask)
        assert proc.returncode == 0, proc.stderr
        results.append(digests(work / "dist" / "packages"))
    assert len(results[0]) == 3
    assert results[0] == results[1]


def test_signing_key_never_enters_a_package(tmp_path):
    need_tool("dpkg-deb")
    need_tool("rpmbuild")
    key = tmp_path / "MOK.priv"
    key.write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n")
    (tmp_path / "kmod.toml").write_text(SPEC)
    proc = kmod("package", "--no-lintian", "--sign-key", str(key), "--sign-cert", "/var/lib/dkms/mok.pub",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    pkgs = tmp_path / "dist" / "packages"
    deb = next(pkgs.glob("*.deb"))
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert SECRET.encode() not in data
    conf = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert str(key).encode() in conf  # the path is configured ...
    assert SECRET.encode() not in (pkgs / next(pkgs.glob("*.rpm")).name).read_bytes()
    for p in tmp_path.rglob("*"):
        if p.is_file() and p != key:
            assert SECRET.encode() not in p.read_bytes(), p  # ... the content is nowhere


@pytest.mark.parametrize("version", ["1.0 beta", "1..0", "1.0;id", "1.0-1"])
def test_bad_version_refused_before_anything_is_written(tmp_path, version):
    (tmp_path / "kmod.toml").write_text(SPEC.replace('"0.1.0"', f'"{version}"'))
    proc = kmod("package", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: module 'clone_probe': version")
    assert not (tmp_path / "dist").exists()
