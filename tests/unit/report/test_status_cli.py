"""`status` as a user runs it, through both front ends, and the stages' hooks that keep
dist/report.html in step with the manifest."""
import json
import os

import pytest

from kmod.report import cells
from tests import report_matrix
from tests.conftest import ROOT, run_cli, run_program

from .test_cells import EXPECTED

FAKE_KDIR = ROOT / "tests" / "fixtures" / "fake_kdir"


@pytest.fixture
def project(tmp_path):
    report_matrix.write(tmp_path)
    return tmp_path


def test_table_in_the_terminal(project):
    proc = run_program("status", cwd=project)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:9] == ["module", "kernel", "flavour", "arch", *cells.STAGES]
    for cid, states in EXPECTED.items():
        rec = report_matrix.record(cid)
        row = next(ln.split() for ln in lines[1:] if ln.split()[:2] == [rec["module"], rec["kernel"]]
                   and ln.split()[3] == rec["arch"] and ln.split()[2] == (rec.get("flavour") or "-"))
        assert tuple(row[4:9]) == states, cid
    assert "struct kprobe has no fault_handler since Linux 5.14" in proc.stdout
    assert "clone_probe/bookworm-6.1/arm64/boot/console.log" in proc.stdout
    assert any(ln.startswith("build: ") for ln in lines)
    # then what each host's last preflight said, the unreachable one with its reason
    hosts = lines[lines.index(next(ln for ln in lines if ln.split()[:3] == ["host", "kernel", "module"])):]
    for host, rec in report_matrix.PREFLIGHT.items():
        assert any(ln.split()[0] == host for ln in hosts[1:-1]), host
    assert "cannot connect to vm-down:22" in proc.stdout
    assert lines[-1] == "preflight: 4 host(s): 1 failed, 1 error, 1 warning, 1 ok"


@pytest.mark.parametrize("front", ["kmodkit", "invoke"])
def test_filters(project, front):
    def status(*args):
        proc = (run_program("status", *args, cwd=project) if front == "kmodkit" else
                run_cli("--search-root", str(ROOT), "status", *args, cwd=project))
        assert proc.returncode == 0, proc.stderr
        return proc

    def ids(*args):
        return {c["id"] for c in json.loads(status("--format", "json", *args).stdout)["cells"]}

    assert ids("--state", "failed") == {c for c, s in EXPECTED.items() if "failed" in s}
    assert ids("--state", "boot:failed,build:interrupted") == {c for c, s in EXPECTED.items()
                                                              if s[3] == "failed" or s[0] == "interrupted"}
    assert ids("--module", "seed-kprobe", "--arch", "aarch64") == {c for c in EXPECTED if c.startswith("seed_kprobe/")
                                                                   and c.endswith("/arm64")}
    assert ids("-m", "clone_probe", "-k", "6.1") == {c for c in EXPECTED if c.startswith("clone_probe/bookworm-6.1/")}
    out = json.loads(status("--format", "json", "--module", "seed_kprobe").stdout)
    assert [h["host"] for h in out["preflight"]] == ["vm-b", "vm-down"]     # its verdicts, and the unread host
    assert out["counts"]["build"] == {"excluded": 1, "interrupted": 1, "running": 1}
    text = status("--state", "preflight:warning").stdout.splitlines()
    assert [ln.split()[:4] for ln in text[1:2]] == [["clone_probe", "bookworm-6.1", "-", "x86_64"]]
    assert "no cell of" in status("--module", "clone_probe", "--state", "excluded").stdout


def test_json_through_invoke_is_the_same(project):
    via_invoke = run_cli("--search-root", str(ROOT), "status", "--format", "json", cwd=project)
    via_program = run_program("status", "--format", "json", cwd=project)
    assert via_invoke.returncode == via_program.returncode == 0, via_invoke.stderr + via_program.stderr
    assert json.loads(via_invoke.stdout) == json.loads(via_program.stdout)
    assert {c["id"] for c in json.loads(via_program.stdout)["cells"]} == set(EXPECTED)


@pytest.mark.parametrize("setup,args,text", [
    (lambda d: (d / "dist/manifest.json").unlink(), [], "no manifest at"),
    (lambda d: (d / "dist/manifest.json").write_text("[1, 2]"), [], "is not a kmod manifest"),
    (lambda d: (d / "dist/manifest.json").write_bytes(b"\xff\xfe{"), [], "is not a kmod manifest: not JSON"),
    (lambda d: ((d / "dist/manifest.json").unlink(), os.mkfifo(d / "dist/manifest.json")), [], "is a FIFO, not a file"),
    (lambda d: ((d / "dist/manifest.json").unlink(), (d / "dist/manifest.json").symlink_to("/dev/zero")), [],
     "is a character device, not a file"),
    (lambda d: None, ["--format", "xml"], "unknown --format 'xml'"),
    (lambda d: None, ["--state", "broken"], "--state 'broken': no state 'broken'"),
    (lambda d: None, ["--state", "bot:failed"], "no stage 'bot'"),
    (lambda d: None, ["--module", "nope"], "--module 'nope': no such module"),
    (lambda d: None, ["--arch", "vax"], "vax"),
])
def test_one_line_errors(project, setup, args, text):
    setup(project)
    proc = run_program("status", *args, cwd=project)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error")] == [proc.stderr.strip()]
    assert text in proc.stderr


def test_build_writes_the_report_even_when_all_is_cached(tmp_path):
    (tmp_path / "kmod.toml").write_text(report_matrix.SPEC)
    args = ("build", "--module", "clone_probe", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--arch", "arm64",
            "--no-lint")
    assert run_program(*args, cwd=tmp_path).returncode == 0
    page = (tmp_path / "dist/report.html").read_text()
    assert 'data-cell="clone_probe/host/arm64" data-build="ok"' in page
    (tmp_path / "dist/report.html").unlink()
    again = run_program(*args, cwd=tmp_path)
    assert again.returncode == 0 and "1 cached" in again.stdout
    assert 'data-cell="clone_probe/host/arm64" data-build="ok"' in (tmp_path / "dist/report.html").read_text()


def test_package_records_into_the_manifest_and_the_report(tmp_path):
    (tmp_path / "kmod.toml").write_text(report_matrix.SPEC)
    assert run_program("build", "--module", "clone_probe", "--runtime", "host", "--kdir", str(FAKE_KDIR),
                       "--arch", "x86_64", "--no-lint", cwd=tmp_path).returncode == 0
    # --force: a --no-lint cell is unlinted, which package refuses otherwise (docs/reliability.md)
    proc = run_program("package", "--module", "clone_probe", "--format", "tarball", "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pkg = json.loads((tmp_path / "dist/manifest.json").read_text())["packages"]["clone_probe"]
    assert pkg["result"] == "ok" and pkg["version"] == "0.1.0"
    assert (tmp_path / "dist" / pkg["formats"]["tarball"]["path"]).is_file()
    page = (tmp_path / "dist/report.html").read_text()
    assert 'data-cell="clone_probe/host/x86_64" data-build="ok" data-lint="-" data-package="ok"' in page
    assert pkg["formats"]["tarball"]["path"] in page
