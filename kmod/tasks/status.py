"""`invoke status`: what the manifest says about every cell, as a table or as JSON."""

from .args import task
from .common import COMMON_HELP, cli_errors


@task(help={"spec": COMMON_HELP["spec"], "format": "text (default) or json (for scripts)"})
@cli_errors
def status(c, spec="", format="text"):
    """The matrix (module x kernel x flavour x arch): build, lint, package and boot state, the first finding
    or failure reason and the log to open. The same matrix as a page: dist/report.html."""
    import json
    import sys

    from .. import spec as specmod
    from ..errors import UserError
    from ..report import cells
    from ..report import status as statusmod
    if format not in ("text", "json"):
        raise UserError(f"unknown --format {format!r}", "choose text or json")
    project = specmod.load(specmod.find(spec or None))
    path = project.dist / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no manifest at {path}", "run `invoke build` first") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}", "rebuild it with `invoke build`") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a kmod manifest (not a JSON object)", "rebuild it with `invoke build`")
    rows = cells.rows(data)
    if format == "json":
        sys.stdout.write(statusmod.as_json(rows))
    else:
        statusmod.print_table(rows)
