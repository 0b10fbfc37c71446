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
# A stage that records into the manifest adds its name here, its state in rows(), a letter in
# html.LETTERS and its section in templates/report/report.html.j2, and calls report.write().
STAGES = ("build", "lint", "package", "boot", "preflight")
NOT_RUN = "not-run"     # how --state names NONE on a command line
# preflight's verdict per host and module -> a state (kmod/preflight/verdict.py: pass, warn, fail; a host
# that could not be read: error)
PREFLIGHT = {"pass": OK, "warn": WARNING, "fail": FAILED, "error": ERROR}


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
    preflight: list = field(repr=False, default_factory=list)   # (host, state, reason) about this cell

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


def preflight_hosts(manifest: dict) -> list[dict]:
    """The manifest's `preflight` section (what each host's last preflight said), normalised and sorted
    by host: {host, address, release, pin, state, error, attention, at, modules: [{module, state,
    verdict, reason, cell}]}."""
    out = []
    for host, rec in sorted(as_dict(manifest.get("preflight")).items()):
        if not isinstance(rec, dict):
            continue
        mods = [{"module": str(m.get("module") or ""), "verdict": str(m.get("verdict") or ""),
                 "state": PREFLIGHT.get(str(m.get("verdict")), ERROR), "reason": str(m.get("reason") or ""),
                 "cell": str(m.get("cell") or ""), "installed": m.get("installed") is True}
                for m in as_list(rec.get("modules")) if isinstance(m, dict)]
        out.append({"host": str(host), "address": str(rec.get("address") or ""),
                    "release": str(rec.get("release") or ""), "pin": str(rec.get("pin") or ""),
                    "state": PREFLIGHT.get(str(rec.get("verdict")), NONE), "error": str(rec.get("error") or ""),
                    "attention": str(rec.get("attention") or ""), "at": rec.get("at"), "modules": mods})
    return out


def hosts_of(hosts: list[dict], modules) -> list[dict]:
    """preflight's hosts with their verdicts about these modules only (an unread host stays: it says why)."""
    mods = {m.replace("-", "_") for m in modules}
    picked = [{**h, "modules": [m for m in h["modules"] if m["module"].replace("-", "_") in mods]} for h in hosts]
    return [h for h in picked if h["modules"] or h["error"]]


def _preflight_by_cell(hosts: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    """cell id -> (host, state, reason) of every host whose verdict was about that built cell."""
    out: dict[str, list] = {}
    for h in hosts:
        for m in h["modules"]:
            if m["cell"]:
                out.setdefault(m["cell"], []).append((h["host"], m["state"], m["reason"]))
    return out


def worst(states) -> str:
    rank = {s: i for i, s in enumerate(STATES)}
    return min(states, key=lambda s: rank.get(s, len(STATES)), default=NONE)


def _reason(rec: dict, pkg: dict, states: dict, preflight: list) -> str:
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
    if states["preflight"] not in (OK, NONE):
        host, _, why = next(p for p in preflight if p[1] == states["preflight"])
        return f"preflight {host}: {why}"
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
    preflight = _preflight_by_cell(preflight_hosts(manifest))
    out = []
    for cell_id, rec in as_dict(manifest.get("cells")).items():
        if not isinstance(rec, dict):
            continue
        module = str(rec.get("module") or cell_id.split("/")[0])
        pkg = as_dict(packages.get(module))
        checked = preflight.get(cell_id, [])
        states = {"build": _build(rec, running), "lint": _lint(rec), "package": _package(rec, pkg),
                  "boot": _boot(rec), "preflight": worst(p[1] for p in checked)}
        out.append(Row(cell_id, module, str(rec.get("kernel") or ""), str(rec.get("flavour") or ""),
                       str(rec.get("arch", "")), str(rec.get("version", "")), states,
                       _reason(rec, pkg, states, checked), _log(rec, states), rec, pkg, checked))
    return sorted(out, key=lambda r: (r.module, kernel_key(r.kernel), r.flavour, r.arch))


def counts(rows_: list[Row]) -> dict[str, dict[str, int]]:
    """stage -> state -> number of cells, worst state first, states nobody is in left out."""
    out = {}
    for stage in STAGES:
        seen = [r.states[stage] for r in rows_]
        order = [s for s in STATES if s in seen] + sorted({s for s in seen if s not in STATES})
        out[stage] = {s: seen.count(s) for s in order}
    return out


def states_filter(words: list[str], rows_: list[Row]) -> list[tuple[str | None, str]]:
    """--state words: STATE (in any stage) or STAGE:STATE; `not-run` for a stage that did not run."""
    from ..errors import UserError
    known = [s for s in STATES if s != NONE] + [NOT_RUN]
    known += sorted({s for r in rows_ for s in r.states.values()} - set(STATES))   # e.g. boot's `unproven`
    out = []
    for w in words:
        stage, _, state = w.rpartition(":")
        if stage and stage not in STAGES:
            raise UserError(f"--state {w!r}: no stage {stage!r}", f"stages: {', '.join(STAGES)}")
        if state not in known:
            raise UserError(f"--state {w!r}: no state {state!r}", f"choose from {', '.join(known)}, "
                            f"optionally as STAGE:STATE (e.g. boot:failed)")
        out.append((stage or None, NONE if state == NOT_RUN else state))
    return out


def select(rows_: list[Row], modules=(), kernels=(), arches=(), states=()) -> list[Row]:
    """The rows of these modules, kernels (a pin's name, or one word of it: 6.1, bookworm), arches, and
    with a stage in one of these states ((stage or None for any, state) pairs); empty means all."""
    def kernel_ok(k: str) -> bool:
        return not kernels or any(w == k or w in k.split("-") for w in kernels)

    def state_ok(r: Row) -> bool:
        return not states or any(r.states.get(stage) == st if stage else st in r.states.values()
                                 for stage, st in states)

    mods = {m.replace("-", "_") for m in modules}
    return [r for r in rows_ if (not mods or r.module.replace("-", "_") in mods) and kernel_ok(r.kernel)
            and (not arches or r.arch in arches) and state_ok(r)]
