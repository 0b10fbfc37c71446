"""license-missing and license-gpl-only-symbol.

The kernel decides with license_is_gpl_compatible() (the list is data in rules/licenses.toml):
a module without MODULE_LICENSE is refused by modpost and taints the kernel; a non-GPL module cannot
resolve EXPORT_SYMBOL_GPL symbols (insmod: "Unknown symbol", dmesg: "module using GPL-only symbols").
"""
from . import ruledata
from .elf import Elf
from .findings import Finding


def check(elf: Elf, gpl_only: frozenset[str] | set[str], source: str) -> list[Finding]:
    licenses = elf.modinfo_values("license")
    if not licenses:
        return [Finding("license-missing", "error",
                        "no license= in .modinfo: add MODULE_LICENSE(\"GPL\") (modpost refuses the module and "
                        "the kernel would be tainted)", section=".modinfo")]
    ok = ruledata.gpl_compatible()
    if all(lic in ok for lic in licenses):
        return []
    used = sorted(n for n in elf.undefined if n in gpl_only)
    if not used:
        return []
    shown = ", ".join(used[:8]) + (f" and {len(used) - 8} more" if len(used) > 8 else "")
    return [Finding("license-gpl-only-symbol", "error",
                    f"license {licenses[0]!r} is not GPL-compatible but the module uses GPL-only "
                    f"export(s) {shown} (per {source}): insmod fails with 'Unknown symbol'. Use a "
                    f"GPL-compatible MODULE_LICENSE (e.g. \"GPL\" or \"Dual BSD/GPL\") or stop using them",
                    section=".modinfo")]
