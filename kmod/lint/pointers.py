"""Where a relocation points, which data object holds it, and where a call through a pointer can go
when the module itself says so: the function tables and ops structs it initialises.

A call through a pointer (`ops->fn()`, `table[i]()`) has no target in the code. When the calling
function reads a data object of the module (its relocations name it) and that object holds function
addresses (relocations in the object's bytes), those functions are where the call can go; the rules
that follow calls (sleep-in-probe-handler) follow them too. Anything else (a pointer passed in, one
from another module or the kernel) is reported as not followed, never silently skipped.
"""
import bisect

from . import decode
from .elf import SHF_EXECINSTR, STT_OBJECT, STT_SECTION, Elf

SHF_STRINGS = 0x20
OBJECT_FALLBACK = 512   # bytes scanned when an object has no symbol with a size
OBJECT_DEPTH = 2        # pointer to an ops struct, then the struct: as deep as a static table goes


def target_of(elf: Elf, r) -> tuple[int, int] | None:
    """(section, offset) a relocation points at, or None for an undefined or absolute symbol."""
    sym = elf.symbols[r.sym]
    if not sym.defined or sym.shndx >= len(elf.sections):
        return None
    base = 0 if sym.type == STT_SECTION else sym.value
    return sym.shndx, base + r.addend + decode.arch_of(elf).reloc_adjust(r.type)


def object_range(elf: Elf, sec: int, off: int) -> tuple[int, int]:
    """The data object around a section offset: its symbol's extent, else up to the next object."""
    best = None
    starts = []
    for s in elf.symbols:
        if s.shndx != sec or s.type != STT_OBJECT:
            continue
        starts.append(s.value)
        if s.value <= off < s.value + max(s.size, 1) and s.size:
            best = (s.value, s.value + s.size)
    if best:
        return best
    starts.sort()
    i = bisect.bisect_right(starts, off)
    end = starts[i] if i < len(starts) else off + OBJECT_FALLBACK
    return off, min(end, off + OBJECT_FALLBACK)


def _relocs_in(g, sec: int, lo: int, hi: int) -> list:
    """Relocations of section `sec` patching [lo, hi), by bisection over a per-graph sorted copy."""
    memo = g.memo.setdefault("sorted_relocs", {})
    if sec not in memo:
        rs = sorted(g.elf.relocs.get(sec, ()), key=lambda r: r.offset)
        memo[sec] = ([r.offset for r in rs], rs)
    offs, rs = memo[sec]
    return rs[bisect.bisect_left(offs, lo):bisect.bisect_left(offs, hi)]


def table_callees(g, fn: int) -> list[int]:
    """Functions held in the data objects that function `fn` reads: where its calls through a pointer
    can go, as far as this module shows (empty when it shows nothing)."""
    memo = g.memo.setdefault("table_callees", {})
    if fn in memo:
        return memo[fn]
    elf = g.elf
    f = g.functions[fn]
    out: list[int] = []
    seen_objects = set()

    def scan(t, depth):
        lo, hi = object_range(elf, *t)
        if (t[0], lo) in seen_objects:
            return
        seen_objects.add((t[0], lo))
        for rr in _relocs_in(g, t[0], lo, hi):
            tt = target_of(elf, rr)
            if tt is None:
                continue
            if not elf.sections[tt[0]].flags & SHF_EXECINSTR:
                if depth < OBJECT_DEPTH and not elf.sections[tt[0]].flags & SHF_STRINGS:
                    scan(tt, depth + 1)     # a pointer to the ops struct (`current_ops->run()`)
                continue
            callee = g.function_at(*tt)
            if callee is not None and g.functions[callee].start == tt[1] and callee not in out:
                out.append(callee)

    for r in _relocs_in(g, f.section, f.start, f.end):
        if (f.section, r.offset) in g.call_relocs:
            continue
        t = target_of(elf, r)
        if t is not None and not elf.sections[t[0]].flags & (SHF_EXECINSTR | SHF_STRINGS):
            scan(t, 1)
    memo[fn] = out
    return out
