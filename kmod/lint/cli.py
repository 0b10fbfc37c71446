"""`python -m kmod.lint PATH... [--target PIN] [--cert CERT] [--format text|json|sarif] [--fail-on error|warning]`,
and `run()`, which the Invoke task calls: print the report, return the exit code (0 clean, 2 a finding
reached --fail-on, 1 usage or environment error, with one line on stderr and no traceback)."""
import argparse
import sys

from ..errors import KmodError
from . import lint_paths
from .report import format_report


def run(paths: list, target: str | None = None, fmt: str = "text", fail_on: str = "error",
        jobs: int | None = None, probes: list[str] | None = None, out=None, err=None, cert: str | None = None) -> int:
    from .. import run as runmod
    out, err = out or sys.stdout, err or sys.stderr
    try:
        with runmod.signals():   # SIGTERM and SIGHUP stop a lint as Ctrl-C does, with their own exit codes
            if fmt not in ("text", "json", "sarif"):
                raise KmodError(f"unknown format {fmt!r}", "choose text, json or sarif")
            if fail_on not in ("error", "warning", "info"):
                raise KmodError(f"unknown --fail-on level {fail_on!r}", "choose error, warning or info")
            if not paths:
                raise KmodError("nothing to lint", "give one or more .ko files or directories")
            report = lint_paths(list(paths), target=target, jobs=jobs, probes=probes, progress=True,
                                cert=cert)
            out.write(format_report(report, fmt))
            return report.exit_code(fail_on)
    except KmodError as e:
        print(e.line(), file=err)
        return e.exit_code if e.exit_code != 2 else 1
    except KeyboardInterrupt as e:
        line, code = runmod.interruption(e)
        print(line, file=err)
        return code


class _Parser(argparse.ArgumentParser):
    """Usage errors as every kmod command gives them: one line, exit 1 (2 means a finding)."""

    def error(self, message: str):
        print(f"error: {message} (python -m kmod.lint --help lists the flags)", file=sys.stderr)
        raise SystemExit(1)


def _jobs(text: str) -> int:
    from ..tasks.common import count
    try:
        return count(text, "--jobs")
    except KmodError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m kmod.lint", description="Lint kernel modules (.ko).")
    ap.add_argument("paths", nargs="*", help=".ko files or directories")
    ap.add_argument("--target", help="a pin name, or a kernel headers tree / System.map / Module.symvers")
    ap.add_argument("--format", default="text", help="text, json or sarif")
    ap.add_argument("--fail-on", default="error", help="error, warning or info")
    ap.add_argument("--jobs", type=_jobs, default=None, help="processes (default: the cores)")
    ap.add_argument("--probe", action="append", help="a symbol the module probes (repeatable)")
    ap.add_argument("--cert", help="an X.509 certificate (PEM or DER) the signatures must verify against")
    args = ap.parse_args(argv)
    return run(args.paths, args.target, args.format, args.fail_on, args.jobs, args.probe, cert=args.cert)
