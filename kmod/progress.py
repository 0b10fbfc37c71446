"""Progress for anything that takes more than a moment: a live table on a terminal, plain lines elsewhere
(CI logs), both on stderr so stdout stays machine-readable."""
import sys
import threading
import time


class Progress:
    def __init__(self, title: str, rows: list[str], quiet: bool = False):
        self.title, self.rows, self.quiet = title, rows, quiet
        self.state = {r: ("waiting", "") for r in rows}
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._live = None
        self.tty = sys.stderr.isatty() and not quiet

    def __enter__(self):
        if self.tty:
            from rich.console import Console
            from rich.live import Live
            self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=8, transient=False)
            self._live.__enter__()
        elif not self.quiet:
            print(f"{self.title}: {len(self.rows)} job(s)", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.update(self._table())
            self._live.__exit__(*exc)

    def _table(self):
        from rich.table import Table
        t = Table(title=f"{self.title}  ({time.monotonic() - self.started:.1f}s)", title_justify="left",
                  box=None, pad_edge=False)
        t.add_column("job")
        t.add_column("state")
        t.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=70)
        colors = {"ok": "green", "cached": "cyan", "failed": "red", "running": "yellow", "interrupted": "magenta"}
        for r in self.rows:
            s, d = self.state[r]
            t.add_row(r, f"[{colors.get(s, 'white')}]{s}[/]", d)
        return t

    def update(self, row: str, state: str, detail: str = "") -> None:
        with self._lock:
            self.state[row] = (state, detail)
            if self._live:
                self._live.update(self._table())
            elif not self.quiet and state != "running" and (state != "waiting" or detail):
                print(f"  {row}: {state}{' - ' + detail if detail else ''}", file=sys.stderr, flush=True)

    def note(self, row: str, detail: str) -> None:
        """A passing detail (last log line); shown live on a terminal only."""
        if self._live:
            with self._lock:
                self.state[row] = (self.state[row][0], detail.strip()[:100])
                self._live.update(self._table())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Counter:
    """Progress of a long batch of small items (say, linting thousands of modules): a bar on a
    terminal, a line per tenth elsewhere, nothing for batches too small to notice."""

    def __init__(self, title: str, total: int, min_total: int = 50):
        self.title, self.total, self.done = title, total, 0
        self.active = total >= min_total
        self.tty = sys.stderr.isatty()
        self._bar = self._task = None
        self._next_tenth = 1

    def __enter__(self):
        if self.active and self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TimeElapsedColumn
            self._bar = Bar("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total)
        return self

    def __exit__(self, *exc):
        if self._bar:
            self._bar.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar:
            self._bar.update(self._task, completed=self.done)
        elif self.active and self.done * 10 >= self._next_tenth * self.total:
            self._next_tenth = self.done * 10 // self.total + 1
            print(f"{self.title}: {self.done}/{self.total}", file=sys.stderr, flush=True)
