"""fpu-unguarded: FP/SIMD code that can run without the kernel's FPU guard.

The kernel saves user FP registers lazily; a module that touches them outside its arch's guard
(toolchains/arch/*.toml, [lint] fpu_begin/fpu_end) silently corrupts the registers of whatever user
task (or VM) was running.

How: inside each function, walk its events in address order and track whether the guard is on
(a call to a begin turns it on, a call to an end turns it off). A function that leaves the guard on
is a begin wrapper, one that turns it off without turning it on is an end wrapper; calls to wrappers
count as guard calls (found by iterating until nothing changes). Then, for each function with FP
code at an unguarded point, walk its callers backwards over unguarded call sites: reaching an entry
point (module init/exit, an export) is an error with the path; reaching only functions whose address
is taken is a warning (the pointer's callers cannot be seen); reaching neither means every path is
guarded. Arches whose guard calls are themselves conditional (s390: the inline kernel_fpu_begin() calls
out only when there is state to save, on two of its three paths) take the guard per function instead
([lint] fpu_flow = "function"): a function that calls a begin is guarded throughout.
"""
from collections import deque

from . import decode
from .callgraph import Graph
from .findings import Finding

RULE = "fpu-unguarded"
MAX_ROUNDS = 6


def _guard_sets(g: Graph, arch) -> tuple[set, set, set, set]:
    begin_ext = set(arch.lint.fpu_begin) | set(arch.lint.fpu_owner_begin)
    end_ext = set(arch.lint.fpu_end)
    begin_loc, end_loc = set(), set()
    for name in begin_ext:
        if name in g.by_name:
            begin_loc.add(g.by_name[name])
    for name in end_ext:
        if name in g.by_name:
            end_loc.add(g.by_name[name])
    return begin_ext, end_ext, begin_loc, end_loc


def _kind(target, begin_ext, end_ext, begin_loc, end_loc) -> int:
    """+1 guard begin, -1 guard end, 0 anything else."""
    if isinstance(target, int):
        return 1 if target in begin_loc else -1 if target in end_loc else 0
    name = target[1]
    return 1 if name in begin_ext else -1 if name in end_ext else 0


OFF, ON = 1, 2   # guard states as bits: a program point may be reached with the guard off, on, or both


def _flow(f, kind_of) -> tuple[list, int, bool]:
    """Forward dataflow over the function's control flow (built from its branch events).

    Returns ([(event, state before it)], state at the exits, whether an end is reached with the guard off).
    """
    evs = f.events
    leaders = {f.start}
    for ev in evs:
        k = ev[1]
        if k == decode.BRANCH:
            if f.start <= ev[2] < f.end:
                leaders.add(ev[2])
            leaders.add(ev[4])
        elif k == decode.END or (k == decode.CALL and ev[3] == 1):
            leaders.add(ev[4])
    order = sorted(l for l in leaders if f.start <= l < f.end)
    index = {l: i for i, l in enumerate(order)}
    nb = len(order)
    blocks: list[list] = [[] for _ in range(nb)]
    b = 0
    for ev in evs:
        while b + 1 < nb and order[b + 1] <= ev[0]:
            b += 1
        blocks[b].append(ev)
        if ev[1] == decode.FP:
            # a run of FP instructions that a branch target splits: the later block has FP code too
            j = b + 1
            while j < nb and order[j] < ev[3]:
                blocks[j].insert(0, (order[j], decode.FP, None, ev[3], ev[3]))
                j += 1
    succ: list[list[int]] = []
    for i, blk in enumerate(blocks):
        # a branch, return or tail jump ends its block (the next instruction is a leader)
        last = blk[-1] if blk else None
        nxt = [i + 1] if i + 1 < nb else []
        if last is None:
            succ.append(nxt)
        elif last[1] == decode.BRANCH:
            t = index.get(last[2])
            targets = [t] if t is not None else []
            succ.append(targets + nxt if last[3] else targets)
        elif last[1] == decode.END or (last[1] == decode.CALL and last[3] == 1):
            succ.append([])
        else:
            succ.append(nxt)
    state = [0] * nb
    state[0] = OFF
    work = [0]
    out = [0] * nb
    while work:
        i = work.pop()
        s = state[i]
        for ev in blocks[i]:
            if ev[1] == decode.CALL:
                k = kind_of(ev[2])
                if k:
                    s = ON if k > 0 else OFF
        out[i] = s
        for j in succ[i]:
            if state[j] | s != state[j]:
                state[j] |= s
                work.append(j)
    seen, exit_state, ended_off = [], 0, False
    for i, blk in enumerate(blocks):
        s = state[i]
        if not s:
            continue      # unreachable from the entry (e.g. only via an indirect jump)
        for ev in blk:
            seen.append((ev, s))
            if ev[1] == decode.CALL:
                k = kind_of(ev[2])
                if k < 0 and s & OFF:
                    ended_off = True
                if k:
                    s = ON if k > 0 else OFF
        if not succ[i]:
            exit_state |= s
    return seen, exit_state, ended_off


def _whole(f, kind_of) -> tuple[list, int, bool]:
    """_flow() per function: guarded throughout when it calls a begin anywhere; it leaves the guard on
    (a begin wrapper) when it calls no end, turns it off (an end wrapper) when it calls only an end."""
    kinds = [kind_of(ev[2]) for ev in f.events if ev[1] == decode.CALL]
    begins, ends = any(k > 0 for k in kinds), any(k < 0 for k in kinds)
    s = ON if begins else OFF
    return [(ev, s) for ev in f.events], OFF if ends else s, ends and not begins


def analyse(g: Graph, arch) -> tuple[dict[int, tuple[int, str]], dict[tuple[int, int], bool]]:
    """(function -> first FP instruction reachable with the guard off, (caller, call address) -> guarded?)"""
    begin_ext, end_ext, begin_loc, end_loc = _guard_sets(g, arch)
    fp_funcs = {f.index for f in g.functions if any(ev[1] == decode.FP for ev in f.events)}
    if not fp_funcs:
        return {}, {}
    # only functions that can lead to FP code, or that call a guard, need their call sites classified
    reach = set(fp_funcs)
    todo = list(fp_funcs)
    while todo:
        for c in g.callers(todo.pop()):
            if c.caller not in reach:
                reach.add(c.caller)
                todo.append(c.caller)

    def calls_guard(f):
        return any(ev[1] == decode.CALL and not isinstance(ev[2], int) and
                   (ev[2][1] in begin_ext or ev[2][1] in end_ext) for ev in f.events)

    relevant = [f for f in g.functions if f.index in reach or calls_guard(f)]

    def kind_of(target):
        return _kind(target, begin_ext, end_ext, begin_loc, end_loc)

    flow = _whole if arch.lint.fpu_flow == "function" else _flow
    flows = {}
    for _ in range(MAX_ROUNDS):
        changed = False
        for f in relevant:
            flows[f.index] = seen, exit_state, ended_off = flow(f, kind_of)
            if f.index in begin_loc or f.index in end_loc:
                continue
            if exit_state & ON:
                begin_loc.add(f.index)
                changed = True
            elif ended_off and not any(ev[1] == decode.FP for ev, _ in seen):
                end_loc.add(f.index)
                changed = True
        if not changed:
            break

    unguarded_fp: dict[int, tuple[int, str]] = {}
    site_guarded: dict[tuple[int, int], bool] = {}
    for f in relevant:
        for ev, s in flows[f.index][0]:
            if ev[1] == decode.CALL:
                site_guarded[(f.index, ev[0])] = s == ON
            elif ev[1] == decode.FP and s & OFF:
                if f.index not in unguarded_fp or ev[0] < unguarded_fp[f.index][0]:
                    unguarded_fp[f.index] = (ev[0], ev[2])
    return unguarded_fp, site_guarded


def _unguarded_path(g: Graph, fn: int, site_guarded, handlers: set[int]) -> tuple[str, list[int], int | None]:
    """Walk callers over unguarded call sites, nearest first.

    Returns (kind, path root..fn, root) where kind is "entry" (module init/exit or a probe handler: the
    kernel calls these without any FPU guard), "export" or "pointer" (callers we cannot see), or "none".
    """
    prev = {fn: None}
    queue = deque([fn])
    weak = None
    while queue:
        n = queue.popleft()
        if n in g.entries or n in handlers:
            return "entry", _path(prev, n), n
        if weak is None and n in g.exports:
            weak = ("export", n)
        elif weak is None and n in g.address_taken:
            weak = ("pointer", n)
        for c in g.callers(n):
            if c.caller not in prev and not site_guarded.get((c.caller, c.addr), False):
                prev[c.caller] = n
                queue.append(c.caller)
    if weak is not None:
        return weak[0], _path(prev, weak[1]), weak[1]
    return "none", [], None


def _path(prev: dict, n: int) -> list[int]:
    path = []
    while n is not None:
        path.append(n)
        n = prev[n]
    return path


def check(g: Graph, arch, handlers: set[int] = frozenset()) -> list[Finding]:
    """One error per function reachable unguarded from an entry point (each has its own path); one
    warning per export or function pointer through which FP code is reached (an asm implementation
    is often dozens of functions behind one pointer: one warning says it, dozens would bury it)."""
    unguarded_fp, site_guarded = analyse(g, arch)
    if not unguarded_fp:
        return []
    begin, end = arch.lint.fpu_advice
    out = []
    weak: dict[tuple[str, int], list] = {}
    for fn, (addr, _) in sorted(unguarded_fp.items()):
        f = g.functions[fn]
        kind, path, root = _unguarded_path(g, fn, site_guarded, handlers)
        if kind == "none":
            continue
        if kind != "entry":
            weak.setdefault((kind, root), []).append((fn, addr, path))
            continue
        chain = " -> ".join(g.functions[i].name for i in path)
        where = f"`{decode.insn_text(g.elf, f.section, addr)}` at {f.sec_name}+{addr:#x}"
        how = "a probe handler" if root in handlers else "a module entry point"
        out.append(Finding(RULE, "error",
                           f"{f.name} uses FP/SIMD registers outside {begin} ... {end}: first {where}; "
                           f"unguarded path from {how}: {chain}. Wrap the FP code (or every call to it) in "
                           f"{begin} ... {end}, or it corrupts the FP state of the interrupted task",
                           f.name, f.sec_name, addr))
    for (kind, root), hits in weak.items():
        fn, addr, path = min(hits, key=lambda h: len(h[2]))   # the one nearest the pointer or export
        f = g.functions[fn]
        chain = " -> ".join(g.functions[i].name for i in path)
        where = f"`{decode.insn_text(g.elf, f.section, addr)}` at {f.sec_name}+{addr:#x}"
        more = f" (and {len(hits) - 1} more function(s) behind it)" if len(hits) > 1 else ""
        if kind == "export":
            msg = (f"{f.name} uses FP/SIMD registers ({where}){more} and is reachable unguarded from the "
                   f"exported {g.functions[root].name} (path: {chain}). Callers in other modules must hold "
                   f"{begin} ... {end}; document that, or take the guard inside")
        else:
            taken = ", ".join(g.address_taken[root][:3])
            msg = (f"{f.name} uses FP/SIMD registers ({where}){more} and is reached only through a function "
                   f"pointer ({g.functions[root].name}, address taken at {taken}; path: {chain}). "
                   f"The linter cannot see those calls: make sure each one runs between {begin} and {end}")
        out.append(Finding(RULE, "warning", msg, f.name, f.sec_name, addr))
    return out
