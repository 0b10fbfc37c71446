"""`invoke status`: the matrix as a table in the terminal, or as JSON for scripts."""
import json

from . import cells

COLOURS = {cells.OK: "green", cells.WARNING: "yellow", cells.FAILED: "red", cells.ERROR: "magenta",
           cells.INTERRUPTED: "dark_orange", cells.RUNNING: "cyan", cells.PENDING: "cyan",
           cells.EXCLUDED: "dim", cells.NONE: "dim"}
REASON = "first finding or reason"
COLUMNS = ("module", "kernel", "flavour", "arch", *cells.STAGES, REASON, "log")


def as_json(rows: list[cells.Row]) -> str:
    return json.dumps({"cells": [r.as_json() for r in rows], "counts": cells.counts(rows)}, indent=2) + "\n"


def _plain(r: cells.Row) -> list[str]:
    return [r.module, r.kernel, r.flavour or "-", r.arch, *(r.states[s] for s in cells.STAGES), r.reason, r.log]


def summary(rows: list[cells.Row]) -> str:
    totals = cells.counts(rows)
    return "  ".join(f"{stage}: " + ", ".join(f"{n} {'not run' if s == cells.NONE else s}" for s, n in totals[stage].items())
                     for stage in cells.STAGES)


def print_table(rows: list[cells.Row], file=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    plain = [_plain(r) for r in rows]
    widths = [max([len(col), *(len(p[i]) for p in plain)]) for i, col in enumerate(COLUMNS)]
    probe = Console(file=file)
    # Only the reason gives way on a narrow terminal: the names and the log path are what one copies.
    # A pipe gets whole lines (grep, less -S) and no colour.
    console = probe if probe.is_terminal else Console(file=file, width=sum(widths) + 2 * len(widths), no_color=True)
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col, width in zip(COLUMNS, widths):
        t.add_column(col, no_wrap=True, overflow="ellipsis", min_width=None if col == REASON else width)
    for r, p in zip(rows, plain):
        marks = [f"[{COLOURS.get(r.states[s], 'white')}]{escape(r.states[s])}[/]" for s in cells.STAGES]
        t.add_row(*map(escape, p[:4]), *marks, escape(r.reason), escape(r.log))
    console.print(t)
    console.print(summary(rows), highlight=False, soft_wrap=True)
