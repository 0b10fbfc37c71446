"""Symbols resolved the way the kernel resolves them, and the load order that follows (what depmod
computes for modules.dep).

A module's undefined symbol is provided by the target kernel (vmlinux, or one of its in-tree modules:
Module.symvers says which) or by another module of the same set (the same lint run, the modules beside
a linted file, the .ko files of one build cell or package). A provider's namespace must be imported
(MODULE_IMPORT_NS) and a GPL-only export needs a GPL-compatible license, as modpost and the loader
(kernel/module/main.c: resolve_symbol, verify_namespace_is_imported) check. With MODVERSIONS on both
sides, the CRC a module expects (__versions) must be the one its sibling provider exports (__crc_SYM),
as check_version() checks at load.

    facts(elf)                  what one module exports, needs and imports (JSON-able, cached per file)
    resolve(...)                provider of every undefined symbol, and the findings for the rest
    providers(paths, target)    the same from files: module -> {symbol: provider}
    provider_order(paths)       the files ordered so that every provider loads before its users
"""
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import ruledata
from .elf import Elf, SHN_ABS
from .findings import Finding

# Defined by the final link of a .ko (the .mod.c part) on every arch; each arch adds its own
# (toolchains/arch/*.toml, linker_provided).
LINKER_PROVIDED = frozenset({"__this_module", "_GLOBAL_OFFSET_TABLE_"})
VMLINUX = "vmlinux"


def facts(elf: Elf, path: str) -> dict:
    """{"name", "exports": {sym: [gpl, namespace]}, "needs": [sym], "weak": [sym], "import_ns": [ns],
    "gpl": bool, "versions": {needed sym: the CRC it expects}, "crcs": {exported sym: its CRC}} (the last
    two empty without MODVERSIONS)."""
    from .. import arch as archmod
    a = archmod.by_elf_machine(elf.machine)
    linked = ruledata.GlobSet(a.lint.linker_provided) if a is not None else ()
    names = elf.modinfo_values("name")
    licenses = elf.modinfo_values("license")
    ok = ruledata.gpl_compatible()
    needs = [n for n in elf.undefined if n not in LINKER_PROVIDED and n not in linked]
    versions = elf.versions
    return {"name": names[0] if names else module_name(path),
            "exports": exports_of(elf),
            "needs": needs,
            "versions": {n: versions[n] for n in needs if n in versions},
            "crcs": export_crcs(elf),
            "weak": sorted(elf.weak_undefined),   # needs that may stay unresolved: the loader makes them 0
            "import_ns": sorted(set(elf.modinfo_values("import_ns"))),
            "gpl": bool(licenses) and all(lic in ok for lic in licenses)}


def module_name(path: str) -> str:
    """The kernel's name for a module file: the file name without .ko[.xz|.zst|.gz], '-' read as '_'."""
    base = Path(path).name
    return base[:base.index(".ko")].replace("-", "_") if ".ko" in base else Path(path).stem.replace("-", "_")


# anywhere in the string table, not only after a NUL: a linker may store a name as another's tail
_EXPORT_NAMES = re.compile(rb"__ksymtab_|__kstrtabns_|__export_symbol_")


def exports_of(elf: Elf) -> dict[str, list]:
    """sym -> [GPL-only?, namespace] from the export table of a linked module (`__ksymtab_SYM` in
    __ksymtab / __ksymtab_gpl, or ___ksymtab[_gpl]+SYM in an object before the final link; the
    namespace string at `__kstrtabns_SYM`), or from the .export_symbol records of Linux >= 6.5 objects
    that modpost has not turned into a ksymtab yet (license string, then namespace string).

    Only the symbols with such names are looked at (their string-table offsets found by one regex):
    building every symbol of every module would cost more than the rest of a cold lint."""
    strtab = elf._strtab
    starts = {m.start() for m in _EXPORT_NAMES.finditer(strtab)}
    if not starts:
        return {}
    out: dict[str, list] = {}
    ns: dict[str, str] = {}
    secs = elf.sections
    for name_off, _info, _other, shndx, value, _size in elf._defined_rows:
        if name_off not in starts or shndx >= len(secs):
            continue
        end = strtab.find(b"\0", name_off)
        name = strtab[name_off:end].decode("utf-8", "replace")
        if name.startswith("__ksymtab_"):
            sec = secs[shndx].name
            if sec.startswith(("__ksymtab", "___ksymtab")) and sec != "__ksymtab_strings":
                sym = name[len("__ksymtab_"):]
                out.setdefault(sym, [sec.startswith(("__ksymtab_gpl", "___ksymtab_gpl")), ""])
        elif name.startswith("__kstrtabns_"):
            ns[name[len("__kstrtabns_"):]] = elf.cstring_at(shndx, value) or ""
        elif secs[shndx].name == ".export_symbol":
            lic = elf.cstring_at(shndx, value) or ""
            space = elf.cstring_at(shndx, value + len(lic.encode()) + 1) or ""
            out[name[len("__export_symbol_"):]] = [lic == "GPL", space]
    for sym, space in ns.items():
        if sym in out and space:
            out[sym][1] = space
    return out


_CRC_NAMES = re.compile(rb"__crc_")


def export_crcs(elf: Elf) -> dict[str, int]:
    """sym -> the CRC a MODVERSIONS module exports it with: `__crc_SYM`, an absolute symbol whose value
    is the CRC (Linux < 5.19), or a u32 at the symbol in __kcrctab (the .mod.c of later kernels)."""
    strtab = elf._strtab
    starts = {m.start() for m in _CRC_NAMES.finditer(strtab)}
    out: dict[str, int] = {}
    if not starts:
        return out
    secs = elf.sections
    for name_off, _info, _other, shndx, value, _size in elf._defined_rows:
        if name_off not in starts:
            continue
        name = strtab[name_off:strtab.find(b"\0", name_off)].decode("utf-8", "replace")[len("__crc_"):]
        if shndx == SHN_ABS:
            out[name] = value & 0xFFFFFFFF
        elif shndx < len(secs):
            raw = elf.section_bytes(secs[shndx])
            if value + 4 <= len(raw):
                out[name] = int.from_bytes(raw[value:value + 4], "little" if elf.order == "<" else "big")
    return out


@dataclass
class Resolution:
    """The outcome for one module of a set."""
    provided: dict[str, str] = field(default_factory=dict)   # symbol -> provider (a path, VMLINUX, "NAME (in-tree)")
    depends: list[str] = field(default_factory=list)         # paths of the set it needs loaded first
    findings: list[Finding] = field(default_factory=list)


@lru_cache(maxsize=4096)
def _provider_label(owner: str | None) -> str:
    if not owner or owner == VMLINUX:
        return VMLINUX
    return f"{Path(owner).name} (in-tree)"


def resolve(modules: dict[str, dict], arch_of: dict[str, str | None], target_for=None) -> dict[str, Resolution]:
    """modules: path -> facts; arch_of: path -> arch; target_for(arch) -> KernelTarget or None.

    Without a target's exports only the set itself is known: a symbol the set does not provide is
    then assumed to be the kernel's (nothing to check it against), as before."""
    by_arch: dict[str | None, dict[str, list[str]]] = {}
    for path, f in modules.items():
        table = by_arch.setdefault(arch_of.get(path), {})
        for sym in f["exports"]:
            table.setdefault(sym, []).append(path)
    per_arch = Counter(arch_of.get(p) for p in modules)
    out: dict[str, Resolution] = {}
    for path, f in modules.items():
        arch = arch_of.get(path)
        t = target_for(arch) if target_for else None
        kernel = t.exports if t is not None else None
        set_exports = by_arch.get(arch, {})
        res = out[path] = Resolution()
        sf = ruledata.softfloat(arch or "")
        unknown, ns_missing, gpl_used, only_for, crc_off = [], {}, [], {}, {}
        expects = f.get("versions") or {}
        weak = set(f.get("weak", ()))
        import_ns = f["import_ns"]
        for sym in f["needs"]:
            entry = kernel.get(sym) if kernel is not None else None
            if entry is not None:
                _crc, _gpl, space, owner = entry if len(entry) == 4 else _entry(entry)
                if owner and owner != VMLINUX:
                    in_set = set_exports.get(sym)
                    if in_set and (len(in_set) > 1 or in_set[0] != path):
                        entry = None   # an in-tree module's export that a module of the set provides: that file loads
                    else:
                        res.provided[sym] = _provider_label(owner)
                # the target's GPL-only exports are license.py's rule
            if entry is None:
                owners = [p for p in set_exports.get(sym, ()) if p != path]
                if not owners:
                    if kernel is not None and sym not in sf and sym not in weak:   # softfloat-helper says it better
                        unknown.append(sym)
                    continue
                gpl, space = modules[owners[0]]["exports"][sym]
                res.provided[sym] = owners[0]
                theirs = (modules[owners[0]].get("crcs") or {}).get(sym)
                if sym in expects and theirs is not None and theirs != expects[sym]:
                    crc_off.setdefault(owners[0], []).append((sym, expects[sym], theirs))
                if owners[0] not in res.depends:
                    res.depends.append(owners[0])
                if gpl and not f["gpl"]:
                    gpl_used.append(sym)
            if not space:
                continue
            if space.startswith(MODULE_NS):
                # EXPORT_SYMBOL_FOR_MODULES (Linux >= 6.13): only the named modules may use it, no import
                if not _module_match(f["name"], space[len(MODULE_NS):]):
                    only_for.setdefault(space[len(MODULE_NS):], []).append(sym)
            elif space not in import_ns:
                ns_missing.setdefault(space, []).append(sym)
        where = t.name if t is not None else "the target"
        others = per_arch[arch] - 1
        for sym in unknown:
            also = (f", nor by the {others} other module(s) linted with it" if others else
                    ", nor by another module linted with it")
            res.findings.append(Finding(
                "undefined-symbol", "error",
                f"{sym} is not exported by {where}{also}: insmod fails with 'Unknown symbol {sym}'. Check the "
                f"name and the kernel version; if another module exports it, lint them together"))
        for space, syms in sorted(ns_missing.items()):
            allowed = t is not None and t.allow_missing_namespaces
            shown = ", ".join(sorted(syms)[:6]) + (f" and {len(syms) - 6} more" if len(syms) > 6 else "")
            res.findings.append(Finding(
                "namespace-not-imported", "warning" if allowed else "error",
                f"uses {shown} from symbol namespace {space} without MODULE_IMPORT_NS({space}): modpost "
                f"refuses the module and the loader "
                + ("only warns (CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS)" if allowed else
                   "refuses it ('module uses symbol ... from namespace ..., but does not import it', -EINVAL)")
                + f". Add MODULE_IMPORT_NS({space}) to the module", section=".modinfo"))
        for allowed, syms in sorted(only_for.items()):
            res.findings.append(Finding(
                "namespace-not-imported", "error",
                f"uses {', '.join(sorted(syms)[:6])}, exported only for module(s) {allowed}: the loader refuses "
                f"it ('module ... uses symbol ..., which is exported only for module ...', -EINVAL)"))
        for owner, bad in sorted(crc_off.items()):
            shown = "; ".join(f"CRC {mine:#010x} for {sym}, {Path(owner).name} exports {theirs:#010x}"
                              for sym, mine, theirs in sorted(bad)[:4]) + (
                f" (and {len(bad) - 4} more)" if len(bad) > 4 else "")
            res.findings.append(Finding(
                "crc-mismatch-sibling", "error",
                f"{Path(path).name} expects {shown}: insmod fails with 'disagrees about version of symbol'. "
                f"They were built from different sources or configs: rebuild both together", section="__versions"))
        if gpl_used:
            shown = ", ".join(sorted(gpl_used)[:6])
            res.findings.append(Finding(
                "license-gpl-only-symbol", "error",
                f"the module's license is not GPL-compatible but it uses GPL-only export(s) {shown} of "
                f"{', '.join(sorted({Path(res.provided[s]).name for s in gpl_used}))}: insmod fails with "
                f"'Unknown symbol'. Use a GPL-compatible MODULE_LICENSE or stop using them", section=".modinfo"))
    _duplicates(modules, arch_of, by_arch, out)
    _cycles(modules, out)
    return out


MODULE_NS = "module:"


def _module_match(name: str, patterns: str) -> bool:
    """kernel/module/main.c module_match(): comma-separated names, a trailing * a prefix; - is _."""
    name = name.replace("-", "_")
    for p in patterns.split(","):
        p = p.strip().replace("-", "_")
        if p.endswith("*") and name.startswith(p[:-1]) or p == name:
            return True
    return False


def _entry(value) -> tuple:
    """A target export: (crc, gpl, namespace, owner); (crc, gpl) from a caller's own table."""
    return value if len(value) == 4 else (*value[:2], "", VMLINUX)


def _duplicates(modules, arch_of, by_arch, out) -> None:
    for arch, table in by_arch.items():
        for sym, owners in table.items():
            if len(owners) < 2:
                continue
            first = owners[0]
            for other in owners[1:]:
                out[other].findings.append(Finding(
                    "duplicate-export", "warning",
                    f"exports {sym}, which {Path(first).name} exports too: the kernel refuses to load the "
                    f"second of them ('exports duplicate symbol {sym}'). Load only one, or rename one export"))


def _cycles(modules, out) -> None:
    order, cycle = _toposort(list(modules), {p: r.depends for p, r in out.items()})
    if cycle:
        names = " -> ".join(Path(p).name for p in cycle)
        for p in set(cycle):
            out[p].findings.append(Finding(
                "dependency-cycle", "error",
                f"the modules need each other's symbols in a cycle ({names}): depmod reports it and modprobe "
                f"cannot load any of them. Move the shared code into one module"))


def _toposort(paths: list[str], deps: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Providers before users, otherwise in the given order; (order, a cycle found or [])."""
    order, state, cycle = [], {}, []

    def visit(p, stack):
        nonlocal cycle
        if state.get(p) == 2:
            return
        if state.get(p) == 1:
            if not cycle:
                cycle = stack[stack.index(p):] + [p]
            return
        state[p] = 1
        stack.append(p)
        for d in deps.get(p, ()):
            visit(d, stack)
        stack.pop()
        state[p] = 2
        order.append(p)

    for p in paths:
        visit(p, [])
    return order, cycle


def order_of(resolutions: dict[str, Resolution], paths: list[str]) -> list[str]:
    return _toposort(paths, {p: r.depends for p, r in resolutions.items()})[0]


# ----------------------------------------------------------------------------------------------------
# from files, for the stages that only need the order (the boot test, packages, the manifest)

def _read(paths: list) -> tuple[dict[str, dict], dict[str, str | None]]:
    from . import files
    from .. import arch as archmod
    from .elf import BadElf, parse
    modules, arch_of = {}, {}
    for p in paths:
        p = str(p)
        try:
            elf = parse(files.read_module(Path(p)))
        except (BadElf, files.Unreadable):
            modules[p] = {"name": module_name(p), "exports": {}, "needs": [], "import_ns": [], "gpl": True}
            arch_of[p] = None
            continue
        a = archmod.by_elf_machine(elf.machine)
        modules[p], arch_of[p] = facts(elf, p), a.name if a else None
    return modules, arch_of


def providers(paths: list, target: str | None = None) -> dict[str, dict[str, str]]:
    """path -> {undefined symbol: provider} (another path of `paths`, "vmlinux", or "NAME (in-tree)"
    when a target is given; symbols nobody provides are left out)."""
    modules, arch_of = _read(paths)
    spec = None
    if target:
        from .target import TargetSpec
        spec = TargetSpec(target)
    res = resolve(modules, arch_of, spec.for_arch if spec else None)
    return {p: r.provided for p, r in res.items()}


def provider_order(paths: list) -> list[Path]:
    """`paths` ordered so that each module comes after the modules whose symbols it uses (the order
    insmod must follow; modprobe reads it from depmod's modules.dep). Ties keep the given order."""
    modules, arch_of = _read(paths)
    res = resolve(modules, arch_of)
    return [Path(p) for p in order_of(res, [str(p) for p in paths])]
