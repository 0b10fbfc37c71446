"""Rules about the module's undefined symbols: soft-float helpers always; with a target, the CRCs that
disagree with its Module.symvers (who provides each symbol is deps.py's question)."""
from .. import arch as archmod
from . import ruledata
from .elf import Elf
from .findings import Finding


def _softfloat_of(elf: Elf) -> ruledata.GlobSet:
    a = archmod.by_elf_machine(elf.machine)
    return ruledata.softfloat(a.name if a else "")


def softfloat(elf: Elf) -> list[Finding]:
    sf = _softfloat_of(elf)
    return [Finding("softfloat-helper", "error",
                    f"undefined reference to {name}, a libgcc soft-float helper that no kernel exports: insmod "
                    f"will fail with 'Unknown symbol {name}'. Remove the floating-point arithmetic (use integer "
                    f"or fixed-point math), or do it in SIMD code between the FPU guards")
            for name in elf.undefined if name in sf]


def modversions(elf: Elf, exports: dict, target_name: str) -> list[Finding]:
    out = []
    for name, crc in elf.versions.items():
        entry = exports.get(name)
        if entry is None or entry[0] is None:
            continue
        if entry[0] != crc:
            out.append(Finding("modversion-mismatch", "error",
                               f"__versions has CRC {crc:#010x} for {name}, {target_name} has {entry[0]:#010x}: "
                               f"insmod fails with 'disagrees about version of symbol {name}'. Rebuild the "
                               f"module against {target_name}'s headers", section="__versions"))
    return out
