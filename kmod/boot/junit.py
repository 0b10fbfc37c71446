"""JUnit XML (dist/boot-junit.xml): one testcase per cell, failure = the module's fault, error = ours."""
from pathlib import Path
from xml.etree import ElementTree as ET

from .. import atomic, junit


def write(path: Path, results: list, errors: dict[str, str], dist: Path) -> None:
    suite = junit.suite("kmod boot-test")
    for r in results:
        v = r.verdict
        module, kernel, arch = r.id.split("/")
        case = junit.case(suite, f"boot.{kernel}.{arch}", module, r.seconds.get("vm") or 0.0)
        if v.status in ("fail", "unproven"):
            el = ET.SubElement(case, "failure", message=f"{v.step}: {v.reason}", type=v.step)
            el.text = "\n".join(v.excerpt)
        elif v.status == "error":
            el = ET.SubElement(case, "error", message=f"{v.step}: {v.reason}", type="infrastructure")
            el.text = "\n".join(v.excerpt)
        out = ET.SubElement(case, "system-out")
        out.text = f"console log: {r.console}\nhits: {v.hits}\nsteps: {v.steps}\n"
    for cid, msg in errors.items():
        module, kernel, arch = cid.split("/")
        ET.SubElement(junit.case(suite, f"boot.{kernel}.{arch}", module), "error", message=msg, type="infrastructure")
    atomic.write_bytes(path, junit.document(suite))
