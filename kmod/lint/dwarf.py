"""Probe handlers by their DWARF signature (modules built with debug info, as kbuild does by default
on Debian): (struct kprobe *, struct pt_regs *[, unsigned long]) is a kprobe pre/post handler,
(struct kretprobe_instance *, struct pt_regs *) a kretprobe entry/return handler."""
import io

from elftools.common.exceptions import ELFRelocationError
from elftools.elf.elffile import ELFFile

from .. import arch as archmod
from .elf import SHT_RELA, Elf

MAX_DIES = 2_000_000   # a bound, so a hostile .debug_info cannot keep us busy forever


def _struct_name(die, depth=0) -> str | None:
    """Name of the struct a pointer parameter points to (through typedefs and qualifiers)."""
    seen_pointer = False
    while die is not None and depth < 16:
        tag = die.tag
        if tag == "DW_TAG_pointer_type":
            if seen_pointer:
                return None
            seen_pointer = True
        elif tag == "DW_TAG_structure_type":
            name = die.attributes.get("DW_AT_name")
            return name.value.decode("utf-8", "replace") if name and seen_pointer else None
        elif tag not in ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_typedef"):
            return None
        if "DW_AT_type" not in die.attributes:
            return None
        die = die.get_DIE_from_attribute("DW_AT_type")
        depth += 1
    return None


def _with_debug_relocations(elf: Elf) -> bytes:
    """The file with the absolute relocations of its .debug_* sections applied (symbol + addend, the
    sizes from the arch's data), for arches pyelftools has no relocation recipe for."""
    arch = archmod.by_elf_machine(elf.machine)
    sizes = arch.absolute_relocations if arch else {}
    data = bytearray(elf.data)
    order = "big" if elf.order == ">" else "little"
    for target, secs in elf.relocs.sections.items():
        tsec = elf.sections[target]
        if not tsec.name.startswith(".debug") or any(s.type != SHT_RELA for s in secs):
            continue
        for r in elf.relocs.get(target):
            size = sizes.get(r.type)
            if size and r.offset + size <= tsec.size:
                value = (elf.symbols[r.sym].value + r.addend) & ((1 << (8 * size)) - 1)
                data[tsec.offset + r.offset:tsec.offset + r.offset + size] = value.to_bytes(size, order)
    return bytes(data)


def handler_functions(elf: Elf) -> list[tuple[str, str]]:
    out = []
    ef = ELFFile(io.BytesIO(elf.data))
    if not ef.has_dwarf_info():
        return out
    # relocations of .debug_info matter for ELF relocatable objects; pyelftools applies them where it can
    try:
        info = ef.get_dwarf_info(relocate_dwarf_sections=True)
    except ELFRelocationError:
        info = ELFFile(io.BytesIO(_with_debug_relocations(elf))).get_dwarf_info(relocate_dwarf_sections=False)
    count = 0
    for cu in info.iter_CUs():
        for die in cu.iter_DIEs():
            count += 1
            if count > MAX_DIES:
                return out
            if die.tag != "DW_TAG_subprogram" or "DW_AT_name" not in die.attributes:
                continue
            params = [c for c in die.iter_children() if c.tag == "DW_TAG_formal_parameter"]
            if len(params) < 2 or "DW_AT_type" not in params[0].attributes:
                continue
            first = _struct_name(params[0].get_DIE_from_attribute("DW_AT_type"))
            second = _struct_name(params[1].get_DIE_from_attribute("DW_AT_type")) \
                if "DW_AT_type" in params[1].attributes else None
            if second != "pt_regs":
                continue
            name = die.attributes["DW_AT_name"].value.decode("utf-8", "replace")
            if first == "kprobe":
                out.append((name, "kprobe"))
            elif first == "kretprobe_instance":
                out.append((name, "kretprobe"))
    return out
