"""Lint and preflight kernel modules (.ko): FP/SIMD outside the FPU guards, licenses, sleeping probe
handlers, module shape, and with a target kernel: arch, vermagic, CRCs, exports and probe targets.

    report = lint_paths([Path("build/")], target="bookworm-6.1")
    print(format_text(report)); sys.exit(report.exit_code("error"))

The rules are described in docs/lint.md; their data lives in rules/lint/.
"""
from .findings import Finding, ModuleResult, Report

__all__ = ["lint_paths", "lint_file", "Report", "ModuleResult", "Finding",
           "format_text", "format_json", "format_sarif", "format_report"]

# The runner and the report formats on first use: a build that reads one .ko's modinfo (kmod.lint.elf)
# must not pay for importing the whole linter (about 50 ms of a --no-lint build).
_LAZY = {"lint_paths": ".runner", "lint_file": ".runner", "format_text": ".report", "format_json": ".report",
         "format_sarif": ".report", "format_report": ".report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
