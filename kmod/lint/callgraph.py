"""The module's functions and who calls whom, from relocations and from direct calls.

Functions come from the symbol table (FUNC and NOTYPE symbols in executable sections; asm often has
only NOTYPE labels). Calls come from the decoder's events: a call/jump with a relocation names its
target; one without (a call to a static function in the same section) carries its target in the
immediate. Every other relocation that lands exactly on a function's first byte takes that function's
address: it may be called through a pointer.
"""
import bisect
from dataclasses import dataclass, field

from . import decode, ruledata
from .elf import STB_LOCAL, STT_FUNC, STT_NOTYPE, STT_SECTION, Elf

PROBE_REGISTRATION = frozenset({"register_kprobe", "register_kprobes", "register_kretprobe", "register_kretprobes"})


@dataclass
class Function:
    index: int
    name: str
    section: int
    sec_name: str
    start: int
    end: int
    aliases: list[str] = field(default_factory=list)
    # the decoder's events inside this function, in address order
    events: list = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]


@dataclass
class Call:
    caller: int
    addr: int
    callee: int | None      # index of a function of this module
    external: str | None    # name of a kernel symbol
    tail: bool


@dataclass
class Graph:
    elf: Elf
    functions: list[Function]
    calls: list[Call]
    by_name: dict[str, int]
    # function index -> where its address is taken ("section+0xoff" or "function+0xoff")
    address_taken: dict[int, list[str]]
    exports: set[int]
    entries: set[int]
    _starts: dict[int, list[int]] = field(default_factory=dict)
    _relocs: dict[int, dict] = field(default_factory=dict)
    call_relocs: set = field(default_factory=set)   # (section, offset) of relocations that are direct calls
    _callers: dict[int, list[Call]] | None = None
    _callees: dict[int, list[Call]] | None = None
    memo: dict = field(default_factory=dict)        # what the rules work out once per graph (pointers.py)

    def function_at(self, sec: int, off: int) -> int | None:
        starts = self._starts.get(sec)
        if not starts:
            return None
        i = bisect.bisect_right(starts, off) - 1
        if i < 0:
            return None
        f = self.functions[self._first[sec] + i]
        return f.index if f.start <= off < max(f.end, f.start + 1) else None

    def callers(self, fn: int) -> list[Call]:
        if self._callers is None:
            self._callers = {}
            for c in self.calls:
                if c.callee is not None:
                    self._callers.setdefault(c.callee, []).append(c)
        return self._callers.get(fn, [])

    def calls_from(self, fn: int) -> list[Call]:
        if self._callees is None:
            self._callees = {}
            for c in self.calls:
                self._callees.setdefault(c.caller, []).append(c)
        return self._callees.get(fn, [])

    def where(self, fn: int, addr: int) -> str:
        f = self.functions[fn]
        return f"{f.name}+{addr - f.start:#x}"


def _functions(elf: Elf) -> tuple[list[Function], dict[int, list[int]], dict[int, int]]:
    per_sec: dict[int, dict[int, list]] = {}
    for s in elf.symbols:
        if s.type not in (STT_FUNC, STT_NOTYPE) or not s.name or not s.defined:
            continue
        if s.shndx >= len(elf.sections) or not elf.sections[s.shndx].executable:
            continue
        if s.name[0] in "$." or s.name.startswith(("__pfx_", "__cfi_")):
            continue   # mapping symbols, local labels, CFI/IBT padding
        if s.type == STT_NOTYPE and s.bind == STB_LOCAL:
            continue   # a label inside asm code (macro-generated loop labels), not a function
        if s.value >= elf.sections[s.shndx].size:
            continue
        per_sec.setdefault(s.shndx, {}).setdefault(s.value, []).append(s)
    functions: list[Function] = []
    starts: dict[int, list[int]] = {}
    first: dict[int, int] = {}
    for sec in elf.sections:
        if not sec.executable or sec.size == 0:
            continue
        entries = per_sec.get(sec.index, {})
        if 0 not in entries:
            entries = {0: [], **entries}    # code before the first symbol still runs: give it a name
        offs = sorted(entries)
        first[sec.index] = len(functions)
        starts[sec.index] = offs
        for i, off in enumerate(offs):
            syms = entries[off]
            # a FUNC, global name reads best; init_module/cleanup_module are aliases of the real ones
            syms.sort(key=lambda s: (s.type != STT_FUNC, s.name in ("init_module", "cleanup_module"),
                                     s.bind == STB_LOCAL, s.name))
            name = syms[0].name if syms else f"{sec.name}+{off:#x}"
            end = offs[i + 1] if i + 1 < len(offs) else sec.size
            functions.append(Function(len(functions), name, sec.index, sec.name, off, end,
                                      [s.name for s in syms[1:]]))
    return functions, starts, first


def needs_graph(elf: Elf) -> bool:
    """Only the FPU and probe-handler rules read the call graph: a module with no FP code and no probe
    registration needs none, which spares most of the work."""
    return any(n in PROBE_REGISTRATION for n in elf.undefined) or decode.has_fp(elf)


def build(elf: Elf) -> Graph:
    """The call graph with every branch (the guard and handler analyses need the control flow);
    empty when no rule needs it (see needs_graph)."""
    if not needs_graph(elf):
        g = Graph(elf, [], [], {}, {}, set(), set())
        g._first = {}
        return g
    functions, starts, first = _functions(elf)
    g = Graph(elf, functions, [], {}, {}, set(), set(), starts)
    g._first = first
    for f in functions:
        for n in f.names:
            g.by_name.setdefault(n, f.index)

    consumed: set[tuple[int, int]] = set()
    for sec_index, offs in starts.items():
        sec = elf.sections[sec_index]
        relocs = elf.relocs.by_offset(sec_index)
        used: set[int] = set()
        evs = decode.events(elf, sec, relocs, used)
        consumed.update((sec_index, o) for o in used)
        base = first[sec_index]
        n = len(offs)
        i = 0
        for ev in evs:
            while i + 1 < n and offs[i + 1] <= ev[0]:
                i += 1
            fn = functions[base + i]
            ev = _resolve(g, fn, sec_index, ev, record=True)
            if ev is not None:
                fn.events.append(ev)
                if ev[1] == decode.FP:
                    # a run of FP instructions that runs on into the next function(s)
                    j = i + 1
                    while j < n and offs[j] < ev[3]:
                        functions[base + j].events.append((offs[j], decode.FP, None, ev[3], ev[3]))
                        j += 1

    g.call_relocs = consumed
    _address_taken(g, consumed)
    for s in elf.symbols:
        if s.name.startswith("__ksymtab_") and s.name not in ("__ksymtab_gpl", "__ksymtab_strings"):
            fn = g.by_name.get(s.name[len("__ksymtab_"):])
            if fn is not None:
                g.exports.add(fn)
    for name in ("init_module", "cleanup_module"):
        if name in g.by_name:
            g.entries.add(g.by_name[name])
    return g


def _resolve(g: Graph, fn: Function, sec_index: int, ev, record: bool):
    """Turn a decoder event into one about functions: calls name a function index (or a kernel symbol),
    jumps into another function become tail calls, calls/jumps inside the function become branches."""
    off, kind = ev[0], ev[1]
    if kind == decode.BRANCH:
        if fn.start <= ev[2] < fn.end:
            return ev
        callee = g.function_at(sec_index, ev[2])
        if callee is None:
            return (off, decode.END, None, None, ev[4])
        mode = 2 if ev[3] else 1
        if record:
            g.calls.append(Call(fn.index, off, callee, None, True))
        return (off, decode.CALL, callee, mode, ev[4])
    if kind != decode.CALL:
        return ev
    target, mode = ev[2], ev[3]
    if target[0] != "loc":
        if record:
            g.calls.append(Call(fn.index, off, None, target[1], mode > 0))
        return ev
    _, tsec, toff = target
    if tsec == sec_index and fn.start <= toff < fn.end:
        return None if mode == 0 else (off, decode.BRANCH, toff, mode == 2, ev[4])
    callee = g.function_at(tsec, toff)
    if callee is None:
        if mode == 0 and not g.elf.sections[tsec].executable:
            return (off, decode.INDIRECT, None, None, ev[4])   # call *ptr(%rip): through a variable
        return (off, decode.END, None, None, ev[4]) if mode == 1 else None
    if record:
        g.calls.append(Call(fn.index, off, callee, None, mode > 0))
    return (off, decode.CALL, callee, mode, ev[4])



def _address_taken(g: Graph, consumed: set) -> None:
    elf = g.elf
    arch = decode.arch_of(elf)
    meta = ruledata.metadata_sections()
    for sec_index in list(elf.relocs.keys()):
        sec = elf.sections[sec_index]
        if sec.name in meta:
            continue
        for r in elf.relocs.get(sec_index):
            sym = elf.symbols[r.sym]
            if not sym.defined or sym.shndx >= len(elf.sections):
                continue
            tsec = elf.sections[sym.shndx]
            if not tsec.executable:
                continue
            if sec.executable and (sec_index, r.offset) in consumed:
                continue   # a direct call, not an address
            base = 0 if sym.type == STT_SECTION else sym.value
            target = base + r.addend + arch.reloc_adjust(r.type)
            fn = g.function_at(sym.shndx, target)
            if fn is None or g.functions[fn].start != target:
                continue
            if sec.executable:
                user = g.function_at(sec_index, r.offset)
                where = g.where(user, r.offset) if user is not None else f"{sec.name}+{r.offset:#x}"
                if user == fn:
                    continue   # e.g. a loop back to its own start
            else:
                where = f"{sec.name}+{r.offset:#x}"
            g.address_taken.setdefault(fn, []).append(where)
