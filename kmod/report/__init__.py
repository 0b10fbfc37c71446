"""The matrix at a glance: every cell's build, lint, package and boot state, from dist/manifest.json.

    cells.py    the manifest's records -> rows (a state per stage, the first reason, the log to open)
    status.py   `invoke status`: the rows as a terminal table or JSON
    html.py     dist/report.html, the same rows as a self-contained page

Every stage calls write(project) once, after it saved the manifest, so the page always shows the
manifest as it is on disk.
"""
import os
import sys
from pathlib import Path

from .. import atomic
from ..manifest import Manifest, as_seen, project_lock

NAME = "report.html"


def path(project) -> Path:
    return project.dist / NAME


def write(project) -> Path | None:
    """Render dist/report.html from the manifest, by atomic replace (a reader never sees half a page).

    Never fails the stage that calls it: the page is made from the manifest, which the stage has saved
    already, so a page that cannot be written is one warning line, and the stage's result stands."""
    dest = path(project)
    try:
        from . import html
        # under the manifest's lock: two stages that finish at once cannot put an older page over a newer
        with project_lock(project.dist):
            data = as_seen(Manifest(project.dist / "manifest.json").data)
            atomic.write_text(dest, html.page(data, str(project.root)))
        return dest
    except OSError as e:
        warn = f"cannot write {dest}: {e.strerror or e} (check that dist/ is writable and has room)"
    except Exception as e:  # a bug in the page must not cost the stage its result
        if os.environ.get("KMOD_DEBUG"):
            raise
        warn = f"{dest} not updated: {type(e).__name__}: {e} (a bug in kmod; KMOD_DEBUG=1 shows where)"
    print(f"warning: {warn}", file=sys.stderr)
    return None
