"""The rules that need a target kernel: arch, vermagic, CRCs, exports, and the probed symbols."""
from . import ruledata, symbols
from .elf import Elf
from .findings import Finding
from .target import KernelTarget, close_names


def arch_mismatch(module_arch: str, target_arches: list[str], target_name: str) -> Finding:
    return Finding("arch-mismatch", "error",
                   f"the module is {module_arch} but {target_name} is {'/'.join(target_arches) or 'another arch'}: "
                   f"insmod fails with 'Exec format error'. Build it for the target's arch "
                   f"(ARCH=... CROSS_COMPILE=...)")


def check(elf: Elf, module_arch: str, t: KernelTarget) -> list[Finding]:
    out = []
    if t.arch and t.arch != module_arch:
        return [arch_mismatch(module_arch, [t.arch], t.name)]
    if t.vermagic:
        mine = elf.modinfo_values("vermagic")
        if not mine:
            out.append(Finding("vermagic-mismatch", "error",
                               f"the module has no vermagic; {t.name} expects '{t.vermagic.strip()}': insmod "
                               f"refuses it ('bad vermagic'). Build it with kbuild against the target's headers",
                               section=".modinfo"))
        elif mine[0].split() != t.vermagic.split():
            out.append(Finding("vermagic-mismatch", "error",
                               f"vermagic '{mine[0].strip()}' differs from {t.name}'s '{t.vermagic.strip()}': "
                               f"insmod refuses it ('version magic ... should be ...'). Rebuild against the "
                               f"target's headers", section=".modinfo"))
    if t.exports is not None:
        out += symbols.modversions(elf, t.exports, t.name)   # undefined symbols: deps.py, over the set
    return out


def probe_targets(probed: dict[str, str], t: KernelTarget | None,
                  offsets: dict[str, int] | None = None) -> list[Finding]:
    """probe-target-* need the target's System.map; kretprobe-noreturn needs only the name. `offsets`: the
    static `.offset` of the object probing each symbol, where the module's data shows it."""
    out = []
    noreturn = set(ruledata.load("kprobes")["noreturn"])
    first = min(probed) if probed else None
    for name, kind in sorted(probed.items()):
        if kind == "kretprobe" and name in noreturn:
            out.append(Finding("kretprobe-noreturn", "warning",
                               f"kretprobe on {name}, which never returns: the return handler never runs and "
                               f"each hit holds a kretprobe instance forever. Use a kprobe instead"))
        if t is None:
            continue
        if kind == "kretprobe" and t.entry_skip:
            out.append(Finding("kretprobe-entry-refused", "error",
                               f"kretprobe on {name}: {t.name} starts every function with an ftrace patch site it "
                               f"cannot probe (no CONFIG_KPROBES_ON_FTRACE), and a kretprobe must attach at the "
                               f"entry itself, so register_kretprobe() fails with -EINVAL. Use a kprobe (kmod "
                               f"places it {t.entry_skip:#x} bytes in, after the site), or a kernel with "
                               f"KPROBES_ON_FTRACE"))
        if kind == "kprobe" and t.entry_skip and (offsets or {}).get(name) == 0:
            # a warning: the module may still set .offset at run time, which its data does not show
            out.append(Finding("kprobe-entry-refused", "warning",
                               f"kprobe on {name} at offset 0 (its struct kprobe's static .offset): {t.name} starts every "
                               f"function with an ftrace patch site it cannot probe (no CONFIG_KPROBES_ON_FTRACE), "
                               f"so register_kprobe() fails with -EINVAL unless the module sets .offset to "
                               f"{t.entry_skip:#x} or more before registering. Probe {name}+{t.entry_skip:#x}"))
        if t.text is None:
            if name == first:
                shown = ", ".join(sorted(probed)[:8]) + (f" and {len(probed) - 8} more" if len(probed) > 8 else "")
                if t.symbols_unavailable:
                    out.append(Finding("probe-targets-unchecked", "warning",
                                       f"probe target(s) {shown} not checked: {t.symbols_unavailable}"))
                else:
                    out.append(Finding("probe-targets-unchecked", "info",
                                       f"probe target(s) {shown} not checked: {t.name} has no symbol table here "
                                       f"(Debian's System.map is a placeholder); "
                                       f"{t.how_to_get_symbols or 'give a System.map as --target'}"))
            continue
        addr = t.text.get(name)
        clones = t.clones.get(name, [])
        if addr is None and not clones:
            hint = close_names(t, name)
            out.append(Finding("probe-target-missing", "error",
                               f"{name} is not in {t.name}'s symbols ({t.symbols_from}): register_kprobe() "
                               f"fails with -ENOENT"
                               + (f". Did you mean {', '.join(hint)}?" if hint else
                                  ". It may be inlined or renamed in this kernel")))
            continue
        if addr is None:
            out.append(Finding("probe-target-clone", "warning",
                               f"{name} exists in {t.name} only as compiler clone(s) {', '.join(clones[:4])}: "
                               f"probing {name} fails; probe the clone instead, and note that not every call "
                               f"site may go through it"))
            continue
        if name in t.blacklist:
            out.append(Finding("probe-target-blacklisted", "error",
                               f"{name} is on {t.name}'s kprobe blacklist (NOKPROBE_SYMBOL, noinstr or entry "
                               f"code): register_kprobe() "
                               f"fails with -EINVAL. Probe a caller or callee instead"))
            continue
        section = t.in_blacklisted_range(addr)
        if section:
            out.append(Finding("probe-target-blacklisted", "error",
                               f"{name} lies in {section} of {t.name}, which kprobes refuse (-EINVAL). Probe a "
                               f"function outside {section} instead"))
            continue
        if clones:
            out.append(Finding("probe-target-clone", "warning",
                               f"{name} also has compiler clone(s) {', '.join(clones[:4])} in {t.name}: calls "
                               f"that go to a clone (or were partially inlined) do not hit the probe"))
    return out
