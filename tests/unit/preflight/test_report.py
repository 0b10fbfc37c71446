"""Text, JSON and JUnit reports and the exit codes (as the lint's: 0, 2 at --fail-on, 1 a host not read)."""
import json
from xml.etree import ElementTree as ET

from kmod.preflight import report
from kmod.preflight.hosts import parse
from kmod.preflight.report import HostResult
from kmod.preflight.verdict import FAIL, PASS, WARN, Finding, Verdict
from tests.unit.preflight.conftest import recorded


def results(*statuses, error=False):
    f = recorded("facts-bookworm-sig-enforce.txt")
    out = [HostResult(parse(f"h{i}"), facts=f, verdicts=[Verdict("m", s, f"reason {i}",
                                                                 findings=[Finding("x", "warning", "note")])])
           for i, s in enumerate(statuses)]
    if error:
        out.append(HostResult(parse("down"), error="connection refused by down:22"))
    return out


def test_exit_codes():
    assert report.exit_code(results(PASS, PASS)) == 0
    assert report.exit_code(results(PASS, WARN)) == 0
    assert report.exit_code(results(PASS, WARN), fail_on=WARN) == 2
    assert report.exit_code(results(PASS, FAIL)) == 2
    assert report.exit_code(results(PASS, error=True)) == 1
    r = results(PASS)
    r[0].attention = "package left installed"
    assert report.exit_code(r) == 1


def test_text_is_one_line_per_host_and_module():
    text = report.format_text(results(PASS, FAIL, error=True))
    lines = text.splitlines()
    assert lines[0].split() == ["HOST", "KERNEL", "MODULE", "VERDICT", "REASON"]
    assert lines[1].split()[:4] == ["h0", "6.1.0-56-amd64", "m", "pass"] and lines[1].endswith("reason 0")
    assert lines[3].split()[:4] == ["down", "-", "-", "error"] and "connection refused" in lines[3]
    assert lines[-1] == "3 host(s): 1 pass, 0 warn, 1 fail, 1 not read"


def test_json_and_junit():
    rs = results(PASS, FAIL, error=True)
    data = json.loads(report.format_json(rs))
    assert [h["host"] for h in data["hosts"]] == ["h0", "h1", "down"]
    assert data["hosts"][1]["modules"][0]["verdict"] == FAIL and data["hosts"][0]["facts"]["sig_enforce"] is True
    suite = ET.fromstring(report.format_junit(rs)).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    failure = suite.find("testcase[@classname='preflight.h1']/failure")
    assert failure.get("message") == "reason 1"
    assert suite.find("testcase[@classname='preflight.down']/error").get("message").startswith("connection refused")


def test_hosts_go_into_the_manifest_and_the_report(tmp_path):
    """preflight records each host's verdicts in the manifest's `preflight` section through the locked
    merge (what another run wrote meanwhile survives), and dist/report.html shows them."""
    from kmod import spec as specmod
    from kmod.manifest import Manifest
    from kmod.preflight import Run, Options
    from kmod.report import cells
    from tests import report_matrix
    report_matrix.write(tmp_path)
    project = specmod.load(tmp_path / "kmod.toml")
    other = Manifest(project.dist / "manifest.json")          # another run, holding older data
    rs = results(PASS, FAIL, error=True)
    rs[0].verdicts[0] = Verdict("clone_probe", PASS, "loads as is", "prebuilt", "clone_probe/bookworm-6.1/x86_64")
    run = Run(project, [], Options())
    run.results = rs
    run.record()
    other.set_cell("clone_probe/bullseye-5.10/x86_64", {**other.cell("clone_probe/bullseye-5.10/x86_64"), "note": 1})
    other.save()
    data = json.loads((project.dist / "manifest.json").read_text())
    assert data["cells"]["clone_probe/bullseye-5.10/x86_64"]["note"] == 1
    assert {"h0", "h1", "down"} <= set(data["preflight"]) and set(report_matrix.PREFLIGHT) <= set(data["preflight"])
    assert data["preflight"]["h0"]["modules"][0] == {"module": "clone_probe", "verdict": PASS, "reason": "loads as is",
                                                     "cell": "clone_probe/bookworm-6.1/x86_64", "installed": False}
    assert data["preflight"]["h0"]["release"] == "6.1.0-56-amd64" and data["preflight"]["down"]["verdict"] == "error"
    page = (project.dist / "report.html").read_text()
    assert 'data-host="h1"' in page and "connection refused by down:22" in page
    row = next(r for r in cells.rows(data) if r.id == "clone_probe/bookworm-6.1/x86_64")
    assert ("h0", "ok", "loads as is") in row.preflight
