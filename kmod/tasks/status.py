"""`invoke status`: what the manifest says about every cell, as a table or as JSON."""

from .args import task
from .common import COMMON_HELP, cli_errors


@task(help={"spec": COMMON_HELP["spec"], "format": "text (default) or json (for scripts)",
            "module": "only these modules (a comma list; default: all)",
            "kernel": "only these kernels: a pin (bookworm-6.1) or a word of one (6.1, bookworm), a comma list",
            "arch": "only these arches (a comma list; Debian and `uname -m` names work too)",
            "state": "only cells with a stage in this state: failed, ok, ... or STAGE:STATE (boot:failed), "
                     "a comma list; not-run for a stage that did not run"})
@cli_errors
def status(c, spec="", format="text", module="", kernel="", arch="", state=""):
    """The matrix of built cells: each stage's state, why, and the log.

    Module x kernel x flavour x arch: build, lint, package, boot and preflight state, the first finding
    or failure reason and the log to open; then what each host's last preflight said. The same as a
    page: dist/report.html."""
    import os
    import sys

    from .. import spec as specmod
    from ..errors import UserError
    from ..report import cells
    from ..report import status as statusmod
    if format not in ("text", "json"):
        raise UserError(f"unknown --format {format!r}", "choose text or json")
    project = specmod.load(specmod.find(spec or None))
    from ..manifest import Manifest, as_seen
    path = project.dist / "manifest.json"
    if not os.path.lexists(path):
        raise UserError(f"no manifest at {path}", "run `invoke build` first")
    data = as_seen(Manifest(path).data)     # read as every stage reads it: checked, bounded, one line
    rows = cells.rows(data)
    hosts = cells.preflight_hosts(data)
    words = {flag: [w.strip() for w in value.split(",") if w.strip()]
             for flag, value in (("module", module), ("kernel", kernel), ("arch", arch), ("state", state))}
    known = {r.module for r in rows} | set(project.modules)
    for name in words["module"]:
        if name.replace("-", "_") not in {k.replace("-", "_") for k in known}:
            raise UserError(f"--module {name!r}: no such module in {path} or the spec",
                            f"modules: {', '.join(sorted(known)) or 'none yet (run `invoke build`)'}")
    from .. import arch as archmod
    arches = {archmod.get(a).name for a in words["arch"]}
    picked = cells.select(rows, words["module"], words["kernel"], arches, cells.states_filter(words["state"], rows))
    if words["module"]:
        hosts = cells.hosts_of(hosts, words["module"])
    if format == "json":
        sys.stdout.write(statusmod.as_json(picked, hosts))
        return
    if not rows and not hosts:
        print(f"no cells in {path} yet: run `invoke build`")
        return
    if not picked and rows:
        print(f"no cell of {path} matches ({len(rows)} cell(s) in all)")
    else:
        statusmod.print_table(picked)
    statusmod.print_hosts(hosts)
