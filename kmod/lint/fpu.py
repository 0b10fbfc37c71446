"""fpu-unguarded: FP/SIMD code that can run without the kernel's FPU guard.

The kernel saves user FP registers lazily; a module that touches them outside
kernel_fpu_begin()/kernel_fpu_end() (x86) or kernel_neon_begin()/kernel_neon_end() (arm64) silently
corrupts the registers of whatever user task (or VM) was running.

How: inside each function, walk its events in address order and track whether the guard is on
(a call to a begin turns it on, a call to an end turns it off). A function that leaves the guard on
is a begin wrapper, one that turns it off without turning it on is an end wrapper; calls to wrappers
count as guard calls (found by iterating until nothing changes). Then, for each function with FP
code at an unguarded point, walk its callers backwards over unguarded call sites: reaching an entry
point (module init/exit, an export) is an error with the path; reaching only functions whose address
is taken is a warning (the pointer's callers cannot be seen); reaching neither means every path is
guarded.
"""
from collections import deque

from . import decode, ruledata
from .callgraph import Graph
from .findings import Finding

RULE = "fpu-unguarded"
MAX_ROUNDS = 6


def _guard_sets(g: Graph, arch) -> tuple[set, set, set, set]:
    owner = ruledata.fpu_owner(arch.name)
    begin_ext = set(arch.fpu_guard_begin) | set(owner.get("begin", ()))
    end_ext = set(arch.fpu_guard_end) | set(owner.get("end", ()))
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


def analyse(g: Graph, arch) -> tuple[dict[int, tuple[int, str]], dict[tuple[int, int], bool]]:
    """(function -> first unguarded FP instruction, (caller, call address) -> guarded?)"""
    begin_ext, end_ext, begin_loc, end_loc = _guard_sets(g, arch)
    has_guard_calls = any(ev[1] == decode.CALL for f in g.functions for ev in f.events)
    for _ in range(MAX_ROUNDS if has_guard_calls else 0):
        changed = False
        for f in g.functions:
            on, ended_without_begin = False, False
            for ev in f.events:
                if ev[1] != decode.CALL:
                    continue
                k = _kind(ev[2], begin_ext, end_ext, begin_loc, end_loc)
                if k > 0:
                    on = True
                elif k < 0:
                    ended_without_begin |= not on
                    on = False
            if on and f.index not in begin_loc and f.index not in end_loc:
                begin_loc.add(f.index)
                changed = True
            elif ended_without_begin and f.index not in end_loc and f.index not in begin_loc:
                end_loc.add(f.index)
                changed = True
        if not changed:
            break

    unguarded_fp: dict[int, tuple[int, str]] = {}
    site_guarded: dict[tuple[int, int], bool] = {}
    for f in g.functions:
        on = False
        for ev in f.events:
            if ev[1] == decode.CALL:
                site_guarded[(f.index, ev[0])] = on
                k = _kind(ev[2], begin_ext, end_ext, begin_loc, end_loc)
                if k:
                    on = k > 0
            elif not on and f.index not in unguarded_fp:
                unguarded_fp[f.index] = (ev[0], ev[2])
    return unguarded_fp, site_guarded


def _unguarded_path(g: Graph, fn: int, site_guarded) -> tuple[str, list[int], int | None]:
    """Walk callers over unguarded call sites. ("entry"|"pointer"|"none", path root..fn, pointer root)"""
    prev = {fn: None}
    queue = deque([fn])
    pointer_root = None
    while queue:
        n = queue.popleft()
        if n in g.entries or n in g.exports:
            path = []
            while n is not None:
                path.append(n)
                n = prev[n]
            return "entry", path, None
        if pointer_root is None and n in g.address_taken:
            pointer_root = n
        for c in g.callers(n):
            if c.caller not in prev and not site_guarded.get((c.caller, c.addr), False):
                prev[c.caller] = n
                queue.append(c.caller)
    if pointer_root is not None:
        path, n = [], pointer_root
        while n is not None:
            path.append(n)
            n = prev[n]
        return "pointer", path, pointer_root
    return "none", [], None


def check(g: Graph, arch) -> list[Finding]:
    unguarded_fp, site_guarded = analyse(g, arch)
    if not unguarded_fp:
        return []
    begin = "/".join(f"{n}()" for n in arch.fpu_guard_begin[:1])
    end = "/".join(f"{n}()" for n in arch.fpu_guard_end[:1])
    out = []
    for fn, (addr, insn) in sorted(unguarded_fp.items()):
        f = g.functions[fn]
        kind, path, root = _unguarded_path(g, fn, site_guarded)
        if kind == "none":
            continue
        chain = " -> ".join(g.functions[i].name for i in path)
        where = f"`{insn}` at {f.sec_name}+{addr:#x}"
        if kind == "entry":
            msg = (f"{f.name} uses FP/SIMD registers outside {begin}/{end}: first {where}; "
                   f"unguarded path: {chain}. Wrap the FP code (or every call to it) in {begin} ... {end}, "
                   f"or it corrupts the FP state of the interrupted task")
            sev = "error"
        else:
            taken = ", ".join(g.address_taken[root][:3])
            msg = (f"{f.name} uses FP/SIMD registers ({where}) and is reached only through a function "
                   f"pointer ({g.functions[root].name}, address taken at {taken}; path: {chain}). "
                   f"The linter cannot see those calls: make sure each one runs between {begin} and {end}")
            sev = "warning"
        out.append(Finding(RULE, sev, msg, f.name, f.sec_name, addr))
    return out
