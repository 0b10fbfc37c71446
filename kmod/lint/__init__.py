"""Lint and preflight kernel modules (.ko): FP/SIMD outside the FPU guards, licenses, sleeping probe
handlers, module shape, and with a target kernel: arch, vermagic, CRCs, exports and probe targets.

    report = lint_paths([Path("build/")], target="bookworm-6.1")
    print(format_text(report)); sys.exit(report.exit_code("error"))

The rules are described in docs/lint.md; their data lives in rules/lint/.
"""
from .findings import Finding, ModuleResult, Report
from .report import format_json, format_report, format_sarif, format_text
from .runner import lint_file, lint_paths

__all__ = ["lint_paths", "lint_file", "Report", "ModuleResult", "Finding",
           "format_text", "format_json", "format_sarif", "format_report"]
