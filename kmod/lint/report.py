"""Print a lint report: text for people, JSON for scripts, SARIF 2.1.0 for code-scanning UIs."""
import json
from pathlib import Path

from . import ruledata
from .findings import Report

SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _addr(a: int | None) -> str | None:
    return None if a is None else f"{a:#x}"


def _where(f) -> str:
    parts = []
    if f.function:
        parts.append(f.function)
    if f.section:
        parts.append(f.section + (f"+{f.address:#x}" if f.address is not None else ""))
    return f" [{' '.join(parts)}]" if parts else ""


def format_text(report: Report) -> str:
    lines = []
    for m in report.modules:
        for f in m.findings:
            lines.append(f"{m.path}: {f.severity}: {f.rule}{_where(f)}: {f.message}")
        for provider, syms in _by_provider(m).items():
            shown = ", ".join(syms[:5]) + (f" and {len(syms) - 5} more" if len(syms) > 5 else "")
            lines.append(f"{m.path}: needs {Path(provider).name if '/' in provider else provider} "
                         f"loaded first ({shown})")
    states = [m.signature(report.cert is not None) for m in report.modules]
    counted = {st: states.count(st) for st in dict.fromkeys(states) if st}
    if counted:    # unsigned is no finding without --cert (most modules are), but it is said
        lines.append("signatures: " + ", ".join(f"{k} {st}" for st, k in counted.items())
                     + (f" (against {report.cert})" if report.cert else ""))
    n = len(report.modules)
    counts = ", ".join(f"{report.count(s)} {s}(s)" for s in ("error", "warning", "info"))
    lines.append(f"{n} module(s) linted{f' against {report.target}' if report.target else ''}: {counts}")
    if any(m.depends for m in report.modules):
        lines.append("load order: " + ", ".join(Path(p).name for p in report.order))
    return "\n".join(lines) + "\n"


def _by_provider(m) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sym, provider in sorted(m.provided.items()):
        out.setdefault(provider, []).append(sym)
    return out


def to_json(report: Report) -> dict:
    """{"modules": [{"path", "arch", "signature", "findings": [{"rule", "severity", "function", "address",
    "message"}], "depends", "provided"}], "order"} ("signature": absent, present, malformed, or with --cert
    verifies / does not verify) ("section" is added to each finding: an address inside a relocatable
    module means nothing without it; "provided" maps each symbol that a module of the set or an in-tree
    module provides to it; "order" is the load order, providers first)."""
    return {"modules": [
        {"path": m.path, "arch": m.arch, "signature": m.signature(report.cert is not None),
         "findings": [{"rule": f.rule, "severity": f.severity, "function": f.function,
                       "address": _addr(f.address), "message": f.message, "section": f.section}
                      for f in m.findings],
         "depends": m.depends, "provided": m.provided}
        for m in report.modules], "order": report.order}


def format_json(report: Report) -> str:
    return json.dumps(to_json(report), indent=2) + "\n"


def to_sarif(report: Report) -> dict:
    rules = ruledata.rules()
    used = sorted({f.rule for _, f in report.findings()} | set(rules))
    index = {r: i for i, r in enumerate(used)}
    results = []
    for m, f in report.findings():
        loc = {"physicalLocation": {"artifactLocation": {"uri": m.path}}}
        if f.function:
            loc["logicalLocations"] = [{"name": f.function, "kind": "function"}]
        props = {"arch": m.arch}
        if f.section:
            props["section"] = f.section
        if f.address is not None:
            props["address"] = _addr(f.address)
        results.append({"ruleId": f.rule, "ruleIndex": index[f.rule], "level": SARIF_LEVEL[f.severity],
                        "message": {"text": f.message}, "locations": [loc], "properties": props})
    driver = {
        "name": "kmod-lint", "informationUri": "https://example.invalid/kmod/docs/lint.md",
        "rules": [{"id": r, "shortDescription": {"text": rules.get(r, {}).get("summary", r)},
                   "helpUri": f"docs/lint.md#{r}",
                   "defaultConfiguration": {"level": SARIF_LEVEL[rules.get(r, {}).get("severity", "warning")]}}
                  for r in used]}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0",
            "runs": [{"tool": {"driver": driver}, "results": results,
                      "artifacts": [{"location": {"uri": m.path}} for m in report.modules]}]}


def format_sarif(report: Report) -> str:
    return json.dumps(to_sarif(report), indent=2) + "\n"


FORMATS = {"text": format_text, "json": format_json, "sarif": format_sarif}


def format_report(report: Report, fmt: str) -> str:
    if fmt not in FORMATS:
        from ..errors import UserError
        raise UserError(f"unknown format {fmt!r}", "choose text, json or sarif")
    return FORMATS[fmt](report)
