"""Module signatures (issue 8, item 7): a module compiled here, signed with the kernel's own
scripts/sign-file (from the pin's locked linux-kbuild package, fetched into KMOD_CACHE), then linted
with and without --cert: present (signer, key, hash), absent, invalid, and a --cert that is no
certificate (one line, exit 1)."""
import json
import shutil
import subprocess

import pytest

from kmod.lint import lint_paths, signature
from kmod.lint.report import format_text, to_json
from tests.conftest import ROOT, need_tool, run_cli, run_program

MODULE = """
    int init_module(void) { _printk("x"); return 0; }
    void cleanup_module(void) { }
"""


@pytest.fixture(scope="module")
def sign_file(tmp_path_factory):
    """scripts/sign-file of the bookworm-6.1 kbuild package: a host binary (the host is that suite)."""
    need_tool("dpkg-deb")
    from kmod import arch, pins
    from kmod.archive import fetch
    from kmod.lint import target
    pin = pins.get("bookworm-6.1")
    deb = fetch.fetch(pin.package("kbuild", arch.host()))
    dest = tmp_path_factory.mktemp("kbuild")
    target._extract(deb, dest, ["*/scripts/sign-file"])
    found = list(dest.rglob("sign-file"))
    assert found, f"no scripts/sign-file in {deb.name}"
    return found[0]


def make_cert(folder, cn: str):
    need_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
                    "-out", "cert.pem", "-days", "2", "-subj", f"/CN={cn}/"], cwd=folder, check=True,
                   capture_output=True)
    return folder / "key.pem", folder / "cert.pem"


@pytest.fixture
def signed(tmp_path, build, sign_file):
    """(signed .ko, unsigned .ko, cert.pem of the signing key, cert.der of another key)"""
    key, cert = make_cert(tmp_path / "mine", "kmod-test-signer")
    _, other = make_cert(tmp_path / "other", "someone-else")
    der = tmp_path / "other/cert.der"
    subprocess.run(["openssl", "x509", "-in", str(other), "-outform", "DER", "-out", str(der)], check=True)
    ko = build("x86_64", MODULE, name="signed")
    unsigned = tmp_path / "unsigned.ko"
    shutil.copy(ko, unsigned)
    p = subprocess.run([str(sign_file), "sha256", str(key), str(cert), str(ko)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return ko, unsigned, cert, der


def findings(report, path):
    return [(f.rule, f.severity, f.message) for m in report.modules if m.path == str(path) for f in m.findings
            if f.rule.startswith("signature") or f.rule == "module-signature"]


def test_signature_present_names_signer_key_and_hash(signed):
    ko, unsigned, cert, _ = signed
    serial = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-serial"], capture_output=True,
                            text=True, check=True).stdout.strip().split("=")[1].lower()
    report = lint_paths([ko, unsigned], use_cache=False)
    [(rule, sev, msg)] = findings(report, ko)
    assert (rule, sev) == ("signature-present", "info")
    assert "'kmod-test-signer'" in msg and "sha256" in msg
    assert serial.lstrip("0") in msg.replace(":", "").lstrip("0"), msg
    assert findings(report, unsigned) == []          # unsigned and no --cert: no finding, but said
    states = {m["path"]: m["signature"] for m in to_json(report)["modules"]}
    assert states == {str(ko): "present", str(unsigned): "absent"}
    assert "signatures: 1 present, 1 absent" in format_text(report)


def test_cert_verifies_the_bytes_the_kernel_checks(signed, tmp_path):
    ko, unsigned, cert, other_der = signed
    report = lint_paths([ko, unsigned], cert=str(cert), use_cache=False)
    assert [r for r, _, _ in findings(report, ko)] == ["signature-present"]
    assert [(r, s) for r, s, _ in findings(report, unsigned)] == [("signature-absent", "error")]
    assert signature.state(ko.read_bytes(), cert) == "verifies"
    assert {m.path: m.signature(True) for m in report.modules} == {str(ko): "verifies", str(unsigned): "absent"}
    assert f"signatures: 1 verifies, 1 absent (against {cert})" in format_text(report)

    wrong = lint_paths([ko], cert=str(other_der), use_cache=False)     # a DER certificate of another key
    assert ("signature-invalid", "error") in [(r, s) for r, s, _ in findings(wrong, ko)]
    assert wrong.modules[0].signature(True) == "does not verify"

    tampered = tmp_path / "tampered.ko"
    data = bytearray(ko.read_bytes())
    data[100] ^= 0xFF                                                   # a byte of the signed module
    tampered.write_bytes(bytes(data))
    assert "signature-invalid" in [r for r, _, _ in findings(lint_paths([tampered], cert=str(cert), use_cache=False),
                                                               tampered)]


def test_the_cache_knows_which_certificate(signed, tmp_path, monkeypatch):
    ko, _, cert, other_der = signed
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    assert "signature-invalid" not in [r for r, _, _ in findings(lint_paths([ko], cert=str(cert)), ko)]
    assert "signature-invalid" in [r for r, _, _ in findings(lint_paths([ko], cert=str(other_der)), ko)]


@pytest.mark.parametrize("front", ["kmodkit", "invoke"])
def test_lint_cert_from_the_command_line(signed, tmp_path, front):
    ko, unsigned, cert, _ = signed
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    env = {"KMOD_CACHE": str(tmp_path / "cache")}

    def lint(*args):
        if front == "kmodkit":
            return run_program("lint", *args, cwd=tmp_path, env=env)
        return run_cli("--search-root", str(ROOT), "lint", *args, cwd=tmp_path, env=env)

    ok = lint("--cert", str(cert), "--format", "json", str(ko))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [f["rule"] for f in json.loads(ok.stdout)["modules"][0]["findings"]] == ["signature-present"]
    absent = lint("--cert", str(cert), str(ko), str(unsigned))
    assert absent.returncode == 2 and f"{unsigned}: error: signature-absent" in absent.stdout, absent.stdout
    for bad in (garbage, tmp_path / "missing.pem"):
        proc = lint("--cert", str(bad), str(ko))
        assert proc.returncode == 1 and proc.stdout == "", proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1 and "--cert" in proc.stderr, proc.stderr


def test_a_signing_build_lints_against_its_certificate(signed, tmp_path):
    """The build's lint step (kmod.tasks.build) gets the build's certificate: a cell whose .ko is not
    signed, or signed by another key, fails its lint, with the rule that says why."""
    from types import SimpleNamespace
    from kmod.tasks.build import _lint_hook
    ko, unsigned, cert, other_der = signed
    dist = tmp_path / "dist"
    dist.mkdir()
    shutil.copy(ko, dist / "signed.ko")
    shutil.copy(unsigned, dist / "unsigned.ko")
    hook = _lint_hook(SimpleNamespace(dist=dist))

    def lint(name, crt):
        cell = SimpleNamespace(pin=None, module=SimpleNamespace(probes=[]), signing=SimpleNamespace(cert=crt))
        rec = {"kos": [{"ko": name}]}
        return hook(cell, rec), sorted(f["rule"] for f in rec["lint"] if f["rule"].startswith("signature"))

    assert lint("signed.ko", cert) == (True, ["signature-present"])
    assert lint("unsigned.ko", cert) == (False, ["signature-absent"])
    assert lint("signed.ko", other_der) == (False, ["signature-invalid", "signature-present"])


def test_build_refuses_a_key_that_is_not_the_certificates(tmp_path):
    """`build --sign-key A --sign-cert B` of two key pairs, or a key with a passphrase: one line, exit 1,
    before anything is built (sign-file would fail in every container)."""
    key, cert = make_cert(tmp_path / "mine", "mine")
    _, other = make_cert(tmp_path / "other", "other")
    subprocess.run(["openssl", "genrsa", "-aes128", "-passout", "pass:x", "-out", str(tmp_path / "enc.pem"), "2048"],
                   check=True, capture_output=True)
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
    for k, c, said in ((key, other, "is not the private key of --sign-cert"),
                       (tmp_path / "enc.pem", cert, "openssl cannot read the key")):
        proc = run_cli("--search-root", str(ROOT), "build", "--sign-key", str(k), "--sign-cert", str(c), cwd=tmp_path,
                       env={"KMOD_CACHE": str(tmp_path / "cache")})
        assert proc.returncode == 1 and said in proc.stderr, proc.stdout + proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not (tmp_path / "dist").exists()
