"""JUnit XML as CI systems read it (one <testsuite> in <testsuites>), for the stages that report per
case: boot-test (dist/boot-junit.xml) and preflight. The suite's counts and time come from its cases."""
from xml.etree import ElementTree as ET


def suite(name: str) -> ET.Element:
    return ET.Element("testsuite", name=name)


def case(parent: ET.Element, classname: str, name: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(parent, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")


def document(s: ET.Element) -> bytes:
    """The whole XML document, with tests/failures/errors/time counted from the cases."""
    cases = s.findall("testcase")
    s.set("tests", str(len(cases)))
    s.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    s.set("errors", str(sum(c.find("error") is not None for c in cases)))
    s.set("time", f"{sum(float(c.get('time') or 0) for c in cases):.3f}")
    root = ET.Element("testsuites")
    root.append(s)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
