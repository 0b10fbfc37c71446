"""Lint one module: parse it, build its call graph once, run every rule over it.

Each rule runs on its own: a rule that fails on a strange module becomes a `lint-internal-error`
warning and the others still run (in `strict` mode, used by the tests, the exception propagates so
bugs are seen).
"""
from .. import arch as archmod
from ..errors import KmodError
from . import against, callgraph, deps, fpu, license, probes, shape, signature, sleep, symbols
from .elf import BadElf, parse
from .findings import RANK, Finding, ModuleResult


def warm(arch_names) -> None:
    """Make what every module's lint reads once per process (the arch's instruction tables, the rule
    data): called before a pool forks, so each worker inherits it instead of making it again (the x86
    tables alone are 10 ms, a fifth of what a worker of a package-sized set has to do)."""
    from . import decode, ruledata
    for name in arch_names:
        a = archmod.get(name)
        if a.lint.decoder == "capstone":
            decode._tables(name)
        ruledata.softfloat(name)
    ruledata.gpl_compatible()
    ruledata.gpl_only_default()
    ruledata.metadata_sections()
    ruledata.sleeping()
    ruledata.gfp_alloc()
    ruledata.load("kprobes")


def invalid(path: str, reason: str) -> ModuleResult:
    return ModuleResult(path, None, [Finding("invalid-elf", "error",
                                             f"{reason}: this is not a loadable kernel module")])


def lint_bytes(data: bytes, path: str, target=None, probe_names: list[str] | None = None,
               strict: bool = False, cert: signature.Cert | None = None) -> ModuleResult:
    try:
        return _lint(data, path, target, probe_names, strict, cert)
    except BadElf as e:
        return invalid(path, str(e))


def _lint(data, path, target, probe_names, strict, cert) -> ModuleResult:
    elf = parse(data)
    arch = archmod.by_elf_machine(elf.machine)
    if arch is None:
        return ModuleResult(path, None, [Finding(
            "unsupported-arch", "error",
            f"ELF machine {elf.machine} (e_machine): kmod lints "
            f"{', '.join(a.name for a in archmod.all_arches().values())} modules only")])
    result = ModuleResult(path, arch.name)
    out = result.findings
    result.facts = deps.facts(elf, path)    # what the set's symbol resolution needs (runner.resolve_set)

    def run(name, fn, *args, default=None):
        try:
            return fn(*args)
        except (BadElf, KmodError):
            raise                  # late corruption is still invalid-elf; a download failure is the run's
        except Exception as e:  # noqa: BLE001 - one broken rule must not hide the others
            if strict:
                raise
            out.append(Finding("lint-internal-error", "warning",
                               f"rule {name} failed on this module ({type(e).__name__}: {e}); the other rules ran"))
            return default

    g = run("callgraph", callgraph.build, elf)
    found = run("probes", probes.find, g, default=probes.Probes()) if g else probes.Probes()
    if g:
        out += run("fpu-unguarded", fpu.check, g, arch, found.handler_set(), default=[])
        out += run("sleep-in-probe-handler", sleep.check, g, found.handlers, default=[])
    out += run("softfloat-helper", symbols.softfloat, elf, default=[])
    out += run("no-module-exit", shape.check, elf, default=[])
    out += run("signature", signature.check, data, cert, default=[])

    t = None
    if target is not None:
        t = run("target", target.for_arch, arch.name)
        if t is None or (t.arch and t.arch != arch.name):
            # nothing else about this kernel applies to a module of another arch
            out.append(against.arch_mismatch(arch.name, target.arches(), t.name if t else target.spec))
            t = None
    gpl_only, source = _gpl_only(t)
    out += run("license", license.check, elf, gpl_only, source, default=[])
    if t is not None:
        out += run("target", against.check, elf, arch.name, t, default=[])

    out += _unseen_probes(found, probe_names)
    probed = dict(found.symbols)
    if probe_names is not None:
        # NAME+OFFSET probes NAME: the kernel resolves the name, then adds the offset
        names = (n.split("+", 1)[0] for n in probe_names)
        probed = {n: found.symbols.get(n, "kprobe") for n in names}
    if probed and t is not None and t.text is None:
        t = run("probe-map", target.with_symbols, arch.name, default=None) or t   # a pin's first use
    out += run("probe-targets", against.probe_targets, probed, t, found.offsets, default=[])
    out.sort(key=lambda f: (-RANK[f.severity], f.rule, f.function or "", f.address or 0))
    return result


def _unseen_probes(found, probe_names) -> list[Finding]:
    """What the probe rules could not see, said rather than skipped."""
    if not found.registers:
        return []
    out = []
    if not found.handlers:
        out.append(Finding("probe-handlers-unknown", "info",
                           "the module registers kprobes but no handler was found (the struct kprobe is filled "
                           "where the linter cannot see it: at run time, on the stack, through a pointer): "
                           "sleep-in-probe-handler and fpu-unguarded did not check its handlers"))
    if probe_names is None and not found.symbols:
        maybe = f" (its registering code uses the string(s) {', '.join(found.literals[:4])})" if found.literals else ""
        out.append(Finding("probe-targets-unknown", "info",
                           f"the module registers kprobes but its probed symbols are not in its data (set at "
                           f"run time: a module parameter, a struct kprobe filled on the stack){maybe}: the "
                           f"probe-target rules did not check them. Name them with --probe SYMBOL "
                           f"(symbols = [...] in kmod.toml)"))
    elif probe_names is None:
        for name in sorted(found.defaults):
            out.append(Finding("probe-targets-unknown", "info",
                               f"the probed symbol {name} is the default of a writable buffer (a module parameter "
                               f"such as module_param_string): it is checked as {name}, but another symbol may "
                               f"be given at load time"))
    return out


def _gpl_only(t):
    from . import ruledata
    if t is not None and t.exports is not None:
        return t.gpl_only(), f"{t.name}'s Module.symvers"
    return ruledata.gpl_only_default(), "the pinned kernels' Module.symvers"
