"""JUnit XML (dist/boot-junit.xml): one testcase per cell, failure = the module's fault, error = ours."""
from pathlib import Path
from xml.etree import ElementTree as ET

from .. import atomic


def write(path: Path, results: list, errors: dict[str, str], dist: Path) -> None:
    suite = ET.Element("testsuite", name="kmod boot-test", tests=str(len(results) + len(errors)))
    n_fail = n_err = 0
    total = 0.0
    for r in results:
        v = r.verdict
        module, kernel, arch = r.id.split("/")
        secs = r.seconds.get("vm") or 0.0
        total += secs
        case = ET.SubElement(suite, "testcase", classname=f"boot.{kernel}.{arch}", name=module,
                             time=f"{secs:.3f}")
        if v.status in ("fail", "unproven"):
            n_fail += 1
            el = ET.SubElement(case, "failure", message=f"{v.step}: {v.reason}", type=v.step)
            el.text = "\n".join(v.excerpt)
        elif v.status == "error":
            n_err += 1
            el = ET.SubElement(case, "error", message=f"{v.step}: {v.reason}", type="infrastructure")
            el.text = "\n".join(v.excerpt)
        out = ET.SubElement(case, "system-out")
        out.text = f"console log: {r.console}\nhits: {v.hits}\nsteps: {v.steps}\n"
    for cid, msg in errors.items():
        module, kernel, arch = cid.split("/")
        case = ET.SubElement(suite, "testcase", classname=f"boot.{kernel}.{arch}", name=module, time="0")
        ET.SubElement(case, "error", message=msg, type="infrastructure")
        n_err += 1
    suite.set("failures", str(n_fail))
    suite.set("errors", str(n_err))
    suite.set("time", f"{total:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    atomic.write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
