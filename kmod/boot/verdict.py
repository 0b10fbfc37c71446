"""The verdict of one boot test, from the console alone (so a saved log can be judged again).

/init prints "KMODBOOT step=NAME status=STATUS key=value..." per step (templates/boot/init.sh.j2); the
kernel prints its own messages in between, in order. PASS needs: insmod ok, every probe listed in
/sys/kernel/debug/kprobes/list, every hit counter > 0 after the trigger, rmmod ok, no new taint beyond
O and E, and a console free of the signs of a sick kernel. A hand-written module has no counters:
kmod counts hits itself with a tracefs kprobe event on each address the module registered, or the
spec's `expect` pattern on the console proves it; without either the verdict is "unproven". A module
that registers no kprobes is judged on load, unload and kernel health alone, and the verdict says so;
one that the build saw calling register_kprobe but that registered none during the test is "unproven". A boot that never reaches /init is an
infrastructure error, not a verdict on the module."""
import re
from dataclasses import dataclass, field

from .initramfs import MARKER, STEPS

PASS, FAIL, ERROR = "pass", "fail", "error"
UNPROVEN = "unproven"  # nothing went wrong, but nothing proved that the probes fired: not a PASS

# Signs of a sick kernel. Checked from /init's first line on: what the boot itself printed before is
# the pinned kernel's business, not the module's.
SICK = [
    ("BUG", re.compile(r"\bBUG:")),
    ("Oops", re.compile(r"\bOops\b")),
    ("WARNING", re.compile(r"\bWARNING:")),
    ("general protection fault", re.compile(r"general protection")),
    ("scheduling while atomic", re.compile(r"scheduling while atomic")),
    ("sleeping function called from invalid context", re.compile(r"sleeping function called from invalid context")),
    ("RCU stall", re.compile(r"rcu.{0,60}(?:stall|self-detected)", re.I)),
    ("kernel panic", re.compile(r"Kernel panic|\bpanic\b.*not syncing")),
]
PANIC = re.compile(r"Kernel panic - not syncing.*|\bpanic\b.*not syncing.*")
# Taint flags by bit (kernel/panic.c); O (out-of-tree) and E (unsigned) are what loading any module
# built here does, everything else new is a finding.
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTNJ"
ALLOWED_TAINT = (1 << 12) | (1 << 13)
LINE_RE = re.compile(MARKER + r" step=(?P<step>[\w-]+) status=(?P<status>[\w-]+)(?P<rest>.*)$")
KPROBE_RE = re.compile(r"^(?P<addr>\S+)\s+(?P<type>[kr])\s+(?P<sym>[^\s+]+)\+0x(?P<off>[0-9a-fA-F]+)\s*(?P<flags>.*)$")
# A probe at a function's entry may be moved past the landing pad (x86 ENDBR, arm64 BTI/PAC).
ENTRY_SLACK = 16
EXCERPT = 20


@dataclass
class Step:
    name: str
    status: str
    fields: dict
    index: int  # console line number


@dataclass
class Finding:
    index: int
    step: str
    reason: str
    excerpt: list[str]


@dataclass
class Verdict:
    status: str                  # pass, fail, error
    step: str = ""               # the step that failed (or was running when things went wrong)
    reason: str = ""
    excerpt: list[str] = field(default_factory=list)
    hits: list[int] | None = None
    steps: dict[str, str] = field(default_factory=dict)
    kprobes: list[str] = field(default_factory=list)
    taint: int | None = None
    findings: list[Finding] = field(default_factory=list)
    proof: str = ""              # what proved that the probes fired (or why none was needed)

    def record(self) -> dict:
        return {"verdict": self.status, "step": self.step, "reason": self.reason, "excerpt": self.excerpt,
                "hits": self.hits, "steps": self.steps, "kprobes": self.kprobes, "taint": self.taint,
                "taint_flags": taint_flags(self.taint) if self.taint is not None else "", "proof": self.proof}


def taint_flags(value: int) -> str:
    return "".join(ch for bit, ch in enumerate(TAINT_LETTERS) if value >> bit & 1)


def parse_fields(rest: str) -> dict:
    """key=value pairs; `entry=` takes the rest of the line (a kprobes list line has spaces)."""
    rest = rest.strip()
    if rest.startswith("entry="):
        return {"entry": rest[len("entry="):]}
    out = {}
    for part in rest.split():
        k, sep, v = part.partition("=")
        if sep:
            out[k] = v
    return out


def parse_steps(lines: list[str]) -> list[Step]:
    steps = []
    for i, line in enumerate(lines):
        m = LINE_RE.search(line)
        if m:
            steps.append(Step(m["step"], m["status"], parse_fields(m["rest"]), i))
    return steps


def _next_step(name: str) -> str:
    i = STEPS.index(name) if name in STEPS else -1
    return STEPS[min(i + 1, len(STEPS) - 1)]


def in_progress(steps: list[Step], index: int) -> str:
    """The step /init was running when console line `index` appeared."""
    current = STEPS[0]
    for s in steps:
        if s.index > index:
            break
        if s.status == "start":
            current = s.name
        elif s.status != "entry":
            current = _next_step(s.name)
    return current


def match_probes(expected: list[tuple[str, int]], entries: list[str]) -> tuple[list[str], list[str]]:
    """(missing, unhealthy): expected (symbol, offset) not in the kprobes list, or listed but disabled."""
    parsed = [m for m in (KPROBE_RE.match(e.strip()) for e in entries) if m]
    used, missing, unhealthy = set(), [], []
    for sym, off in expected:
        label = f"{sym}+{off:#x}"
        for j, m in enumerate(parsed):
            if j in used or m["sym"] != sym:
                continue
            got = int(m["off"], 16)
            if got == off or (off == 0 and got <= ENTRY_SLACK):
                used.add(j)
                if "DISABLED" in m["flags"] or "GONE" in m["flags"]:
                    unhealthy.append(f"{label} is {m['flags'].strip()}")
                break
        else:
            missing.append(label)
    return missing, unhealthy


def registered(entries: list[str]) -> list[str]:
    """SYMBOL+0xOFF of each probe in a kprobes list, in order."""
    return [f"{m['sym']}+0x{m['off']}" for m in (KPROBE_RE.match(e.strip()) for e in entries) if m]


def counted(steps: list[Step]) -> tuple[dict[str, int], dict[str, str]]:
    """kmod's own counts (step=count): probe -> hits, and probe -> why it could not be counted."""
    probe_of = {s.fields.get("event"): s.fields.get("probe", "") for s in steps
                if s.name == "count" and s.status in ("armed", "fail")}
    failed = {s.fields.get("probe", ""): "tracefs refused a kprobe event there" for s in steps
              if s.name == "count" and s.status == "fail"}
    hits = {}
    for s in steps:
        if s.name == "count" and s.status == "ok" and s.fields.get("event") in probe_of:
            try:
                hits[probe_of[s.fields["event"]]] = int(s.fields.get("hits", ""))
            except ValueError:
                failed[probe_of[s.fields["event"]]] = "kprobe_profile was unreadable"
    return hits, failed


def _proof_by_count(v: Verdict, steps: list[Step], lines: list[str], probes, expect: str, found: list,
                    excerpt, uses_kprobes: bool = False) -> str:
    """A hand-written module: kmod's own kprobe events on the addresses it registered, or the spec's
    console pattern. Returns why the verdict is unproven ("" when proven or failed)."""
    mine = registered(v.kprobes)
    trig = next((s for s in steps if s.name == "trigger" and s.status == "start"), None)
    seen = ""
    if expect and trig:
        rx = re.compile(expect)
        seen = next((ln.strip() for ln in lines[trig.index:] if MARKER not in ln and rx.search(ln)), "")
    if not mine and not probes:
        if not uses_kprobes:
            v.proof = "none needed: the module registers no kprobes; judged on load, unload and kernel health alone"
            return ""
        if seen:
            v.proof = f"the console showed {expect!r}: {seen[:120]}"
            return ""
        # it calls register_kprobe (the build saw it), but no probe of it was listed after insmod: it
        # registers them later (a parameter, a device it waits for) or not at all, and nothing was counted
        return ("the module uses kprobes (its manifest's kos[].kprobes) but registered none while it was "
                "loaded, so nothing proved a probe fired: give the spec a trigger that makes it register them "
                "(kmod then counts their hits), or expect = \"a line the module prints when its probe fires\"")
    hits, failed = counted(steps)
    v.hits = [hits.get(p, 0) for p in mine] if hits else None
    never = [p for p in mine if hits.get(p) == 0]
    if never and not seen:
        step = next((s for s in steps if s.name == "count" and s.status == "ok"), trig)
        found.append(Finding(step.index if step else len(lines), "hits",
                             "a probe never fired during the trigger (kmod's own kprobe event on the same address "
                             f"counted {', '.join(f'{p}=0' for p in never)})", excerpt(step) if step else []))
        return ""
    uncounted = [p for p in mine if p not in hits]
    parts = []
    if hits:
        parts.append("kmod's kprobe events on the same addresses counted "
                     + ", ".join(f"{p}={h}" for p, h in hits.items()))
    if seen:
        parts.append(f"the console showed {expect!r}: {seen[:120]}")
    v.proof = "; ".join(parts)
    if uncounted and not seen:
        why = "; ".join(sorted({failed.get(p, "no count was reported") for p in uncounted}))
        return (f"nothing proved that {', '.join(uncounted)} fired ({why}): give the spec expect = "
                "\"a line the module prints when its probe fires\", or a trigger that runs the probed code")
    return ""


def judge(lines: list[str], probes: list[tuple[str, int]], module: str = "", *, timed_out: bool = False,
          timeout: float = 0.0, exit_code: int | None = 0, needs_hits: bool = True, expect: str = "",
          uses_kprobes: bool = False) -> Verdict:
    """`uses_kprobes`: the build found the module calling register_k(ret)probe(s) (the manifest's
    kos[].kprobes): a hand-written one that then registers nothing is unproven, not 'none needed'."""
    lines = [ln.rstrip("\r\n") for ln in lines]
    steps = parse_steps(lines)
    by_name: dict[str, Step] = {}
    for s in steps:
        if s.status not in ("entry", "start"):
            by_name.setdefault(s.name, s)
    v = Verdict(PASS, steps={s.name: s.status for s in steps if s.status not in ("entry", "start")})
    v.kprobes = [s.fields.get("entry", "") for s in steps if s.name == "kprobes" and s.status == "entry"]

    init = by_name.get("init")
    if init is None:
        return _no_init(lines, timed_out, timeout, exit_code)
    start = init.index

    def excerpt_around(i: int, before: int = 3, after: int = EXCERPT) -> list[str]:
        return lines[max(start, i - before): i + after]

    def excerpt_since_previous(s: Step) -> list[str]:
        prev = max((t.index for t in steps if t.index < s.index), default=start)
        return lines[prev + 1: s.index + 1][-EXCERPT:]

    found: list[Finding] = []
    unproven = ""
    # 1. the kernel's health, line by line
    for i in range(start, len(lines)):
        line = lines[i]
        if MARKER in line:
            continue
        for label, rx in SICK:
            if rx.search(line):
                found.append(Finding(i, in_progress(steps, i), f"{label} on the console: {line.strip()}",
                                     excerpt_around(i)))
                break
    # 2. the steps
    mount = by_name.get("mount")
    if mount and mount.status == "fail":
        v.status, v.step, v.reason = ERROR, "mount", "/init could not mount proc, sysfs or debugfs"
        v.excerpt = excerpt_since_previous(mount)
        return v
    if module:
        ins = by_name.get("insmod")
        if ins and ins.status != "ok":
            found.append(Finding(ins.index, "insmod", f"insmod failed (exit {ins.fields.get('rc', '?')})",
                                 excerpt_since_previous(ins)))
        kp = by_name.get("kprobes")
        if kp and kp.status != "ok":
            found.append(Finding(kp.index, "kprobes", "/sys/kernel/debug/kprobes/list is not readable",
                                 excerpt_since_previous(kp)))
        elif kp:
            missing, unhealthy = match_probes(probes, v.kprobes)
            if missing or unhealthy:
                what = ([f"not registered: {', '.join(missing)}"] if missing else []) + unhealthy
                found.append(Finding(kp.index, "kprobes", "; ".join(what), v.kprobes[:EXCERPT] or ["(list empty)"]))
        hits = by_name.get("hits")
        if not needs_hits and ins and ins.status == "ok" and "trigger" in by_name:
            unproven = _proof_by_count(v, steps, lines, probes, expect, found, excerpt_since_previous,
                                       uses_kprobes)
        elif hits and hits.status == "ok":
            try:
                v.hits = [int(x) for x in hits.fields.get("value", "").split(",") if x != ""]
            except ValueError:
                v.hits = []
            names = [f"{s}+{o:#x}" if o else s for s, o in probes]
            shown = ", ".join(f"{n}={h}" for n, h in zip(names, v.hits)) or hits.fields.get("value", "")
            if not v.hits or any(h <= 0 for h in v.hits) or (probes and len(v.hits) != len(probes)):
                found.append(Finding(hits.index, "hits", f"a probe never fired during the trigger ({shown})",
                                     excerpt_since_previous(hits)))
            v.proof = f"the module's hit counters (/sys/module/{module}/parameters/hits: {shown})"
        elif hits and needs_hits:
            found.append(Finding(hits.index, "hits", f"/sys/module/{module}/parameters/hits is missing",
                                 excerpt_since_previous(hits)))
        rm = by_name.get("rmmod")
        if rm and rm.status != "ok":
            found.append(Finding(rm.index, "rmmod", f"rmmod failed (exit {rm.fields.get('rc', '?')})",
                                 excerpt_since_previous(rm)))
    taint = by_name.get("taint")
    if taint:
        try:
            after = int(taint.fields.get("value", "0"))
            before = int(mount.fields.get("taint", "0")) if mount else 0
        except ValueError:
            after = before = 0
        v.taint = after
        new = after & ~before & ~ALLOWED_TAINT
        if new:
            found.append(Finding(taint.index, "taint", f"the kernel is tainted {taint_flags(new)} "
                                 f"(only O and E are expected; now {taint_flags(after)})",
                                 excerpt_since_previous(taint)))
    # 3. a run that did not finish
    if "done" not in by_name:
        step = in_progress(steps, len(lines))
        panic = next((ln.strip() for ln in lines[start:] if PANIC.search(ln)), "")
        if panic:
            reason = f"the kernel panicked during {step}: {panic}"
        elif timed_out:
            reason = f"no result within the timeout of {timeout:.0f}s: the guest hung during {step}"
        else:
            reason = f"the VM stopped during {step} (qemu exit code {exit_code})"
        found.append(Finding(len(lines), step, reason, lines[-EXCERPT:]))
    v.findings = sorted(found, key=lambda f: f.index)
    if v.findings:
        first = v.findings[0]
        v.status, v.step, v.reason, v.excerpt = FAIL, first.step, first.reason, first.excerpt
    elif unproven:
        v.status, v.step, v.reason = UNPROVEN, "hits", unproven
    return v


def _no_init(lines: list[str], timed_out: bool, timeout: float, exit_code: int | None) -> Verdict:
    panic = next((ln.strip() for ln in lines if PANIC.search(ln)), "")
    if panic:
        reason = f"the kernel panicked before /init ran: {panic}"
        if timed_out:
            reason += f" (and hung until the timeout of {timeout:.0f}s)"
    elif timed_out:
        reason = f"the kernel did not reach /init within the timeout of {timeout:.0f}s"
    else:
        reason = f"the VM stopped before /init ran (qemu exit code {exit_code})"
    i = next((k for k, ln in enumerate(lines) if PANIC.search(ln)), None)
    excerpt = lines[max(0, i - 10): i + 10] if i is not None else lines[-EXCERPT:]
    return Verdict(ERROR, "boot", reason, excerpt)
