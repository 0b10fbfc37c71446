"""Instruction decoding per architecture, reduced to the two things the rules need: where the FP/SIMD
instructions are, and where the direct calls and jumps go.

An executable section becomes a sorted list of 5-tuples (offset, kind, a, b, next):
  FP      a = text ("movaps xmm0, xmmword ptr [rdi]")
  CALL    a = ("ext", name) or ("loc", sec, off); b = 0 call, 1 tail jump, 2 conditional tail jump
  BRANCH  a = target offset in this section; b = conditional?
  END     the flow stops here (ret, indirect jump, ud2/brk)
`next` is the offset of the following instruction. Offsets are section offsets (a module is
relocatable: nothing has an address yet). Only these instructions are kept: enough to build each
function's control flow for the guard analysis without holding every instruction in memory.
"""
import ctypes
import re
from itertools import compress

import capstone

from .elf import Elf, Section

FP, CALL, BRANCH, END = 0, 1, 2, 3

# x86 relocation types that patch a rel32 of a call/jmp/jcc
R_X86_64_PC32, R_X86_64_PLT32 = 2, 4
# arm64 relocation types of b / bl
R_AARCH64_JUMP26, R_AARCH64_CALL26 = 282, 283

_X86_REG = re.compile(r"\b[xyz]?mm\d")
# FP/SIMD state instructions that name no vector register
_X86_SPECIAL = frozenset({"emms", "ldmxcsr", "stmxcsr", "vldmxcsr", "vstmxcsr", "vzeroupper", "vzeroall"})
_X86_END = frozenset({"ret", "ud2", "int3", "iret", "iretq", "sysret"})
_A64_REG = re.compile(r"\b[vqdshbz]\d{1,2}\b|\bp\d{1,2}\b|fpcr|fpsr")


def _bytes_class(pred) -> re.Pattern:
    return re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in range(256) if pred(b)) + b"]")


# A64 top-level encoding (Arm ARM C4.1): bits 27:26 == 0b11 are exactly the SIMD&FP data-processing and
# SIMD&FP load/store groups; op0 (bits 28:25) == 0b0010 is SVE. Both are read from the top byte of each
# little-endian word, so a regex over `text[3::4]` finds them without decoding every instruction.
_A64_FP_TOP = _bytes_class(lambda b: (b & 0x0C) == 0x0C or (b & 0x1E) == 0x04)
# b (0x14..0x17), bl (0x94..0x97), b.cond (0x54), cbz/cbnz/tbz/tbnz (0x34..0x37, 0xb4..0xb7),
# ret/br/blr (0xd6), brk (0xd4: BUG())
_A64_BRANCH_TOP = _bytes_class(lambda b: (b & 0x7C) in (0x14, 0x34) or b in (0x54, 0xD4, 0xD6))

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


# Reading capstone's instruction array directly: the Python wrapper builds four objects per instruction
# (about 2.5 us each), which made decoding slower than objdump. Instead cs_disasm() fills its C array,
# we look at the array through a memoryview, pick the few instructions that matter by instruction id
# (calls, jumps, returns, x87/mask/MXCSR instructions) or by a vector register in the operand text
# (one regex over the whole array), and read only those.
_INSN = capstone._cs_insn
_SZ = ctypes.sizeof(_INSN)
_OFF_ADDR, _OFF_SIZE = _INSN.address.offset, _INSN.size.offset
_OFF_MN, _OFF_OP = _INSN.mnemonic.offset, _INSN.op_str.offset
_OP_END = _OFF_OP + 160
_CHUNK = 32768        # instructions per cs_disasm call: bounds memory (248 bytes per instruction)
_X86_MMREG = re.compile(rb"mm[0-9]")


def _x86_ids():
    cs = disassembler("EM_X86_64")
    fp, call, jmp, jcc, end = set(), set(), set(), set(), set()
    for i in range(1, capstone.x86.X86_INS_ENDING):
        name = cs.insn_name(i) or ""
        if name[:1] in ("f", "k") or name in _X86_SPECIAL:
            fp.add(i)
        elif name == "call":
            call.add(i)
        elif name == "jmp":
            jmp.add(i)
        elif name[:1] == "j":
            jcc.add(i)
        elif name in _X86_END:
            end.add(i)
    return frozenset(fp), frozenset(call), frozenset(jmp), frozenset(jcc), frozenset(end)


_ids = None


_not_gp_ids = None


def _not_gp() -> frozenset:
    """Ids of every x86 instruction not known to be general-purpose only (rules/lint/fpu.toml)."""
    global _not_gp_ids
    if _not_gp_ids is None:
        from . import ruledata
        gp = set(ruledata.load("fpu")["x86_gp_mnemonics"])
        cs = disassembler("EM_X86_64")
        _not_gp_ids = frozenset(i for i in range(1, capstone.x86.X86_INS_ENDING) if (cs.insn_name(i) or "") not in gp)
    return _not_gp_ids


def has_fp(elf: Elf) -> bool:
    """Does any executable section hold an FP/SIMD instruction? The question most modules answer
    with no, asked as cheaply as capstone allows (no Python work per instruction)."""
    if elf.machine != "EM_X86_64":
        return any(_a64_fp_offsets(elf, sec) for sec in elf.sections if sec.executable)
    global _ids
    if _ids is None:
        _ids = _x86_ids()
    fp_ids = _ids[0]
    not_gp = _not_gp()
    handle = disassembler("EM_X86_64").csh
    for sec in elf.sections:
        if not sec.executable or not sec.size:
            continue
        code = elf.section_bytes(sec)
        total = len(code)
        cbuf = ctypes.create_string_buffer(code, total)
        pos = 0
        while pos < total:
            arr = ctypes.POINTER(_INSN)()
            ptr = ctypes.cast(ctypes.byref(cbuf, pos), ctypes.POINTER(ctypes.c_char))
            n = capstone._cs.cs_disasm(handle, ptr, total - pos, pos, _CHUNK, ctypes.byref(arr))
            if n == 0:
                pos += 1
                continue
            try:
                mv = memoryview((ctypes.c_char * (n * _SZ)).from_address(ctypes.addressof(arr.contents))).cast("B")
                ids = mv.cast("I")[::_SZ // 4]
                for i in compress(range(n), map(not_gp.__contains__, ids)):
                    if ids[i] in fp_ids:
                        return True
                    b = i * _SZ + _OFF_OP
                    if _X86_MMREG.search(bytes(mv[b:b + 160]).split(b"\0", 1)[0]):
                        return True
                pos = _after_last(mv, n)
                del ids, mv
            finally:
                capstone._cs.cs_free(arr, n)
    return False


def _after_last(mv, n: int) -> int:
    """The address just past the last of `n` decoded cs_insn structs (address + size): where to resume."""
    b = (n - 1) * _SZ
    return int.from_bytes(mv[b + _OFF_ADDR:b + _OFF_ADDR + 8], "little") + (mv[b + _OFF_SIZE] | mv[b + _OFF_SIZE + 1] << 8)


def x86_events(elf: Elf, sec: Section, relocs: dict[int, object], used: set,
               lo: int = 0, hi: int | None = None) -> list:
    """Events of [lo, hi): FP runs, calls, every jump and return (the FPU guard analysis needs the
    control flow)."""
    global _ids
    if _ids is None:
        _ids = _x86_ids()
    fp_ids, call_ids, jmp_ids, jcc_ids, end_ids = _ids
    interesting = fp_ids | call_ids | jmp_ids | end_ids | jcc_ids
    code = elf.section_bytes(sec)
    size_total = len(code) if hi is None else min(hi, len(code))
    cbuf = ctypes.create_string_buffer(code[lo:size_total], max(size_total - lo, 0))
    handle = disassembler("EM_X86_64").csh
    events = []
    append = events.append
    pos = lo
    while pos < size_total:
        arr = ctypes.POINTER(_INSN)()
        ptr = ctypes.cast(ctypes.byref(cbuf, pos - lo), ctypes.POINTER(ctypes.c_char))
        n = capstone._cs.cs_disasm(handle, ptr, size_total - pos, pos, _CHUNK, ctypes.byref(arr))
        if n == 0:
            pos += 1      # a byte capstone cannot decode (data, padding, corruption): skip it
            continue
        try:
            mv = memoryview((ctypes.c_char * (n * _SZ)).from_address(ctypes.addressof(arr.contents))).cast("B")
            ids = mv.cast("I")[::_SZ // 4]
            hits = list(compress(range(n), map(interesting.__contains__, ids)))
            vec = set()
            for m in _X86_MMREG.finditer(mv):
                i, r = divmod(m.start(), _SZ)
                # capstone leaves old bytes after the operand string's NUL: only count text before it
                if _OFF_OP <= r < _OP_END and 0 not in mv[i * _SZ + _OFF_OP:m.start()]:
                    vec.add(i)
            if vec:
                hits = sorted(vec.union(hits))
            run = None
            for i in hits:
                b = i * _SZ
                iid = ids[i]
                addr = int.from_bytes(mv[b + _OFF_ADDR:b + _OFF_ADDR + 8], "little")
                nxt = addr + (mv[b + _OFF_SIZE] | mv[b + _OFF_SIZE + 1] << 8)
                if i in vec or iid in fp_ids:
                    # FP instructions until the next control event form one run [addr, end): the guard
                    # state cannot change inside it, so one event stands for all of them
                    if run is None:
                        run = [addr, FP, None, nxt, nxt]
                        append(run)
                    else:
                        run[3] = run[4] = nxt
                    continue
                run = None
                if iid in end_ids:
                    append((addr, END, None, None, nxt))
                    continue
                mode = 0 if iid in call_ids else 1 if iid in jmp_ids else 2
                r = relocs.get(nxt - 4)
                if r is not None and r.type in (R_X86_64_PC32, R_X86_64_PLT32):
                    append((addr, CALL, _reloc_target(elf, r, 4), mode, nxt))
                    used.add(r.offset)
                    continue
                op = bytes(mv[b + _OFF_OP:b + _OFF_OP + 24]).split(b"\0", 1)[0]
                if op[:1].isdigit():   # a direct target: "0x1a2b" (or "0" for offset zero)
                    dest = int(op, 0)
                    if mode == 0:
                        append((addr, CALL, ("loc", sec.index, dest), 0, nxt))
                    else:
                        append((addr, BRANCH, dest, mode == 2, nxt))
                elif mode == 1:
                    append((addr, END, None, None, nxt))   # indirect jump
            pos = _after_last(mv, n)
            del ids, mv
        finally:
            capstone._cs.cs_free(arr, n)
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


def a64_events(elf: Elf, sec: Section, relocs: dict[int, object], used: set) -> list:
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
            if r is not None and r.type in (R_AARCH64_CALL26, R_AARCH64_JUMP26):
                events.append((off, CALL, _reloc_target(elf, r, 0), mode, nxt))
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
    events.sort(key=lambda e: e[0])
    return events


def events(elf: Elf, sec: Section, relocs: dict[int, object], used: set) -> list:
    """Events of one section; the offsets of the relocations that fed a call are added to `used`."""
    if elf.machine == "EM_X86_64":
        return x86_events(elf, sec, relocs, used)
    return a64_events(elf, sec, relocs, used)


def insn_text(elf: Elf, sec_index: int, off: int) -> str:
    """The instruction at a section offset, as text (for messages)."""
    code = elf.section_bytes(elf.sections[sec_index])[off:off + 16]
    insn = next(disassembler(elf.machine).disasm_lite(code, off), None)
    return f"{insn[2]} {insn[3]}".strip() if insn else f".byte {code[:4].hex()}"


def disassemble(elf: Elf, sec: Section, start: int, end: int) -> list[tuple[int, int, str, str]]:
    """Full decode of one function (used by the rules that look at arguments, e.g. GFP flags)."""
    code = elf.section_bytes(sec)[start:end]
    return list(disassembler(elf.machine).disasm_lite(code, start))


def is_fp_text(machine: str, mn: str, op: str) -> bool:
    if machine == "EM_X86_64":
        return mn[:1] in ("f", "k") or mn in _X86_SPECIAL or bool(_X86_REG.search(op))
    return bool(_A64_REG.search(op))
