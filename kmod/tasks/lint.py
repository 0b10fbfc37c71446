"""`invoke lint`: lint any .ko (ours or anyone's) before it ships."""
from invoke.exceptions import Exit

from .args import task
from .common import cli_errors, count


@task(rest="paths",
      help={"paths": ".ko files or folders (every .ko/.ko.xz/.ko.zst below), as separate words: dist/*.ko, dist/",
            "target": "check against this kernel too: a pin (e.g. bookworm-6.1) or a kernel tree / System.map path",
            "format": "text (default), json or sarif",
            "fail_on": "exit 2 when a finding reaches this severity: error (default), warning or info",
            "jobs": "processes (default: number of cores)",
            "probe": "a symbol the module probes (comma list; default: read from the module)",
            "cert": "an X.509 certificate (PEM or DER): each module must carry a signature that verifies against it"})
@cli_errors
def lint(c, paths=None, target="", format="text", fail_on="error", jobs="", probe="", cert=""):
    """Lint .ko files: FP/SIMD outside FPU guards, licenses, sleeping probe handlers, signatures, target checks.

    Give any number of files and folders as separate words (`lint dist/*.ko`, `find . -name '*.ko' |
    xargs kmodkit lint`); the old comma-separated form (`lint a.ko,b.ko`) still works."""
    from ..lint import cli
    from .args import paths as as_paths
    code = cli.run(as_paths(paths), target or None, format, fail_on, count(jobs, "--jobs"),
                   [p for p in probe.split(",") if p] or None, cert=cert or None)
    if code:
        raise Exit(code=code)
