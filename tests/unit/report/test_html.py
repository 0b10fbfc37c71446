"""dist/report.html as written: the known matrix's cells with their states, self-contained, escaped,
written atomically."""
import html.parser
import json
import os

import pytest

from kmod import report
from kmod import spec as specmod
from kmod.report import cells
from tests import report_matrix

from .test_cells import EXPECTED


class Page(html.parser.HTMLParser):
    """The tags and attributes of a page, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def cells(self) -> dict[str, dict]:
        return {a["data-cell"]: a for t, a in self.tags if t == "td" and "data-cell" in a}


@pytest.fixture
def project(tmp_path):
    report_matrix.write(tmp_path)
    return specmod.load(tmp_path / "kmod.toml")


def test_every_cell_with_its_states(project):
    page = Page(report.write(project).read_text())
    found = page.cells()
    assert set(found) == set(EXPECTED)
    for cid, states in EXPECTED.items():
        assert tuple(found[cid][f"data-{s}"] for s in cells.STAGES) == states, cid
    # A column per kernel x flavour x arch, the rt flavour labelled.
    headers = [a for t, a in page.tags if t == "th" and a.get("scope") == "colgroup"]
    assert len(headers) == len({c[1] for c in map(lambda i: i.split("/"), EXPECTED)})
    assert "rt" in page.text


def test_counts_per_stage(project):
    text = report.write(project).read_text()
    page = Page(text)
    stages = [a["data-stage"] for t, a in page.tags if t == "div" and "data-stage" in a]
    assert stages == list(cells.STAGES)
    # e.g. <li data-state="failed"><span ...>2</span> failed</li> in the build box
    build = text.split('data-stage="build"', 1)[1].split("</div>", 1)[0]
    failed = sum(1 for s in EXPECTED.values() if s[0] == "failed")
    assert f'<li data-state="failed"><span class="st st-failed">{failed}</span> failed</li>' in build


def test_a_cell_opens_on_its_details(project):
    text = report.write(project).read_text()
    cell = text.split('data-cell="clone_probe/bookworm-6.1/arm64"', 1)[1].split("</details>", 1)[0]
    rec = report_matrix.record("clone_probe/bookworm-6.1/arm64")
    assert "<details>" in cell and "<summary>" in cell
    assert rec["lint"][0]["message"] in cell                      # findings
    assert rec["boot"]["reason"] in cell                          # failure reason
    assert f'href="{rec["boot"]["console"]}"' in cell               # the log to open
    assert f'href="{rec["log"]}"' in cell
    assert str(rec["boot"]["seconds"]["vm"]) in cell and str(rec["boot"]["hits"][0]) in cell  # timings, hits
    failed = text.split('data-cell="clone_probe/trixie-6.12/x86_64"', 1)[1].split("</details>", 1)[0]
    assert report_matrix.CELLS["clone_probe/trixie-6.12/x86_64"][3]["diagnosis"][0]["advice"] in failed


def test_a_section_per_stage(project):
    page = Page(report.write(project).read_text())
    sections = [a["id"] for t, a in page.tags if t == "section" and a.get("id", "").startswith("stage-")]
    assert sections == ["stage-build", "stage-lint", "stage-package", "stage-boot", "stage-preflight"]
    text = "".join(page.text)
    assert "fpu-unguarded" in text and "packages/clone-probe-dkms_0.1.0_all.deb" in text
    linted = sum(1 for s in EXPECTED.values() if s[1] != "-")
    assert f"{linted} cell(s) linted." in text


def test_self_contained(project):
    text = report.write(project).read_text()
    page = Page(text)
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "source"}
    for _, attrs in page.tags:
        for k in ("src", "href"):
            v = attrs.get(k, "")
            assert not v.startswith(("http:", "https:", "//", "file:", "data:")), v
    style = text.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def test_values_are_escaped(project):
    path = project.dist / "manifest.json"
    data = json.loads(path.read_text())
    rec = data["cells"]["clone_probe/bookworm-6.1/arm64"]
    rec["lint"][0]["message"] = '<script>alert("x")</script>'
    rec["log"] = 'a"><img src=x>.log'
    path.write_text(json.dumps(data))
    text = report.write(project).read_text()
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;" in text


def test_written_atomically_and_unwritable_is_one_warning(project, capsys):
    report.write(project)
    leftovers = [p for p in os.listdir(project.dist) if p.startswith(".report.html")]
    assert leftovers == []
    (project.dist / "report.html").unlink()
    (project.dist / "report.html").mkdir()
    assert report.write(project) is None  # the stage that called it goes on with its own result
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cannot write ") and "report.html" in err[0]
    assert [p for p in os.listdir(project.dist) if p.startswith(".report.html")] == []


def test_a_bug_in_the_page_is_one_warning(project, capsys, monkeypatch):
    from kmod.report import html
    monkeypatch.setattr(html, "page", lambda *a: 1 / 0)
    assert report.write(project) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "ZeroDivisionError" in err[0] and "a bug in kmod" in err[0]


def test_an_empty_project_says_what_to_do(tmp_path):
    (tmp_path / "kmod.toml").write_text(report_matrix.SPEC)
    text = report.write(specmod.load(tmp_path / "kmod.toml")).read_text()
    assert "No cells in dist/manifest.json yet" in text and "Nothing linted yet" in text


def test_several_modules_per_cell(project):
    """A cell may build several .ko (records `kos`, as paths or {ko, sha256}); the cell lists them all and
    says which one a finding is about."""
    path = project.dist / "manifest.json"
    data = json.loads(path.read_text())
    rec = data["cells"]["clone_probe/bookworm-6.1/x86_64"]
    rec["kos"] = ["clone_probe/bookworm-6.1/x86_64/a.ko", {"ko": "clone_probe/bookworm-6.1/x86_64/b.ko", "sha256": "cd" * 32}]
    rec["lint"] = [{"severity": "warning", "rule": "no-module-exit", "message": "no exit", "ko": "clone_probe/bookworm-6.1/x86_64/b.ko"}]
    path.write_text(json.dumps(data))
    text = report.write(project).read_text()
    cell = text.split('data-cell="clone_probe/bookworm-6.1/x86_64"', 1)[1].split("</details>", 1)[0]
    assert 'href="clone_probe/bookworm-6.1/x86_64/a.ko"' in cell and 'href="clone_probe/bookworm-6.1/x86_64/b.ko"' in cell
    assert "cdcdcdcdcdcdcdcd" in cell and "<code>clone_probe/bookworm-6.1/x86_64/b.ko</code>: no exit" in cell
