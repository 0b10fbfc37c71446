"""The probed symbols' lines of /proc/kallsyms, read once per kernel build and run.

Reading /proc/kallsyms makes the kernel format every symbol it has (about 40 ms of the host's CPU for
a Debian kernel's 120,000), only for a grep to keep a few lines: it was most of what preflight cost a
host. Hosts that run the same build (release, `uname -v`, arch, the build ID in /sys/kernel/notes, and
the same first symbol) have the same vmlinux symbols in the same order; only KASLR moves them, by one
slide for the whole image, which their first kallsyms line shows. So the first host of a build reads
the lines (templates/preflight/kallsyms.sh.j2) and the others of that run take them, moved by their own
slide, or with every address 0 when they are not allowed to see addresses.

Exactly as correct as reading: the lines are reused only when every probed symbol is a text symbol of
vmlinux in them. A symbol that build does not have, or has only in a module (which modules are loaded,
and where, is each host's own), sends every host of the build to read its own kallsyms as before, so
a probe target missing from a host's kernel still fails there. Lines of module symbols are never
reused: a vmlinux symbol is what register_kprobe() finds first, whatever a module calls its own."""
import threading
import time
from dataclasses import dataclass

from .. import render
from ..lint.target import TEXT_TYPES
from .facts import MARKER, Facts, sections

WAIT = 5.0    # how long a host waits for another host of its build to read the lines before it reads them


def script(symbols: list[str], sudo: bool) -> str:
    return render.render_text("preflight/kallsyms.sh.j2", marker=MARKER, symbols=sorted(set(symbols)), sudo=sudo)


def _split(line: str) -> tuple[int, str, str, bool] | None:
    """(address, type, name, in a module) of a kallsyms line."""
    parts = line.split()
    if len(parts) < 3:
        return None
    try:
        return int(parts[0], 16), parts[1], parts[2], len(parts) > 3 and parts[3].startswith("[")
    except ValueError:
        return None


def key(f: Facts) -> tuple | None:
    """What says two hosts run one build; None when it cannot be told (the lines are then read)."""
    first = _split(f.kallsyms_first)
    if not f.kernel_notes or first is None:
        return None
    return f.release, f.version, f.machine, f.kernel_notes, first[2]


@dataclass(frozen=True)
class Lines:
    host: str                 # who read them
    lines: tuple[str, ...]    # as that host printed them
    first: int                # the address of its first kallsyms line (0: it saw no addresses)
    reusable: bool            # every probed symbol is a vmlinux text symbol in them

    @property
    def visible(self) -> bool:
        return self.first != 0

    def usable_by(self, visible: bool) -> bool:
        return self.reusable and (self.visible or not visible)

    def moved(self, first: int) -> list[str]:
        """The vmlinux lines as a host of the same build whose first line is at `first` shows them."""
        out = []
        for line in self.lines:
            s = _split(line)
            if s is None or s[3]:
                continue
            addr, typ, name, _ = s
            width = len(line.split(None, 1)[0])
            if not first:
                addr = 0
            elif addr >= self.first:   # the image moves as one; absolute symbols (per-cpu offsets) stay
                addr += first - self.first
            out.append(f"{addr:0{width}x} {typ} {name}")
        return out


def reusable(lines: list[str], symbols: set[str]) -> bool:
    found = set()
    for line in lines:
        s = _split(line)
        if s is not None and not s[3] and s[1] in TEXT_TYPES:
            found.add(s[2])
    return symbols <= found


class Cache:
    """One run's reads, by build; a host that finds another of its build reading waits for it (WAIT)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._lines: dict[tuple, Lines] = {}
        self._busy: set[tuple] = set()

    def take(self, k: tuple, visible: bool, deadline: float) -> tuple[Lines | None, bool]:
        """(lines this host can use, or None: read them; whether it reads them for the others too)."""
        end = min(deadline, time.monotonic() + WAIT)
        with self._cond:
            while True:
                got = self._lines.get(k)
                if got is not None:
                    return (got, False) if got.usable_by(visible) else (None, False)
                if k not in self._busy:
                    self._busy.add(k)
                    return None, True
                left = end - time.monotonic()
                if left <= 0:
                    return None, False
                self._cond.wait(left)

    def done(self, k: tuple, lines: Lines | None, claimed: bool) -> None:
        with self._cond:
            old = self._lines.get(k)
            if lines is not None and (old is None or (lines.usable_by(True) and not old.usable_by(True))):
                self._lines[k] = lines
            if claimed:
                self._busy.discard(k)
            self._cond.notify_all()


def fill(cache: Cache, session, f: Facts, symbols: set[str], host: str) -> None:
    """f.kallsyms: the probed symbols' lines, from another host of the same build or read now."""
    first = _split(f.kallsyms_first)
    addr = first[0] if first else 0
    k = key(f)
    got, claimed = cache.take(k, addr != 0, session.deadline) if k else (None, False)
    if got is not None:
        f.kallsyms, f.kallsyms_readable, f.kallsyms_from = got.moved(addr), True, got.host
        return
    lines = None
    try:
        out = session.run("exec sh -c " + _quote(script(sorted(symbols), f.privilege == "sudo")))
        s = sections(out.stdout)
        if "end" not in s:
            from ..errors import InfraError
            raise InfraError("the host's answer ended early (no end mark): the kallsyms read did not finish")
        ks = s.get("kallsyms", [])
        f.kallsyms_readable = "status ok" in ks
        f.kallsyms = [ln for ln in ks if ln and not ln.startswith("status ")]
        if f.kallsyms_readable:
            lines = Lines(host, tuple(f.kallsyms), addr, reusable(f.kallsyms, symbols))
    finally:
        if k:
            cache.done(k, lines, claimed)


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)
