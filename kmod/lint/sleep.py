"""sleep-in-probe-handler: a kprobe/kretprobe handler that can reach a function that may sleep.

Handlers run with preemption disabled (kprobes on some arches also with interrupts off);
sleeping there is "BUG: scheduling while atomic" or a hard hang. Follow every call from each handler
inside the module, breadth first, and report the first path to each sleeping kernel function (the
list, with the documentation that says each may sleep, is rules/lint/sleeping.toml). Allocations are
judged by their GFP flags when the flags are a constant at the call site, found in the argument
register of the module's arch (toolchains/arch/*.toml, [abi]).
"""
import re
from collections import deque

from . import decode, pointers, ruledata
from .callgraph import Graph
from .findings import Finding

RULE = "sleep-in-probe-handler"
UNSEEN = "indirect-call-not-followed"
LOOKBACK = 12   # instructions searched backwards for the flags argument
_IMM = re.compile(r"^#?(-?0x[0-9a-f]+|-?\d+)$")


def _imm(text: str) -> int | None:
    m = _IMM.match(text)
    return int(m.group(1), 0) if m else None


def _gfp_constant(g: Graph, caller: int, call_addr: int, arg: int) -> int | None:
    """The constant passed as argument `arg` at a call site, if the code sets it with an immediate
    (one instruction, or a high part and a low part where the arch needs two)."""
    arch = decode.arch_of(g.elf)
    f = g.functions[caller]
    insns = decode.disassemble(g.elf, g.elf.sections[f.section], f.start, min(call_addr, f.end))
    regs = set(arch.argument(arg))
    low = None
    for _addr, _size, mn, op in reversed(insns[-LOOKBACK:]):
        parts = [p.strip() for p in op.split(",")]
        if not parts or parts[0] not in regs:
            continue
        if low is not None:
            # the low part was added to this register: now its high part
            if arch.set_high and mn in arch.set_high[0] and len(parts) == 2 and _imm(parts[1]) is not None:
                return ((_imm(parts[1]) << arch.set_high[1]) + low) & 0xFFFFFFFF
            return None
        if mn in arch.zero_idiom and len(parts) == 2 and parts[1] == parts[0]:
            return 0
        if mn in arch.set_immediate and len(parts) == 2 and _imm(parts[1]) is not None:
            return _imm(parts[1]) & 0xFFFFFFFF
        if mn in arch.add_low and len(parts) == 3 and parts[1] == parts[0] and _imm(parts[2]) is not None:
            low = _imm(parts[2])
            continue
        if mn in arch.add_low and len(parts) == 2 and _imm(parts[1]) is not None:   # c.addi r, imm
            low = _imm(parts[1])
            continue
        return None   # written some other way: not a constant we can read
    return None


def check(g: Graph, handlers: dict[int, str]) -> list[Finding]:
    if not handlers:
        return []
    gfp_alloc = ruledata.gfp_alloc()
    reclaim = ruledata.gfp_direct_reclaim()
    thunks = ruledata.GlobSet(decode.arch_of(g.elf).lint.indirect_thunks)
    out, reported = [], set()
    for h, kind in sorted(handlers.items()):
        prev = {h: None}
        queue = deque([h])
        unseen = []        # (function, address) of calls through a pointer nothing resolves
        while queue:
            fn = queue.popleft()
            sites = [ev[0] for ev in g.functions[fn].events if ev[1] == decode.INDIRECT]
            for c in g.calls_from(fn):
                if c.callee is not None:
                    if c.callee not in prev:
                        prev[c.callee] = fn
                        queue.append(c.callee)
                    continue
                name = c.external
                if name in thunks:
                    sites.append(c.addr)
                    continue
                why = ruledata.sleep_source(name)
                if why is None and name in gfp_alloc:
                    flags = _gfp_constant(g, fn, c.addr, gfp_alloc[name])
                    if flags is not None and flags & reclaim:
                        why = (f"its GFP flags {flags:#x} include __GFP_DIRECT_RECLAIM (GFP_KERNEL and friends); "
                               f"use GFP_ATOMIC in a handler (Documentation/core-api/memory-allocation.rst)")
                if why is None or (h, name) in reported:
                    continue
                reported.add((h, name))
                chain = _chain(g, prev, fn) + f" -> {name}"
                f = g.functions[fn]
                out.append(Finding(
                    RULE, "error",
                    f"{kind} handler {g.functions[h].name} can sleep: {chain} ({why}). Handlers run with "
                    f"preemption disabled; defer the work (e.g. to a workqueue) or use a non-sleeping variant",
                    f.name, f.sec_name, c.addr))
            if sites:
                # a call through a pointer: follow the function tables and ops structs this function
                # reads, when the module initialises them; otherwise say it was not followed
                callees = pointers.table_callees(g, fn)
                for callee in callees:
                    if callee not in prev:
                        prev[callee] = fn
                        queue.append(callee)
                if not callees:
                    unseen.extend((fn, a) for a in sorted(set(sites)))
        if unseen:
            fn, addr = unseen[0]
            f = g.functions[fn]
            more = f" (and {len(unseen) - 1} more such call(s))" if len(unseen) > 1 else ""
            out.append(Finding(
                UNSEEN, "info",
                f"{kind} handler {g.functions[h].name} calls through a pointer at {g.where(fn, addr)}{more}; "
                f"not followed (the pointer is not in a function table or ops struct this module initialises), "
                f"so {RULE} could not check what it calls. Path: {_chain(g, prev, fn)}",
                f.name, f.sec_name, addr))
    return out


def _chain(g: Graph, prev: dict, fn: int) -> str:
    path, n = [], fn
    while n is not None:
        path.append(g.functions[n].name)
        n = prev[n]
    return " -> ".join(reversed(path))
