"""dist/report.html in a real browser with the network off: headless Chromium from Debian loads the
page of a known matrix inside a network namespace of its own, a screenshot is taken, the DOM holds
every cell with its states, a cell opens on its details, and nothing was requested or failed to load
(the page is self-contained)."""
import html.parser
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from kmod import report
from kmod import spec as specmod
from kmod.report import cells
from tests import report_matrix
from tests.conftest import ROOT, need, need_tool
from tests.unit.report.test_cells import EXPECTED

pytestmark = pytest.mark.integration
OPEN = "clone_probe/trixie-6.12/x86_64"   # a failed build: opening it shows the diagnosis


class Cells(html.parser.HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.found = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-cell" in a:
            self.found[a["data-cell"]] = tuple(a[f"data-{s}"] for s in cells.STAGES)


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    need_tool("chromium")
    need_tool("chromedriver")
    need_tool("unshare")
    need_tool("ip")
    try:
        import selenium  # noqa: F401
    except ImportError:
        need(False, "the selenium package (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("report")
    report_matrix.write(root)
    page = report.write(specmod.load(root / "kmod.toml"))
    shot = root / "report.png"
    # A namespace with loopback only: chromedriver listens there, and the page can reach nothing else.
    argv = ["unshare", "--net", "--", "sh", "-ec", 'ip link set lo up && exec "$@"', "sh",
            sys.executable, "-m", "tests.integration.browser", page.as_uri(), str(shot), OPEN]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "SE_OFFLINE": "true", "SE_AVOID_STATS": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    out.update(page=page, shot=shot)
    keep = os.environ.get("KMOD_REPORT_SCREENSHOT")  # where to keep the screenshot to look at it
    if keep:
        shutil.copy(shot, keep)
    return out


def test_every_cell_is_in_the_dom_with_its_states(seen):
    assert Cells(seen["dom"]).found == EXPECTED


def test_nothing_requested_but_the_page_and_nothing_failed(seen):
    assert seen["failed"] == []
    assert seen["console_errors"] == []
    assert seen["requests"] and set(seen["requests"]) == {seen["page"].as_uri()}


def test_a_cell_opens_on_its_diagnosis(seen):
    assert seen["detail_shown_before"] is False
    assert seen["opened"]["shown"] is True
    advice = report_matrix.CELLS[OPEN][3]["diagnosis"][0]["advice"]
    assert advice in seen["opened"]["text"] and f"{OPEN}/build.log" in seen["opened"]["text"]


def test_a_colour_per_state(seen):
    colours = seen["colours"]
    assert {"ok", "failed", "warning", "interrupted", "excluded", "running"} <= set(colours)
    picked = [colours[s] for s in ("ok", "failed", "warning", "interrupted", "excluded", "running")]
    assert len(set(picked)) == len(picked), colours
    r, g, b = (int(x) for x in colours["ok"].removeprefix("rgb(").rstrip(")").split(",")[:3])
    assert g > r and g > b  # ok is green


def test_a_screenshot_was_taken(seen):
    data = seen["shot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 1000) or width >= 1000
    assert len(data) > 20_000  # a rendered page, not a blank one
