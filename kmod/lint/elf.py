"""A small, strict ELF64 reader for relocatable kernel modules.

Why not pyelftools or LIEF here: the linter reads thousands of modules and must survive any corrupt
file with one clear reason. This reader parses only what the rules need (sections, symbols,
relocations, .modinfo, __versions), checks every offset against the file size before touching it,
and raises `BadElf(reason)` for anything it cannot trust. Nothing in it loops more than the file size.
"""
import struct
from dataclasses import dataclass, field
from functools import cached_property

ELFMAG = b"\x7fELF"
ET_REL = 1
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 3, 4, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF

ELFDATA = {1: "<", 2: ">"}   # EI_DATA: little-, big-endian (struct byte order); which arch is which: kmod.arch

# __versions entries: struct modversion_info { unsigned long crc; char name[64 - sizeof(long)]; }
MODVERSION_SIZE = 64


class BadElf(Exception):
    """The file is not a usable ELF64 relocatable object; the message is the reason, for a user."""


@dataclass(slots=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR) and self.type != SHT_NOBITS


@dataclass(slots=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int

    @property
    def defined(self) -> bool:
        return self.shndx != SHN_UNDEF


@dataclass(slots=True)
class Reloc:
    offset: int
    type: int
    sym: int
    addend: int


@dataclass
class Elf:
    data: bytes
    machine: int            # e_machine (kmod.arch.by_elf_machine names it)
    sections: list[Section]
    order: str = "<"        # struct byte order of every field: "<" little-endian, ">" big-endian
    _rawsyms: list = field(default_factory=list, repr=False)
    _strtab: bytes = field(default=b"", repr=False)
    # the rows of _rawsyms the rules ask about, sorted out in parse()'s one pass over the table
    _undef_rows: list = field(default_factory=list, repr=False)     # undefined, with a name
    _defined_rows: list = field(default_factory=list, repr=False)   # defined (any binding)
    # relocations grouped by the index of the section they patch, read when first asked for
    relocs: "Relocs" = None

    def __post_init__(self):
        if self.relocs is None:
            self.relocs = Relocs(self)

    def section_bytes(self, sec: Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return b""
        return self.data[sec.offset:sec.offset + sec.size]

    def section_view(self, sec: Section) -> memoryview:
        """A section's bytes without copying them (the decoder reads megabytes of code per module)."""
        if sec.type == SHT_NOBITS:
            return memoryview(b"")
        return memoryview(self.data)[sec.offset:sec.offset + sec.size]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    @cached_property
    def modinfo(self) -> list[tuple[str, str]]:
        """(key, value) pairs of .modinfo, in order (license may appear more than once)."""
        sec = self.section(".modinfo")
        if sec is None:
            return []
        out = []
        for raw in self.section_bytes(sec).split(b"\0"):
            if b"=" in raw:
                k, v = raw.split(b"=", 1)
                out.append((k.decode("utf-8", "replace"), v.decode("utf-8", "replace")))
        return out

    def modinfo_values(self, key: str) -> list[str]:
        return [v for k, v in self.modinfo if k == key]

    @cached_property
    def versions(self) -> dict[str, int]:
        """Symbol -> CRC from __versions (what insmod checks against the kernel's CRCs)."""
        sec = self.section("__versions")
        if sec is None:
            return {}
        raw = self.section_bytes(sec)
        out = {}
        for i in range(0, len(raw) - MODVERSION_SIZE + 1, MODVERSION_SIZE):
            crc = struct.unpack_from(self.order + "Q", raw, i)[0] & 0xFFFFFFFF
            name = raw[i + 8:i + MODVERSION_SIZE].split(b"\0", 1)[0].decode("utf-8", "replace")
            if name:
                out[name] = crc
        return out

    @cached_property
    def symbols(self) -> list[Symbol]:
        st = self._strtab
        return [Symbol(i, _cstr(st, name), value, size, info & 0xF, info >> 4, shndx)
                for i, (name, info, _other, shndx, value, size) in enumerate(self._rawsyms)]

    @cached_property
    def undefined(self) -> list[str]:
        st = self._strtab
        seen = {}
        for name, info, _other, _shndx, _value, _size in self._undef_rows:
            if info & 0xF != STT_FILE:
                n = _cstr(st, name)
                if n:
                    seen.setdefault(n, None)
        return list(seen)

    @cached_property
    def weak_undefined(self) -> set[str]:
        """Undefined symbols bound weak: the loader leaves one it cannot resolve at 0 instead of refusing the
        module (simplify_symbols()), and modpost does not warn, e.g. PowerPC's machine_is(cell)'s mach_cell."""
        st = self._strtab
        return {_cstr(st, name) for name, info, _o, _shndx, _v, _s in self._undef_rows if info >> 4 == STB_WEAK}

    @cached_property
    def global_names(self) -> set[str]:
        """Names of the defined global and weak symbols (module_init/module_exit aliases among them)."""
        st = self._strtab
        return {_cstr(st, name) for name, info, _o, _shndx, _v, _s in self._defined_rows
                if info >> 4 in (STB_GLOBAL, STB_WEAK)}

    def cstring_at(self, sec_index: int, offset: int, limit: int = 512) -> str | None:
        """The NUL-terminated string at `offset` of a section (used for symbol_name = "..." pointers)."""
        if not 0 <= sec_index < len(self.sections):
            return None
        sec = self.sections[sec_index]
        if sec.type == SHT_NOBITS or not 0 <= offset < sec.size:
            return None
        raw = self.data[sec.offset + offset:sec.offset + min(sec.size, offset + limit)]
        end = raw.find(b"\0")
        if end < 0:
            return None
        return raw[:end].decode("utf-8", "replace")


class Relocs:
    """Relocations by patched section, parsed on first use: most modules carry megabytes of
    bookkeeping relocations (.orc_unwind_ip, __mcount_loc, ...) that no rule reads."""

    def __init__(self, elf: "Elf"):
        self.elf = elf
        self.sections: dict[int, list[Section]] = {}
        self._parsed: dict[int, list[Reloc]] = {}
        self._maps: dict[int, dict[int, Reloc]] = {}

    def keys(self):
        return self.sections.keys()

    def get(self, index: int, default=()):
        if index not in self.sections:
            return default
        if index not in self._parsed:
            self._parsed[index] = self._parse(index)
        return self._parsed[index]

    def by_offset(self, index: int) -> dict[int, Reloc]:
        if index not in self._maps:
            self._maps[index] = {r.offset: r for r in self.get(index)}
        return self._maps[index]

    def _parse(self, index: int) -> list[Reloc]:
        elf = self.elf
        nsym = len(elf._rawsyms)
        target_size = elf.sections[index].size
        out = []
        for sec in self.sections[index]:
            body = elf.section_bytes(sec)
            if sec.type == SHT_RELA:
                rows = struct.iter_unpack(elf.order + "QQq", body)
            else:
                rows = ((off, info, 0) for off, info in struct.iter_unpack(elf.order + "QQ", body))
            for off, info, addend in rows:
                sym = info >> 32
                if sym >= nsym or off >= target_size:
                    raise BadElf(f"corrupt relocation in {sec.name} at {off:#x}")
                out.append(Reloc(off, info & 0xFFFFFFFF, sym, addend))
        return out


def _cstr(table: bytes, off: int) -> str:
    if not 0 <= off < len(table):
        return ""
    end = table.find(b"\0", off)
    return table[off:end if end >= 0 else len(table)].decode("utf-8", "replace")


def parse(data: bytes) -> Elf:
    n = len(data)
    if n == 0:
        raise BadElf("empty file")
    if n < 16 or data[:4] != ELFMAG:
        raise BadElf("not an ELF file (bad magic)")
    if data[4] == 1:
        raise BadElf("32-bit ELF (ELFCLASS32): the kernel modules kmod knows are ELF64")
    if data[4] != 2:
        raise BadElf(f"unknown ELF class {data[4]}")
    order = ELFDATA.get(data[5])
    if order is None:
        raise BadElf(f"unknown byte order (EI_DATA {data[5]})")
    if n < 64:
        raise BadElf(f"truncated ELF header ({n} bytes, need 64)")
    (e_type, e_machine, _ver, _entry, _phoff, e_shoff, _flags, _ehsize, _phentsize, _phnum,
     e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from(order + "HHIQQQIHHHHHH", data, 16)
    if e_type != ET_REL:
        kind = {2: "an executable", 3: "a shared object or PIE", 4: "a core file"}.get(e_type, f"type {e_type}")
        raise BadElf(f"{kind}, not a relocatable object (kernel modules are ET_REL)")
    if e_shoff == 0:
        raise BadElf("no section header table")
    if e_shentsize != 64:
        raise BadElf(f"section header entry size {e_shentsize}, expected 64")
    if e_shnum == 0:
        # > 0xff00 sections: the real count lives in section 0
        if e_shoff + 64 > n:
            raise BadElf("truncated: section header table lies past the end of the file")
        e_shnum = struct.unpack_from(order + "Q", data, e_shoff + 32)[0]
        if e_shnum == 0:
            raise BadElf("no sections")
    if e_shoff + e_shnum * 64 > n:
        raise BadElf(f"truncated: section header table needs {e_shoff + e_shnum * 64} bytes, file has {n}")
    if e_shstrndx == SHN_XINDEX:
        e_shstrndx = struct.unpack_from(order + "I", data, e_shoff + 40)[0]
    raw = []
    for i, (name, typ, flags, _addr, off, size, link, info, _align, entsize) in enumerate(
            struct.iter_unpack(order + "IIQQQQIIQQ", data[e_shoff:e_shoff + e_shnum * 64])):
        if typ != SHT_NOBITS and typ != 0 and (off > n or size > n - off):
            raise BadElf(f"truncated or corrupt: section {i} extends past the end of the file")
        raw.append((name, typ, flags, off, size, link, info, entsize))
    if not 0 < e_shstrndx < len(raw) or raw[e_shstrndx][1] != SHT_STRTAB:
        raise BadElf("corrupt: no section name table")
    _, _, _, stroff, strsize, *_ = raw[e_shstrndx]
    shstr = data[stroff:stroff + strsize]
    sections = [Section(i, _cstr(shstr, r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7])
                for i, r in enumerate(raw)]
    elf = Elf(data=data, machine=e_machine, sections=sections, order=order)

    symtabs = [s for s in sections if s.type == SHT_SYMTAB]
    if not symtabs:
        raise BadElf("no symbol table (a stripped or corrupt module)")
    symtab = symtabs[0]
    if symtab.entsize != 24 or symtab.size % 24:
        raise BadElf("corrupt symbol table (entry size is not 24)")
    if not 0 < symtab.link < len(sections) or sections[symtab.link].type != SHT_STRTAB:
        raise BadElf("corrupt symbol table (no string table)")
    elf._strtab = elf.section_bytes(sections[symtab.link])
    nsec = len(sections)
    # symbols stay raw tuples until a rule needs them as objects: most modules only need the names
    # of their undefined and global symbols
    elf._rawsyms = rows = list(struct.iter_unpack(order + "IBBHQQ", elf.section_bytes(symtab)))
    # one pass checks every row and sorts out the ones the rules ask about (undefined, defined): the
    # undefined and global names, the exports and their CRCs each walked the whole table before
    undef, defined = elf._undef_rows, elf._defined_rows
    for row in rows:
        shndx = row[3]
        if shndx == SHN_UNDEF:
            if row[0]:
                undef.append(row)
        elif shndx < nsec or shndx >= SHN_LORESERVE:
            defined.append(row)
        else:
            raise BadElf(f"corrupt symbol {rows.index(row)}: section index {shndx} out of range")

    for sec in sections:
        if sec.type not in (SHT_RELA, SHT_REL) or sec.link != symtab.index:
            continue
        if not 0 < sec.info < nsec:
            raise BadElf(f"corrupt relocation section {sec.name}: target section {sec.info} out of range")
        width = 24 if sec.type == SHT_RELA else 16
        if sec.entsize not in (0, width) or sec.size % width:
            raise BadElf(f"corrupt relocation section {sec.name}: bad entry size")
        elf.relocs.sections.setdefault(sec.info, []).append(sec)
    return elf
