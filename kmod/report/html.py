"""dist/report.html: the matrix as a page read at a glance. Self-contained: the style is inline, there is
no script, no font and no image, so it opens the same from a CI artifact, a mail or a machine offline.
Each cell is a <details> that opens on its findings, diagnosis, timings, hit counts and logs.

Records are normalised here (every key the template reads is present), so the template stays plain and a
record from an older or newer kmod renders instead of failing on a missing field."""
import time

from .. import render
from . import cells

TEMPLATE = "report/report.html.j2"
LETTERS = {"build": "B", "lint": "L", "package": "P", "boot": "T", "preflight": "H"}  # T: boot *test*, H: hosts
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _when(t) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t)) if isinstance(t, (int, float)) else ""
    except (OverflowError, OSError, ValueError):
        return ""


def _text(value) -> str:
    return "" if value is None else str(value)


def _boot(r: cells.Row) -> dict | None:
    b = cells.as_dict(r.record.get("boot"))
    if not b:
        return None
    s = cells.as_dict(b.get("seconds"))
    t = {k: _text(b.get(k)) for k in ("verdict", "step", "reason", "taint_flags", "accel", "trigger", "command", "console")}
    return {"id": r.id, "state": r.states["boot"], **t, "taint": t["taint_flags"],
            "excerpt": cells.as_list(b.get("excerpt")), "hits": cells.as_list(b.get("hits")),
            "kprobes": cells.as_list(b.get("kprobes")),
            "seconds": {k: s.get(k) if s.get(k) is not None else "" for k in ("prepare", "boot", "test", "vm", "total")},
            "at": _when(b.get("at"))}


def _files(pkg: dict) -> list[dict]:
    return [{"format": fmt, "path": _text(f.get("path")), "seconds": _text(f.get("seconds")),
             "lintian_warnings": f.get("lintian_warnings") if isinstance(f.get("lintian_warnings"), int) else None}
            for fmt, f in sorted(cells.as_dict(pkg.get("formats")).items()) if isinstance(f, dict)]


def _median(values: list[float]) -> float | None:
    # Not statistics.median: importing statistics costs a cached build more than the whole page.
    v = sorted(values)
    return round((v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2, 2) if v else None


def _kos(rec: dict) -> list[dict]:
    """The cell's modules: `kos` (several .ko per cell, as paths or {ko, sha256} records) or the one `ko`."""
    many = [k if isinstance(k, dict) else {"ko": k} for k in cells.as_list(rec.get("kos"))]
    one = [{"ko": rec.get("ko"), "sha256": rec.get("ko_sha256")}] if rec.get("ko") else []
    return [{"ko": _text(k.get("ko")), "sha256": _text(k.get("sha256") or k.get("ko_sha256"))[:16]}
            for k in many or one if k.get("ko")]


def detail(r: cells.Row) -> dict:
    """What a cell opens on."""
    rec = r.record
    s = cells.as_dict(rec.get("seconds"))
    lint = sorted(cells.findings(rec),
                  key=lambda f: SEVERITY_ORDER.get(_text(f.get("severity")), 3))
    return {
        "id": r.id, "states": r.states, "reason": r.reason, "log": r.log, "version": r.version,
        "release": _text(rec.get("release")), "compiler": _text(rec.get("compiler")), "image": _text(rec.get("image")),
        "build": {"result": _text(rec.get("result")), "log": _text(rec.get("log")), "kos": _kos(rec),
                  "exit_code": rec.get("exit_code"),
                  "errors": cells.as_list(rec.get("errors"))[:8],
                  "diagnosis": [d for d in cells.as_list(rec.get("diagnosis")) if isinstance(d, dict)],
                  "seconds": {k: v for k, v in s.items() if v is not None}},
        "lint": lint,
        "linted": rec.get("lint") is not None,
        "boot": _boot(r),
        "preflight": [{"host": h, "state": st, "reason": why} for h, st, why in r.preflight],
        "package": ({"state": r.states["package"], "reason": _text(r.package.get("reason")), "files": _files(r.package),
                     "at": _when(r.package.get("at"))} if r.states["package"] != cells.NONE else None),
    }


def _build_figures(rows: list[cells.Row]) -> dict:
    built = [r for r in rows if isinstance(cells.as_dict(r.record.get("seconds")).get("total"), (int, float))]
    totals = [r.record["seconds"]["total"] for r in built]
    toolchains = {}
    for r in rows:
        if r.record.get("image"):
            t = toolchains.setdefault(r.kernel, {"image": _text(r.record["image"]),
                                                 "compiler": _text(r.record.get("compiler")), "releases": set()})
            t["releases"].add(_text(r.record.get("release")))
    slowest = sorted(built, key=lambda r: -r.record["seconds"]["total"])[:3]
    return {"cells": len(built), "seconds": round(sum(totals), 1),
            "median": _median(totals),
            "slowest": [{"id": r.id, "state": r.states["build"], "log": _text(r.record.get("log")),
                         "container": _text(r.record["seconds"].get("container")), "total": r.record["seconds"]["total"]}
                        for r in slowest],
            "toolchains": [{"kernel": k, "image": v["image"], "compiler": v["compiler"],
                            "releases": ", ".join(sorted(x for x in v["releases"] if x))}
                           for k, v in sorted(toolchains.items(), key=lambda kv: cells.kernel_key(kv[0]))]}


def _lint_figures(rows: list[cells.Row]) -> list[dict]:
    """One line per rule: its severity, how many cells it fired in, one message as an example."""
    rules = {}
    for r in rows:
        for f in detail(r)["lint"]:
            e = rules.setdefault(f["rule"], {**f, "cells": set()})
            e["cells"].add(r.id)
    return [{**e, "cells": len(e["cells"])} for e in
            sorted(rules.values(), key=lambda e: (SEVERITY_ORDER.get(e["severity"], 3), -len(e["cells"]), e["rule"]))]


def _boot_figures(rows: list[cells.Row]) -> dict:
    booted = [b for b in (_boot(r) for r in rows) if b]
    vm = [b["seconds"]["vm"] for b in booted if isinstance(b["seconds"]["vm"], (int, float))]
    return {"rows": booted, "vm_seconds": round(sum(vm), 1), "median": _median(vm)}


def _package_figures(manifest: dict) -> list[dict]:
    return [{"module": m, "version": _text(p.get("version")), "result": _text(p.get("result")),
             "reason": _text(p.get("reason")), "files": _files(p), "at": _when(p.get("at"))}
            for m, p in sorted(cells.as_dict(manifest.get("packages")).items()) if isinstance(p, dict)]


def _preflight_figures(manifest: dict) -> dict:
    hosts = cells.preflight_hosts(manifest)
    for h in hosts:
        h["at"] = _when(h["at"])
    states = [h["state"] for h in hosts]
    return {"hosts": hosts, "counts": {s: states.count(s) for s in cells.STATES if s in states}}


def context(manifest: dict, title: str, now: float | None = None) -> dict:
    rows = cells.rows(manifest)
    columns = sorted({(r.kernel, r.flavour, r.arch) for r in rows}, key=lambda c: (cells.kernel_key(c[0]), c[1], c[2]))
    kernels = {}
    for k, _, _ in columns:
        kernels[k] = kernels.get(k, 0) + 1
    runs = cells.as_list(manifest.get("runs"))
    last = cells.as_dict(runs[-1]) if runs else {}
    return {
        "title": title, "generated": _when(now if now is not None else time.time()),
        "last_run": {"command": _text(last.get("command")), "status": _text(last.get("status")),
                     "finished": _when(last.get("finished"))} if last else None,
        "stages": cells.STAGES, "letters": LETTERS, "not_run": cells.NONE, "legend": cells.STATES,
        "counts": cells.counts(rows), "columns": columns, "kernels": kernels,
        "modules": sorted({r.module for r in rows}),
        "grid": {(r.module, r.kernel, r.flavour, r.arch): detail(r) for r in rows},
        "build": _build_figures(rows), "lint": _lint_figures(rows), "boot": _boot_figures(rows),
        "linted": sum(r.states["lint"] != cells.NONE for r in rows),
        "packages": _package_figures(manifest),
        "preflight": _preflight_figures(manifest),
    }


def page(manifest: dict, title: str, now: float | None = None) -> str:
    return render.render_text(TEMPLATE, **context(manifest, title, now))
