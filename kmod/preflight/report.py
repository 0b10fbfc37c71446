"""The preflight report: a table for people (one line per host and module, the reason in one line),
JSON for scripts, JUnit for CI (failure = the module will not load there, error = the host could not be
read); and the exit code, as the lint's: 0 nothing reached --fail-on, 2 a verdict did, 1 a host could not
be read (or a usage or environment error)."""
import json
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from .. import junit
from .facts import Facts
from .hosts import Host
from .kernels import Kernel
from .verdict import FAIL, PASS, RANK, WARN, Verdict

ERROR = "error"
FORMATS = ("text", "json", "junit")
FAIL_ON = (FAIL, WARN)
EXIT_OK, EXIT_ERROR, EXIT_FAIL = 0, 1, 2


@dataclass
class HostResult:
    host: Host
    label: str = ""
    facts: Facts | None = None
    kernel: Kernel | None = None
    error: str = ""                       # one line: why the host could not be read
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    started: float = 0.0                  # wall clock (time.time()) when it was first contacted
    trials: list = field(default_factory=list)    # install.Trial per module (--install)
    attention: str = ""                   # the host was left changed: what and why

    @property
    def worst(self) -> str:
        if self.error:
            return ERROR
        return max((v.status for v in self.verdicts), key=RANK.__getitem__, default=PASS)

    def record(self) -> dict:
        f, k = self.facts, self.kernel
        rec = {"host": self.host.name, "address": self.label, "seconds": round(self.seconds, 3),
               "started": round(self.started, 3),
               "error": self.error, "notes": self.notes, "attention": self.attention,
               "modules": [v.record() for v in self.verdicts], "install": [t.record() for t in self.trials]}
        if f is not None:
            rec["facts"] = {
                "release": f.release, "machine": f.machine, "version": f.version, "os": f.os.get("PRETTY_NAME", ""),
                "privilege": f.privilege, "kptr_restrict": f.sysctl.get("kptr_restrict"),
                "tainted": f.sysctl.get("tainted"), "lockdown": f.lockdown, "sig_enforce": f.sig_enforce,
                "efi": f.efi, "secure_boot": f.secure_boot, "config_source": f.config_source,
                "config": f.config, "kallsyms_readable": f.kallsyms_readable, "kallsyms_from": f.kallsyms_from,
                "kallsyms_addresses": f.addresses_visible, "blacklist_read": f.blacklist is not None,
                "blacklist_status": f.blacklist_status, "headers": f.headers, "kdir": f.kdir,
                "symvers": f.symvers_source, "dkms": f.dkms, "package_manager": f.pkgtool,
                "free_mb": f.free_kb // 1024 if f.free_kb is not None else None}
        if k is not None:
            rec["kernel"] = {"kind": k.kind, "pin": k.pin.name if k.pin else "", "abi": k.abi,
                             "flavour": k.flavour, "debian_version": k.version}
        return rec


def exit_code(results: list[HostResult], fail_on: str = FAIL) -> int:
    """1 when a host could not be read (the answer is incomplete), else 2 when a verdict reached
    --fail-on, else 0 (the boot test's order)."""
    if any(r.error or r.attention for r in results):
        return EXIT_ERROR
    if any(RANK[v.status] >= RANK[fail_on] for r in results for v in r.verdicts):
        return EXIT_FAIL
    if any(RANK.get(t.status, 0) >= RANK[fail_on] for r in results for t in r.trials):
        return EXIT_FAIL
    return EXIT_OK


def rows(results: list[HostResult]) -> list[tuple[str, str, str, str, str]]:
    out = []
    for r in results:
        kernel = r.facts.release if r.facts else "-"
        if r.error:
            out.append((r.host.name, kernel, "-", ERROR, r.error))
            continue
        trials = {t.module: t for t in r.trials}
        for v in r.verdicts:
            t = trials.get(v.module)
            status, reason = (t.status, t.reason) if t else (v.status, v.reason)
            out.append((r.host.name, kernel, v.module, status, reason))
    return out


def format_text(results: list[HostResult]) -> str:
    table = [("HOST", "KERNEL", "MODULE", "VERDICT", "REASON"), *rows(results)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in table]
    for r in results:
        notes = list(r.notes)
        for v in r.verdicts:
            notes += [f"{v.module}: {x.message}" for x in v.findings if x.severity != "error"]
        if r.attention:
            notes.insert(0, f"NEEDS ATTENTION: {r.attention}")
        for n in notes:
            lines.append(f"  {r.host.name}: {n}")
    lines.append(summary(results))
    return "\n".join(lines) + "\n"


def summary(results: list[HostResult]) -> str:
    counts = {s: 0 for s in (PASS, WARN, FAIL, ERROR)}
    for row in rows(results):
        counts[row[3]] = counts.get(row[3], 0) + 1
    unreachable = sum(bool(r.error) for r in results)
    attention = sum(bool(r.attention) for r in results)
    text = (f"{len(results)} host(s): {counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail, "
            f"{unreachable} not read")
    return text + (f", {attention} NEED ATTENTION" if attention else "")


def manifest_record(r: HostResult) -> dict:
    """What dist/manifest.json keeps of a host (its `preflight` section; dist/preflight.json has it all):
    the kernel it runs, the verdict and reason per module (--install's trial when there was one)."""
    k = r.kernel
    trials = {t.module: t for t in r.trials}
    modules = []
    for v in r.verdicts:
        t = trials.get(v.module)
        modules.append({"module": v.module, "verdict": t.status if t else v.status,
                        "reason": t.reason if t else v.reason, "cell": v.cell, "installed": t is not None})
    return {"host": r.host.name, "address": r.label, "verdict": r.worst, "error": r.error, "attention": r.attention,
            "release": r.facts.release if r.facts is not None else "", "pin": k.pin.name if k is not None and k.pin else "",
            "kernel_kind": k.kind if k is not None else "", "at": round(r.started, 3), "seconds": round(r.seconds, 3),
            "modules": modules}


def to_json(results: list[HostResult]) -> dict:
    return {"format": 1, "hosts": [r.record() for r in results], "summary": summary(results)}


def format_json(results: list[HostResult]) -> str:
    return json.dumps(to_json(results), indent=2) + "\n"


def format_junit(results: list[HostResult], fail_on: str = FAIL) -> str:
    suite = junit.suite("kmod preflight")
    for r in results:
        if r.error:
            ET.SubElement(junit.case(suite, f"preflight.{r.host.name}", "(host)", r.seconds), "error",
                          message=r.error, type="host")
            continue
        trials = {t.module: t for t in r.trials}
        for v in r.verdicts:
            case = junit.case(suite, f"preflight.{r.host.name}", v.module, r.seconds / max(1, len(r.verdicts)))
            t = trials.get(v.module)
            status, reason = (t.status, t.reason) if t else (v.status, v.reason)
            if RANK.get(status, 2) >= RANK[fail_on]:
                el = ET.SubElement(case, "failure", message=reason, type=status)
                el.text = "\n".join(x.message for x in v.findings)
            out = ET.SubElement(case, "system-out")
            out.text = f"kernel: {r.facts.release if r.facts else '?'}\nroute: {v.route}\ncell: {v.cell}\n"
        if r.attention:
            ET.SubElement(junit.case(suite, f"preflight.{r.host.name}", "(cleanup)"), "error",
                          message=r.attention, type="attention")
    return junit.document(suite).decode()


def format_report(results: list[HostResult], fmt: str, fail_on: str = FAIL) -> str:
    if fmt == "json":
        return format_json(results)
    if fmt == "junit":
        return format_junit(results, fail_on)
    return format_text(results)
