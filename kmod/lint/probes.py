"""Find a module's kprobes: the struct kprobe / kretprobe objects it registers, their handlers and the
symbol names they probe.

A compiled `static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = h };` leaves
relocations in the object's data: one to a string (the symbol name) and one to each handler. The
object itself is the one whose address is loaded just before the call to register_kprobe()/
register_kretprobe(). Handlers assigned at run time (`kp.pre_handler = h;`) show up as addresses taken
in the registering function. With DWARF, functions with a handler's signature are handlers too.
"""
import re
import struct
from dataclasses import dataclass, field

from . import decode, ruledata
from .callgraph import Graph
from .elf import SHF_EXECINSTR, SHF_WRITE, Elf
from .pointers import SHF_STRINGS, object_range, target_of



@dataclass
class Probes:
    handlers: dict[int, str] = field(default_factory=dict)      # function index -> "kprobe"/"kretprobe"
    symbols: dict[str, str] = field(default_factory=dict)       # probed symbol -> "kprobe"/"kretprobe"
    defaults: set[str] = field(default_factory=set)   # of those, read from a writable buffer (a parameter)
    registers: bool = False                           # the module calls register_k*probe*()
    literals: list[str] = field(default_factory=list)  # symbol-like strings the registering code uses
    offsets: dict[str, int] = field(default_factory=dict)  # probed symbol -> the object's static .offset

    def handler_set(self) -> set[int]:
        return set(self.handlers)


def _static_offset(elf: Elf, sec: int, slot: int) -> int:
    """The `.offset` of the struct kprobe whose `.symbol_name` pointer is at `slot`: the unsigned int right
    after that pointer (struct kprobe's layout on every 64-bit kernel; a kretprobe starts with its kprobe)."""
    data = elf.section_bytes(elf.sections[sec])
    at = slot + 8
    return struct.unpack_from(elf.order + "I", data, at)[0] if at + 4 <= len(data) else 0


def _scan_object(g: Graph, sec: int, lo: int, hi: int, kind: str, probes: Probes, depth: int = 0) -> None:
    elf = g.elf
    for r in elf.relocs.get(sec, ()):
        if not lo <= r.offset < hi:
            continue
        t = target_of(elf, r)
        if t is None:
            continue
        tsec, toff = t
        target_sec = elf.sections[tsec]
        if target_sec.flags & SHF_EXECINSTR:
            fn = g.function_at(tsec, toff)
            if fn is not None and g.functions[fn].start == toff:
                probes.handlers.setdefault(fn, kind)
        elif target_sec.flags & SHF_STRINGS or target_sec.name.startswith(".rodata"):
            name = elf.cstring_at(tsec, toff)
            if name and _looks_like_symbol(name):
                probes.symbols.setdefault(name, kind)
                probes.offsets.setdefault(name, _static_offset(elf, sec, r.offset))
        elif depth == 0:
            name = elf.cstring_at(tsec, toff) if target_sec.flags & SHF_WRITE else None
            if name and _looks_like_symbol(name):
                # a writable buffer: the default of module_param_string(symbol, ...), which the
                # kernel's own kprobe samples use; a different one may be given at load time
                probes.symbols.setdefault(name, kind)
                probes.offsets.setdefault(name, _static_offset(elf, sec, r.offset))
                probes.defaults.add(name)
                continue
            # register_kprobes(struct kprobe **kps, n): an array of pointers to the objects
            a, b = object_range(elf, tsec, toff)
            _scan_object(g, tsec, a, b, kind, probes, depth + 1)


_ADD_IMM = re.compile(r"^\s*\w+\s*,\s*\w+\s*,\s*#?(0x[0-9a-f]+|\d+)\s*$")


def _first_argument(g: Graph, f, call_addr: int, relocs: list) -> tuple[int, int] | None:
    """The data address in the first argument register (the arch's [abi] arguments) at a call: the last
    instruction before the call that writes that register, if a relocation inside it names data (lea or
    mov $sym, adrp+add, addi with a TOC or PC-relative part). Falls back to the last data address the
    function loads before the call."""
    elf = g.elf
    regs = decode.arch_of(elf).argument(1)
    insns = decode.disassemble(elf, elf.sections[f.section], f.start, call_addr)
    extra = 0
    for addr, size, mn, op in reversed(insns):
        parts = [p.strip() for p in op.split(",")]
        if parts[0] not in regs:
            continue
        found = None
        for r in relocs:
            if addr <= r.offset < addr + size:
                t = target_of(elf, r)
                if found is None and t is not None and not elf.sections[t[0]].flags & (SHF_EXECINSTR | SHF_STRINGS):
                    found = (t[0], t[1] + extra)
        if found is not None:
            return found
        m = _ADD_IMM.match(op) if mn == "add" and len(parts) == 3 and parts[1] == parts[0] else None
        if m:
            extra += int(m.group(1), 0)   # section anchors: `add x0, x0, #0x8` after the relocated base
            continue
        break   # the register is written some other way: use the fallback
    # e.g. `register_kprobe(&probes[i])` in a loop: prefer the nearest object that holds a handler
    last = None
    for r in reversed(relocs):
        t = target_of(elf, r)
        if t is None or elf.sections[t[0]].flags & (SHF_EXECINSTR | SHF_STRINGS):
            continue
        last = last or t
        if _holds_code_pointer(g, t):
            return t
    return last


def _holds_code_pointer(g: Graph, t: tuple[int, int]) -> bool:
    lo, hi = object_range(g.elf, *t)
    for r in g.elf.relocs.get(t[0], ()):
        if lo <= r.offset < hi:
            tt = target_of(g.elf, r)
            if tt is not None and g.elf.sections[tt[0]].flags & SHF_EXECINSTR:
                return True
    return False


def _looks_like_symbol(s: str) -> bool:
    return 0 < len(s) < 128 and all(c.isalnum() or c in "_.$" for c in s) and not s[0].isdigit()


def find(g: Graph) -> Probes:
    data = ruledata.load("kprobes")
    kinds = {n: "kprobe" for n in data["register_kprobe"]} | {n: "kretprobe" for n in data["register_kretprobe"]}
    probes = Probes()
    elf = g.elf
    blind = False     # a registration whose handlers the relocations do not show
    for call in g.calls:
        kind = kinds.get(call.external or "")
        if kind is None:
            continue
        before = len(probes.handlers)
        probes.registers = True
        f = g.functions[call.caller]
        relocs = sorted((r for r in elf.relocs.get(f.section, ()) if f.start <= r.offset < call.addr),
                        key=lambda r: r.offset)
        for r in relocs:     # `kp.symbol_name = "x"` at run time: candidates, for the message
            t = target_of(elf, r)
            if t is not None and elf.sections[t[0]].flags & SHF_STRINGS:
                s = elf.cstring_at(*t)
                if s and _looks_like_symbol(s) and s not in probes.literals:
                    probes.literals.append(s)
        # the object: what the first argument register holds at the call
        obj = _first_argument(g, f, call.addr, relocs)
        if obj is not None:
            lo, hi = object_range(elf, *obj)
            _scan_object(g, obj[0], lo, hi, kind, probes)
        # handlers stored at run time: functions whose address the registering function takes
        for r in relocs:
            if (f.section, r.offset) in g.call_relocs:
                continue
            t = target_of(elf, r)
            if t is None or not elf.sections[t[0]].flags & SHF_EXECINSTR:
                continue
            fn = g.function_at(*t)
            if fn is not None and fn != f.index and g.functions[fn].start == t[1]:
                probes.handlers.setdefault(fn, kind)
        if len(probes.handlers) == before and not (obj and _holds_code_pointer(g, obj)):
            blind = True
    if blind:
        # DWARF costs a second on a module with debug info: read it only when the relocations left a
        # registration without a handler (set up elsewhere, or through a pointer)
        _dwarf_handlers(g, probes)
    return probes


def _dwarf_handlers(g: Graph, probes: Probes) -> None:
    """Functions whose DWARF signature is a kprobe or kretprobe handler's."""
    if g.elf.section(".debug_info") is None:
        return
    try:
        from . import dwarf
        for name, kind in dwarf.handler_functions(g.elf):
            fn = g.by_name.get(name)
            if fn is not None:
                probes.handlers.setdefault(fn, kind)
    except Exception:   # DWARF is a bonus: a module with broken debug info is still linted
        return
