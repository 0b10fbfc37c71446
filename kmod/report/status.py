"""`invoke status`: the matrix as a table in the terminal, or as JSON for scripts."""
import json

from . import cells

COLOURS = {cells.OK: "green", cells.WARNING: "yellow", cells.FAILED: "red", cells.ERROR: "magenta",
           cells.INTERRUPTED: "dark_orange", cells.RUNNING: "cyan", cells.PENDING: "cyan",
           cells.EXCLUDED: "dim", cells.NONE: "dim"}
REASON = "first finding or reason"
COLUMNS = ("module", "kernel", "flavour", "arch", *cells.STAGES, REASON, "log")


def as_json(rows: list[cells.Row], hosts: list[dict] = ()) -> str:
    return json.dumps({"cells": [r.as_json() for r in rows], "counts": cells.counts(rows),
                       "preflight": list(hosts)}, indent=2) + "\n"


def _plain(r: cells.Row) -> list[str]:
    return [r.module, r.kernel, r.flavour or "-", r.arch, *(r.states[s] for s in cells.STAGES), r.reason, r.log]


def summary(rows: list[cells.Row]) -> str:
    totals = cells.counts(rows)
    return "  ".join(f"{stage}: " + ", ".join(f"{n} {'not run' if s == cells.NONE else s}" for s, n in totals[stage].items())
                     for stage in cells.STAGES)


def host_lines(hosts: list[dict]) -> list[list[str]]:
    """preflight's hosts as rows: host, kernel, module, verdict, reason (the host's error when unread)."""
    out = []
    for h in hosts:
        kernel = h["release"] + (f" ({h['pin']})" if h["pin"] else "")
        if h["error"] or not h["modules"]:
            out.append([h["host"], kernel or "-", "-", h["state"], h["error"]])
        for m in h["modules"]:
            out.append([h["host"], kernel or "-", m["module"], m["state"], m["reason"]])
    return out


def _console(widths: list[int], file):
    from rich.console import Console
    probe = Console(file=file)
    # Only the reason gives way on a narrow terminal: the names and the log path are what one copies.
    # A pipe gets whole lines (grep, less -S) and no colour.
    return probe if probe.is_terminal else Console(file=file, width=sum(widths) + 2 * len(widths), no_color=True)


def print_hosts(hosts: list[dict], file=None) -> None:
    """The `preflight` section: what each host's last preflight said."""
    from rich.markup import escape
    from rich.table import Table
    if not hosts:
        return
    cols = ("host", "kernel", "module", "preflight", REASON)
    lines = host_lines(hosts)
    widths = [max([len(c), *(len(ln[i]) for ln in lines)]) for i, c in enumerate(cols)]
    console = _console(widths, file)
    t = Table(box=None, pad_edge=False, header_style="bold", title=None)
    for col, width in zip(cols, widths):
        t.add_column(col, no_wrap=True, overflow="ellipsis", min_width=None if col == REASON else width)
    for ln in lines:
        t.add_row(*map(escape, ln[:3]), f"[{COLOURS.get(ln[3], 'white')}]{escape(ln[3])}[/]", escape(ln[4]))
    console.print()
    console.print(t)
    states = [h["state"] for h in hosts]
    console.print(f"preflight: {len(hosts)} host(s): " + ", ".join(
        f"{states.count(s)} {s}" for s in cells.STATES if s in states), highlight=False, soft_wrap=True)


def print_table(rows: list[cells.Row], file=None) -> None:
    from rich.markup import escape
    from rich.table import Table
    plain = [_plain(r) for r in rows]
    widths = [max([len(col), *(len(p[i]) for p in plain)]) for i, col in enumerate(COLUMNS)]
    console = _console(widths, file)
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col, width in zip(COLUMNS, widths):
        t.add_column(col, no_wrap=True, overflow="ellipsis", min_width=None if col == REASON else width)
    for r, p in zip(rows, plain):
        marks = [f"[{COLOURS.get(r.states[s], 'white')}]{escape(r.states[s])}[/]" for s in cells.STAGES]
        t.add_row(*map(escape, p[:4]), *marks, escape(r.reason), escape(r.log))
    console.print(t)
    console.print(summary(rows), highlight=False, soft_wrap=True)
