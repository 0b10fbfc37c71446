"""no-module-exit: module_init without module_exit. The kernel then marks the module permanent
(/proc/modules shows [permanent]) and rmmod refuses it until reboot."""
from .elf import Elf
from .findings import Finding


def check(elf: Elf) -> list[Finding]:
    names = elf.global_names
    if "init_module" in names and "cleanup_module" not in names:
        return [Finding("no-module-exit", "warning",
                        "the module has module_init but no module_exit: rmmod can never remove it. Add a "
                        "module_exit() that undoes the init (unregister probes, free memory)",
                        function="init_module")]
    return []
