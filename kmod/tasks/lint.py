"""`invoke lint`: lint any .ko (ours or anyone's) before it ships."""
from invoke import task
from invoke.exceptions import Exit

from .common import cli_errors


@task(help={"paths": ".ko files or folders (every .ko/.ko.xz/.ko.zst below), comma-separated, e.g. dist/",
            "target": "check against this kernel too: a pin (e.g. bookworm-6.1) or a kernel tree / System.map path",
            "format": "text (default), json or sarif",
            "fail_on": "exit 2 when a finding reaches this severity: error (default), warning or info",
            "jobs": "processes (default: number of cores)",
            "probe": "a symbol the module probes (comma list; default: read from the module)"})
@cli_errors
def lint(c, paths, target="", format="text", fail_on="error", jobs=0, probe=""):
    """Lint .ko files: FP/SIMD outside FPU guards, licenses, sleeping probe handlers, target checks."""
    from pathlib import Path

    from ..lint import cli
    code = cli.run([Path(p) for p in paths.split(",") if p], target or None, format, fail_on, jobs or None,
                   [p for p in probe.split(",") if p] or None)
    if code:
        raise Exit(code=code)
