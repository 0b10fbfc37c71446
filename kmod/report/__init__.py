"""The matrix at a glance: every cell's build, lint, package and boot state, from dist/manifest.json.

    cells.py    the manifest's records -> rows (a state per stage, the first reason, the log to open)
    status.py   `invoke status`: the rows as a terminal table or JSON
    html.py     dist/report.html, the same rows as a self-contained page

Every stage calls write(project) once, after it saved the manifest, so the page always shows the
manifest as it is on disk.
"""
from pathlib import Path

from .. import atomic
from ..errors import InfraError
from ..manifest import Manifest

NAME = "report.html"


def path(project) -> Path:
    return project.dist / NAME


def write(project) -> Path:
    """Render dist/report.html from the manifest, by atomic replace (a reader never sees half a page)."""
    from . import html
    dest = path(project)
    text = html.page(Manifest(project.dist / "manifest.json").data, str(project.root))
    try:
        atomic.write_text(dest, text)
    except OSError as e:
        raise InfraError(f"cannot write {dest}: {e.strerror or e}", "check that dist/ is writable and the disk has room") from None
    return dest
