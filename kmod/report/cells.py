"""The manifest's cells as rows: one state per stage, the first reason worth reading, the log to open.

Read from each record's own fields (module, kernel, flavour, arch), never parsed out of the cell id, so a
change of id layout does not change the report. Both views (the terminal's `status`, dist/report.html)
are made from these rows and nothing else.
"""
import re
from dataclasses import dataclass, field

# The states a stage can be in for a cell, worst first: the order counts and sorts are made in.
FAILED, ERROR, INTERRUPTED, WARNING, RUNNING, PENDING, OK, EXCLUDED, NONE = (
    "failed", "error", "interrupted", "warning", "running", "pending", "ok", "excluded", "-")
STATES = (FAILED, ERROR, INTERRUPTED, WARNING, RUNNING, PENDING, OK, EXCLUDED, NONE)
# A stage that records into the manifest (preflight, next) adds its name here, its state in rows(), a
# letter in html.LETTERS and its section in templates/report/report.html.j2, and calls report.write().
STAGES = ("build", "lint", "package", "boot")


def as_dict(value) -> dict:
    """A record written by another kmod version, or damaged, still renders: wrong shapes read as empty."""
    return value if isinstance(value, dict) else {}


def as_list(value) -> list:
    return value if isinstance(value, list) else []


@dataclass
class Row:
    id: str
    module: str
    kernel: str
    flavour: str
    arch: str
    version: str
    states: dict[str, str]        # stage -> state
    reason: str                   # the first finding or failure reason ("" when all is well)
    log: str                      # the log to open, relative to dist/
    record: dict = field(repr=False, default_factory=dict)
    package: dict = field(repr=False, default_factory=dict)

    def as_json(self) -> dict:
        return {"id": self.id, "module": self.module, "kernel": self.kernel, "flavour": self.flavour,
                "arch": self.arch, "version": self.version, **self.states, "reason": self.reason,
                "log": self.log}


def _build(rec: dict, running: bool) -> str:
    result = str(rec.get("result") or NONE)
    if result == "pending":
        return RUNNING if running else PENDING
    return result


def findings(rec: dict) -> list[dict]:
    """The lint findings of a record, each with text severity, rule and message."""
    return [{k: str(f.get(k) or "") for k in ("severity", "rule", "message", "ko")}
            for f in as_list(rec.get("lint")) if isinstance(f, dict)]


def _lint(rec: dict) -> str:
    if rec.get("lint") is None:
        return NONE
    severities = {f.get("severity") for f in findings(rec)}
    return FAILED if "error" in severities else WARNING if "warning" in severities else OK


def _boot(rec: dict) -> str:
    verdict = as_dict(rec.get("boot")).get("verdict")
    return NONE if verdict is None else {"pass": OK, "fail": FAILED}.get(str(verdict), str(verdict))


def _package(rec: dict, pkg: dict) -> str:
    """A package is of a module's source, not of one cell: it stands for every cell of that version
    that the module is built for."""
    if not pkg or pkg.get("version") != rec.get("version") or rec.get("result") == EXCLUDED:
        return NONE
    return str(pkg.get("result") or NONE)


def _reason(rec: dict, pkg: dict, states: dict) -> str:
    if states["build"] == FAILED:
        for d in as_list(rec.get("diagnosis")):
            if isinstance(d, dict):
                return str(d.get("advice") or d.get("cause", ""))
        errors = [f for f in findings(rec) if f.get("severity") == "error"]
        if errors:
            return f"lint {errors[0].get('rule', '')}: {errors[0].get('message', '')}"
        return str(next(iter(as_list(rec.get("errors"))), "") or f"exit code {rec.get('exit_code', '?')}")
    if states["build"] in (INTERRUPTED, EXCLUDED):
        return str(rec.get("reason", "") or states["build"])
    boot = as_dict(rec.get("boot"))
    if states["boot"] not in (OK, NONE):
        return f"boot {boot.get('step', '')}: {boot.get('reason', '')}".strip()
    if states["package"] == FAILED:
        return f"package: {pkg.get('reason', '')}"
    for severity in ("warning", "info"):
        found = [f for f in findings(rec) if f.get("severity") == severity]
        if found:
            return f"lint {found[0].get('rule', '')}: {found[0].get('message', '')}"
    return ""


def _log(rec: dict, states: dict) -> str:
    console = as_dict(rec.get("boot")).get("console", "")
    if console and states["build"] != FAILED:
        return str(console)
    return str(rec.get("log", "") or "")


def kernel_key(name: str):
    """bullseye-5.10 < bookworm-6.1 < trixie-6.12: by the series' numbers, then the name."""
    return ([int(n) for n in re.findall(r"\d+", name)] or [1 << 30], name)


def rows(manifest: dict) -> list[Row]:
    """Every cell of a manifest's data, sorted by module, kernel, flavour, arch."""
    runs = as_list(manifest.get("runs"))
    running = bool(runs) and as_dict(runs[-1]).get("status") == "running"
    packages = as_dict(manifest.get("packages"))
    out = []
    for cell_id, rec in as_dict(manifest.get("cells")).items():
        if not isinstance(rec, dict):
            continue
        module = str(rec.get("module") or cell_id.split("/")[0])
        pkg = as_dict(packages.get(module))
        states = {"build": _build(rec, running), "lint": _lint(rec), "package": _package(rec, pkg),
                  "boot": _boot(rec)}
        out.append(Row(cell_id, module, str(rec.get("kernel", "")), str(rec.get("flavour") or ""),
                       str(rec.get("arch", "")), str(rec.get("version", "")), states, _reason(rec, pkg, states), _log(rec, states), rec, pkg))
    return sorted(out, key=lambda r: (r.module, kernel_key(r.kernel), r.flavour, r.arch))


def counts(rows_: list[Row]) -> dict[str, dict[str, int]]:
    """stage -> state -> number of cells, worst state first, states nobody is in left out."""
    out = {}
    for stage in STAGES:
        seen = [r.states[stage] for r in rows_]
        order = [s for s in STATES if s in seen] + sorted({s for s in seen if s not in STATES})
        out[stage] = {s: seen.count(s) for s in order}
    return out
