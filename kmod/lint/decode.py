"""Instruction decoding per architecture, reduced to the two things the rules need: where the FP/SIMD
instructions are, and where the direct calls and jumps go.

An executable section becomes a sorted list of events:
  (offset, FP,   text, None)        an FP/SIMD instruction ("movaps xmm0, xmmword ptr [rdi]")
  (offset, CALL, target, is_tail)   a direct call or jump; target is ("ext", name) or ("loc", sec, off)
Offsets are section offsets (a module is relocatable; nothing has an address yet).
"""
import re

import capstone

from .elf import Elf, Section

FP, CALL = 0, 1

# x86 relocation types that patch a rel32 of a call/jmp/jcc
R_X86_64_PC32, R_X86_64_PLT32 = 2, 4
# arm64 relocation types of b / bl
R_AARCH64_JUMP26, R_AARCH64_CALL26 = 282, 283

_X86_REG = re.compile(r"\b[xyz]?mm\d")
# FP/SIMD state instructions that name no vector register
_X86_SPECIAL = frozenset({"emms", "ldmxcsr", "stmxcsr", "vldmxcsr", "vstmxcsr", "vzeroupper", "vzeroall"})
_A64_REG = re.compile(r"\b[vqdshbz]\d{1,2}\b|\bp\d{1,2}\b|fpcr|fpsr")


def _bytes_class(pred) -> re.Pattern:
    return re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in range(256) if pred(b)) + b"]")


# A64 top-level encoding (Arm ARM C4.1): bits 27:26 == 0b11 are exactly the SIMD&FP data-processing and
# SIMD&FP load/store groups; op0 (bits 28:25) == 0b0010 is SVE. Both are read from the top byte of each
# little-endian word, so a regex over `text[3::4]` finds them without decoding every instruction.
_A64_FP_TOP = _bytes_class(lambda b: (b & 0x0C) == 0x0C or (b & 0x1E) == 0x04)
_A64_BRANCH_TOP = _bytes_class(lambda b: (b & 0x7C) == 0x14)   # b (0x14..0x17) and bl (0x94..0x97)

_cs_cache: dict = {}


def disassembler(machine: str) -> capstone.Cs:
    if machine not in _cs_cache:
        if machine == "EM_X86_64":
            cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        else:
            cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        cs.detail = False
        _cs_cache[machine] = cs
    return _cs_cache[machine]


def _reloc_target(elf: Elf, r, adjust: int):
    sym = elf.symbols[r.sym]
    if not sym.defined:
        return ("ext", sym.name)
    if sym.shndx >= len(elf.sections):       # SHN_ABS and friends: nothing to follow
        return ("ext", sym.name or "?")
    base = 0 if sym.type == 3 else sym.value  # STT_SECTION: the addend is the offset
    return ("loc", sym.shndx, base + r.addend + adjust)


def x86_events(elf: Elf, sec: Section, relocs: dict[int, object], used: set) -> list:
    code = elf.section_bytes(sec)
    cs = disassembler("EM_X86_64")
    events = []
    append = events.append
    special = _X86_SPECIAL
    reg = _X86_REG.search
    pos, end = 0, len(code)
    while pos < end:
        last = pos
        for addr, size, mn, op in cs.disasm_lite(code[pos:], pos):
            c = mn[0]
            if c == "j" or mn == "call":
                r = relocs.get(addr + size - 4)
                if r is not None and r.type in (R_X86_64_PC32, R_X86_64_PLT32):
                    append((addr, CALL, _reloc_target(elf, r, 4), c == "j"))
                    used.add(r.offset)
                elif op[:2] == "0x":
                    append((addr, CALL, ("loc", sec.index, int(op, 16)), c == "j"))
            elif c == "f" or c == "k" or mn in special or ("mm" in op and reg(op)):
                append((addr, FP, f"{mn} {op}".strip(), None))
            last = addr + size
        # capstone stops at bytes it cannot decode (data, padding, corruption): skip one and go on
        pos = last + 1 if last == pos else last
    return events


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


def a64_events(elf: Elf, sec: Section, relocs: dict[int, object], used: set) -> list:
    code = elf.section_bytes(sec)
    code = code[:len(code) & ~3]
    tops = code[3::4]
    data = _a64_data_ranges(elf, sec)

    def in_data(off):
        return any(a <= off < b for a, b in data)

    events = []
    cs = disassembler("EM_AARCH64")
    for m in _A64_FP_TOP.finditer(tops):
        off = m.start() * 4
        if data and in_data(off):
            continue
        insn = next(cs.disasm_lite(code[off:off + 4], off), None)
        text = f"{insn[2]} {insn[3]}".strip() if insn else f".inst {int.from_bytes(code[off:off + 4], 'little'):#010x}"
        events.append((off, FP, text, None))
    for m in _A64_BRANCH_TOP.finditer(tops):
        off = m.start() * 4
        if data and in_data(off):
            continue
        word = int.from_bytes(code[off:off + 4], "little")
        tail = not word >> 31
        r = relocs.get(off)
        if r is not None and r.type in (R_AARCH64_CALL26, R_AARCH64_JUMP26):
            events.append((off, CALL, _reloc_target(elf, r, 0), tail))
            used.add(off)
        else:
            imm = word & 0x3FFFFFF
            if imm & 0x2000000:
                imm -= 0x4000000
            events.append((off, CALL, ("loc", sec.index, off + imm * 4), tail))
    events.sort(key=lambda e: e[0])
    return events


def events(elf: Elf, sec: Section, relocs: dict[int, object], used: set) -> list:
    """Events of one section; the offsets of the relocations that fed a call are added to `used`."""
    fn = x86_events if elf.machine == "EM_X86_64" else a64_events
    return fn(elf, sec, relocs, used)


def disassemble(elf: Elf, sec: Section, start: int, end: int) -> list[tuple[int, int, str, str]]:
    """Full decode of one function (used by the rules that look at arguments, e.g. GFP flags)."""
    code = elf.section_bytes(sec)[start:end]
    return list(disassembler(elf.machine).disasm_lite(code, start))


def is_fp_text(machine: str, mn: str, op: str) -> bool:
    if machine == "EM_X86_64":
        return mn[:1] in ("f", "k") or mn in _X86_SPECIAL or bool(_X86_REG.search(op))
    return bool(_A64_REG.search(op))
