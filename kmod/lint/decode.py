"""Instruction decoding per architecture, reduced to the two things the rules need: where the FP/SIMD
instructions are, and where the direct calls and jumps go. What each arch's instructions mean (which
names are calls, which registers are FP, which relocations patch a call) is data from
toolchains/arch/*.toml, through kmod.arch.

An executable section becomes a sorted list of 5-tuples (offset, kind, a, b, next):
  FP      a = None, b = end of the run of FP instructions
  CALL    a = ("ext", name) or ("loc", sec, off); b = 0 call, 1 tail jump, 2 conditional tail jump
  BRANCH  a = target offset in this section; b = conditional?
  END     the flow stops here (ret, indirect jump, a trap)
  INDIRECT  a call through a register or memory (its target is not in the code)
`next` is the offset of the following instruction. Offsets are section offsets (a module is
relocatable: nothing has an address yet). Only these instructions are kept: enough to build each
function's control flow for the guard analysis without holding every instruction in memory.

Two decoders: "capstone" reads capstone's instruction array directly (any arch capstone knows, the
instruction names classified by the arch's data), "a64" reads A64 encodings without decoding (fixed-width
words whose top byte says FP/SIMD or branch).
"""
import ctypes
import re
import threading
from functools import cache
from itertools import compress

import capstone

from .. import arch as archmod
from ..arch import Arch
from .elf import Elf, Section

FP, CALL, BRANCH, END, INDIRECT = 0, 1, 2, 3, 4
MODES = {"call": 0, "tail": 1, "branch": 2}

_local = threading.local()   # capstone handles keep per-call state: one per thread and arch


def arch_of(elf: Elf) -> Arch:
    a = archmod.by_elf_machine(elf.machine)
    if a is None:
        raise ValueError(f"no decoder for ELF machine {elf.machine}")
    return a


def disassembler(arch: Arch) -> capstone.Cs:
    handles = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    cs = handles.get(arch.name)
    if cs is None:
        mode = 0
        for m in arch.lint.cs_mode:
            mode |= getattr(capstone, m)
        cs = capstone.Cs(getattr(capstone, arch.lint.cs_arch), mode)
        cs.detail = False
        handles[arch.name] = cs
    return cs


class Tables:
    """An arch's instruction ids by what they do, from capstone's names and the arch's data."""

    def __init__(self, arch: Arch):
        cs = disassembler(arch)
        fp_rx = re.compile(arch.lint.fp_insns) if arch.lint.fp_insns else None
        self.fp: set[int] = set()
        self.rules: dict[int, tuple] = {}
        self.not_gp: set[int] = set()
        for i in range(1, 8192):
            name = cs.insn_name(i)
            if not name:
                continue
            if name not in arch.lint.gp_insns:
                self.not_gp.add(i)
            if fp_rx is not None and fp_rx.fullmatch(name):
                self.fp.add(i)
                continue
            rules = tuple(r for r in arch.lint.control if r.insn.fullmatch(name))
            if rules:
                self.rules[i] = rules
        self.interesting = frozenset(self.fp | set(self.rules))
        self.fp = frozenset(self.fp)
        self.not_gp = frozenset(self.not_gp) if arch.lint.gp_insns else None
        self.needs_text = any(r.text is not None for r in arch.lint.control)


@cache
def _tables(arch_name: str) -> Tables:
    return Tables(archmod.get(arch_name))


def _reloc_target(elf: Elf, arch: Arch, r):
    sym = elf.symbols[r.sym]
    if not sym.defined:
        return ("ext", sym.name)
    if sym.shndx >= len(elf.sections):       # SHN_ABS and friends: nothing to follow
        return ("ext", sym.name or "?")
    base = 0 if sym.type == 3 else sym.value  # STT_SECTION: the addend is the offset
    return ("loc", sym.shndx, base + r.addend + arch.reloc_adjust(r.type))


def undecoded(arch: Arch, code: bytes, pos: int) -> tuple[int, bool]:
    """(length, FP?) of bytes at `pos` that capstone cannot decode: data in .text, or instructions it
    does not know, recognised by the encodings in the arch's data."""
    u = arch.lint.undecoded
    unit = u.get("unit", 1)
    length = unit
    if unit >= 2 and pos + 2 <= len(code):
        half = int.from_bytes(code[pos:pos + 2], arch.byte_order)
        for p in u.get("lengths", ()):
            if half & p["mask"] == p["value"]:
                length = p["bytes"]
                break
    length = max(1, min(length, len(code) - pos))
    word = int.from_bytes(code[pos:pos + length], arch.byte_order)
    return length, any(word & p["mask"] == p["value"] for p in u.get("fp", ()))


# Reading capstone's instruction array directly: the Python wrapper builds four objects per instruction
# (about 2.5 us each), which made decoding slower than objdump. Instead cs_disasm() fills its C array,
# we look at the array through a memoryview, pick the few instructions that matter by instruction id
# (calls, jumps, returns, FP instructions) or by an FP register in the operand text (one regex over
# the whole array), and read only those.
_INSN = capstone._cs_insn
_SZ = ctypes.sizeof(_INSN)
_OFF_ADDR, _OFF_SIZE = _INSN.address.offset, _INSN.size.offset
_OFF_MN, _OFF_OP = _INSN.mnemonic.offset, _INSN.op_str.offset
_OP_LEN = 160       # cs_insn.op_str: char[160]
_CHUNK = 8192         # instructions per cs_disasm call: bounds memory (248 bytes per instruction); 2 MB
                      # arrays decoded the in-tree modules about 5% faster than 8 MB ones (32768)


def _cstr(mv, start: int, size: int) -> str:
    return bytes(mv[start:start + size]).split(b"\0", 1)[0].decode("ascii", "replace")


def _after_last(mv, n: int) -> int:
    """The address just past the last of `n` decoded cs_insn structs (address + size): where to resume."""
    b = (n - 1) * _SZ
    return int.from_bytes(mv[b + _OFF_ADDR:b + _OFF_ADDR + 8], "little") + (mv[b + _OFF_SIZE] | mv[b + _OFF_SIZE + 1] << 8)


def _register_hits(arch: Arch, mv, n: int) -> set[int]:
    """Indexes of the `n` instructions whose operand text names an FP/vector register."""
    if _literal_start(arch.lint.fp_registers):
        # a pattern that starts with a literal ("mm[0-9]", "%[fv]...") is found by the regex engine's
        # fast search: one pass over the whole cs_insn array costs less than reading each operand text
        out = set()
        for m in arch.fp_registers_bytes.finditer(mv):
            i, r = divmod(m.start(), _SZ)
            # capstone leaves old bytes after the operand string's NUL: only count text before it
            if _OFF_OP <= r < _OFF_OP + _OP_LEN and 0 not in mv[i * _SZ + _OFF_OP:m.start()]:
                out.add(i)
        return out
    # one that does not ("\b(?:f|v|vs)[0-9]..." on ppc64el, riscv64) is tried at every byte of the array
    # (248 bytes an instruction): that was most of those arches' lint. Each distinct operand text of the
    # chunk is searched once instead.
    buf = bytes(mv)
    ops = [buf[b:b + _OP_LEN].partition(b"\0")[0] for b in range(_OFF_OP, n * _SZ, _SZ)]
    search = arch.fp_registers_bytes.search
    named = {op for op in set(ops) if search(op)}
    return {i for i, op in enumerate(ops) if op in named} if named else set()


@cache
def _literal_start(pattern: str) -> bool:
    return bool(pattern) and (pattern[0].isalnum() or pattern[0] in "%$_")


def _address(elf: Elf, sec: Section) -> int:
    """The address of a section's first byte inside the module's bytes, for cs_disasm to read in place (a
    section copied out and then into a ctypes buffer was two copies of all the code of every module)."""
    data = elf.data
    if not isinstance(data, bytes):
        data = elf.data = bytes(data)
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value + sec.offset


def _chunks(arch: Arch, elf: Elf, sec: Section, code, lo: int, hi: int):
    """Decode [lo, hi) of a section (`code`: its bytes) in chunks: yields (memoryview of the cs_insn
    array, count, ids) for decoded runs and (None, length, fp?) for undecodable bytes."""
    handle = disassembler(arch).csh
    base = _address(elf, sec)     # elf.data stays referenced by elf for as long as this runs
    pos = lo
    while pos < hi:
        arr = ctypes.POINTER(_INSN)()
        ptr = ctypes.cast(base + pos, ctypes.POINTER(ctypes.c_char))
        n = capstone._cs.cs_disasm(handle, ptr, hi - pos, pos, _CHUNK, ctypes.byref(arr))
        if n == 0:
            length, fp = undecoded(arch, code, pos)
            yield None, (pos, length), fp
            pos += length
            continue
        try:
            mv = memoryview((ctypes.c_char * (n * _SZ)).from_address(ctypes.addressof(arr.contents))).cast("B")
            ids = mv.cast("I")[::_SZ // 4]
            yield mv, n, ids
            pos = _after_last(mv, n)
            del ids, mv
        finally:
            capstone._cs.cs_free(arr, n)


def _capstone_has_fp(elf: Elf, arch: Arch) -> bool:
    t = _tables(arch.name)
    for sec in elf.sections:
        if not sec.executable or not sec.size:
            continue
        code = elf.section_view(sec)
        for mv, n, ids in _chunks(arch, elf, sec, code, 0, len(code)):
            if mv is None:
                if ids:
                    return True
                continue
            if not t.fp.isdisjoint(ids):
                return True
            if t.not_gp is not None:
                # most instructions are known to name no FP register: read the text of the others only
                rx = arch.fp_registers_bytes
                for i in compress(range(n), map(t.not_gp.__contains__, ids)):
                    b = i * _SZ + _OFF_OP
                    if rx.search(bytes(mv[b:b + 160]).split(b"\0", 1)[0]):
                        return True
            elif _register_hits(arch, mv, n):
                return True
    return False


def _target(op: str, addr: int, relative: bool) -> int | None:
    """A direct branch's target from its last operand ("0x1a2b", "-0xa", "6"); None for a register."""
    last = op.rsplit(",", 1)[-1].strip()
    if not last[:1].isdigit() and not (last[:1] == "-" and last[1:2].isdigit()):
        return None
    try:
        value = int(last, 0)
    except ValueError:
        return None
    return addr + value if relative else value


def capstone_events(elf: Elf, arch: Arch, sec: Section, relocs: dict[int, object], used: set,
                    lo: int = 0, hi: int | None = None) -> list:
    """Events of [lo, hi): FP runs, calls, every jump and return (the FPU guard analysis needs the
    control flow)."""
    t = _tables(arch.name)
    relative = arch.lint.targets == "relative"
    before = arch.lint.call_relocation_before
    code = elf.section_view(sec)
    hi = len(code) if hi is None else min(hi, len(code))
    events = []
    append = events.append
    for mv, n, ids in _chunks(arch, elf, sec, code, lo, hi):
        if mv is None:
            if ids:   # undecoded FP (an instruction capstone does not know, e.g. RISC-V V)
                start, length = n
                append([start, FP, None, start + length, start + length])
            continue
        hits = list(compress(range(n), map(t.interesting.__contains__, ids)))
        vec = _register_hits(arch, mv, n)
        if vec:
            hits = sorted(vec.union(hits))
        run = None
        for i in hits:
            b = i * _SZ
            iid = ids[i]
            addr = int.from_bytes(mv[b + _OFF_ADDR:b + _OFF_ADDR + 8], "little")
            nxt = addr + (mv[b + _OFF_SIZE] | mv[b + _OFF_SIZE + 1] << 8)
            if i in vec or iid in t.fp:
                # FP instructions until the next control event form one run [addr, end): the guard
                # state cannot change inside it, so one event stands for all of them
                if run is None:
                    run = [addr, FP, None, nxt, nxt]
                    append(run)
                else:
                    run[3] = run[4] = nxt
                continue
            run = None
            op = _cstr(mv, b + _OFF_OP, 160)
            rule = None
            for r in t.rules[iid]:
                if r.text is None or r.text.match(f"{_cstr(mv, b + _OFF_MN, 32)} {op}"):
                    rule = r
                    break
            if rule is None:
                continue
            if rule.kind == "end":
                append((addr, END, None, None, nxt))
                continue
            mode = MODES[rule.kind]
            r = next((relocs[o] for o in range(addr - before, nxt)
                      if o in relocs and arch.is_call_relocation(relocs[o].type)), None)
            if r is not None:
                append((addr, CALL, _reloc_target(elf, arch, r), mode, nxt))
                used.add(r.offset)
                continue
            dest = _target(op, addr, relative)
            if dest is not None:
                if mode == 0:
                    append((addr, CALL, ("loc", sec.index, dest), 0, nxt))
                else:
                    append((addr, BRANCH, dest, mode == 2, nxt))
            elif mode == 1:
                append((addr, END, None, None, nxt))   # indirect jump
            elif mode == 0:
                append((addr, INDIRECT, None, None, nxt))   # a call through a register or memory
    return events


def _bytes_class(pred) -> re.Pattern:
    return re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in range(256) if pred(b)) + b"]")


# A64 top-level encoding (Arm ARM C4.1): bits 27:26 == 0b11 are exactly the SIMD&FP data-processing and
# SIMD&FP load/store groups; op0 (bits 28:25) == 0b0010 is SVE. Both are read from the top byte of each
# little-endian word, so a regex over `text[3::4]` finds them without decoding every instruction.
_A64_FP_TOP = _bytes_class(lambda b: (b & 0x0C) == 0x0C or (b & 0x1E) == 0x04)
# b (0x14..0x17), bl (0x94..0x97), b.cond (0x54), cbz/cbnz/tbz/tbnz (0x34..0x37, 0xb4..0xb7),
# ret/br/blr (0xd6), brk (0xd4: BUG())
_A64_BRANCH_TOP = _bytes_class(lambda b: (b & 0x7C) in (0x14, 0x34) or b in (0x54, 0xD4, 0xD6))


def _a64_data_ranges(elf: Elf, sec: Section) -> list[tuple[int, int]]:
    """Ranges marked as data by the $d mapping symbols (literal pools, tables inside .text)."""
    marks = sorted((s.value, s.name[:2]) for s in elf.symbols
                   if s.shndx == sec.index and s.name[:2] in ("$d", "$x"))
    out, start = [], None
    for off, kind in marks:
        if kind == "$d" and start is None:
            start = off
        elif kind == "$x" and start is not None:
            out.append((start, off))
            start = None
    if start is not None:
        out.append((start, sec.size))
    return out


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _a64_fp_offsets(elf: Elf, sec: Section) -> list[int]:
    code = elf.section_bytes(sec)
    tops = code[3:len(code) & ~3:4]
    offs = [m.start() * 4 for m in _A64_FP_TOP.finditer(tops)]
    if offs:
        data = _a64_data_ranges(elf, sec)
        if data:
            offs = [o for o in offs if not any(a <= o < b for a, b in data)]
    return offs


def a64_events(elf: Elf, arch: Arch, sec: Section, relocs: dict[int, object], used: set) -> list:
    code = elf.section_bytes(sec)
    code = code[:len(code) & ~3]
    tops = code[3::4]
    data = _a64_data_ranges(elf, sec)

    def in_data(off):
        return any(a <= off < b for a, b in data)

    events = [(off, FP, None, off + 4, off + 4) for off in _a64_fp_offsets(elf, sec)]
    for m in _A64_BRANCH_TOP.finditer(tops):
        off = m.start() * 4
        if data and in_data(off):
            continue
        word = int.from_bytes(code[off:off + 4], "little")
        top = word >> 24
        nxt = off + 4
        if (top & 0x7C) == 0x14:          # b / bl
            mode = 0 if top & 0x80 else 1
            r = relocs.get(off)
            if r is not None and arch.is_call_relocation(r.type):
                events.append((off, CALL, _reloc_target(elf, arch, r), mode, nxt))
                used.add(off)
                continue
            target = off + _sext(word & 0x3FFFFFF, 26) * 4
            if mode == 0:
                events.append((off, CALL, ("loc", sec.index, target), 0, nxt))
            else:
                events.append((off, BRANCH, target, False, nxt))
        elif top == 0x54 or (top & 0x7E) == 0x34:   # b.cond, cbz, cbnz: imm19
            events.append((off, BRANCH, off + _sext((word >> 5) & 0x7FFFF, 19) * 4, True, nxt))
        elif (top & 0x7E) == 0x36:                 # tbz, tbnz: imm14
            events.append((off, BRANCH, off + _sext((word >> 5) & 0x3FFF, 14) * 4, True, nxt))
        elif (word & 0xFFFFFC1F) in (0xD65F0000, 0xD61F0000) or (word & 0xFFE0001F) == 0xD4200000:
            events.append((off, END, None, None, nxt))   # ret, br (indirect jump), brk (BUG)
        elif (word & 0xFFFFFC1F) == 0xD63F0000:
            events.append((off, INDIRECT, None, None, nxt))   # blr: a call through a register
    events.sort(key=lambda e: e[0])
    return events


def has_fp(elf: Elf) -> bool:
    """Does any executable section hold an FP/SIMD instruction? The question most modules answer
    with no, asked as cheaply as the decoder allows (no Python work per instruction)."""
    arch = arch_of(elf)
    if arch.lint.decoder == "a64":
        return any(_a64_fp_offsets(elf, sec) for sec in elf.sections if sec.executable)
    return _capstone_has_fp(elf, arch)


def events(elf: Elf, sec: Section, relocs: dict[int, object], used: set) -> list:
    """Events of one section; the offsets of the relocations that fed a call are added to `used`."""
    arch = arch_of(elf)
    if arch.lint.decoder == "a64":
        return a64_events(elf, arch, sec, relocs, used)
    return capstone_events(elf, arch, sec, relocs, used)


def insn_text(elf: Elf, sec_index: int, off: int) -> str:
    """The instruction at a section offset, as text (for messages)."""
    code = elf.section_bytes(elf.sections[sec_index])[off:off + 16]
    insn = next(disassembler(arch_of(elf)).disasm_lite(code, off), None)
    return f"{insn[2]} {insn[3]}".strip() if insn else f".byte {code[:4].hex()}"


def disassemble(elf: Elf, sec: Section, start: int, end: int) -> list[tuple[int, int, str, str]]:
    """Full decode of one function (used by the rules that look at arguments, e.g. GFP flags); bytes
    capstone cannot decode are stepped over the way the arch's data says."""
    arch = arch_of(elf)
    code = elf.section_bytes(sec)
    end = min(end, len(code))
    cs = disassembler(arch)
    out, pos = [], start
    while pos < end:
        for insn in cs.disasm_lite(code[pos:end], pos):
            out.append(insn)
            pos = insn[0] + insn[1]
        if pos < end:
            pos += undecoded(arch, code, pos)[0]
    return out
