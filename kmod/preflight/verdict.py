"""Will this module load and work on this host? One verdict per host and module, with its reason in one
line. The module-level checks are the lint's own rules (kmod.lint.against, kmod.lint.license), run
against the host's kernel as its facts describe it; the rest is the host's policy and tooling:

  fail  the kernel cannot load modules or has no kprobes; a probe target is missing or blacklisted in
        that kernel; GPL-only symbols under a non-GPL license; signature enforcement (module.sig_enforce,
        lockdown, Secure Boot) without a signature the host trusts; or no built cell matches the kernel
        (vermagic, CRCs) and dkms cannot build it there (no headers, no dkms, dkms too old, no room).
  warn  it will load, but something could not be checked (no root for the kprobe blacklist, no config).
  pass  a built cell loads as is, or dkms on the host builds it.
"""
from dataclasses import dataclass, field
from pathlib import Path

from ..archive.debversion import compare
from ..lint import against, license, ruledata, signature
from ..lint.elf import Elf
from ..spec import Module
from .facts import Facts, rules
from .kernels import DEBIAN, PINNED, Kernel

PASS, WARN, FAIL = "pass", "warn", "fail"
RANK = {PASS: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Built:
    """A built cell of a module (from the manifest), its .ko parsed once per run."""
    cell: str
    kernel: str
    arch: str
    release: str
    ko: Path
    elf: Elf
    signed: bool
    boot: dict = field(default_factory=dict, compare=False)   # its boot test's record, when it had one
    siblings: tuple = field(default=(), compare=False)        # (path, Elf) of the cell's other .ko files


@dataclass
class ModuleInfo:
    module: Module
    built: list[Built]
    probed: dict[str, str]           # probed symbol -> kprobe / kretprobe
    dkms_needs: str                  # the oldest dkms that understands its dkms.conf

    @property
    def imports(self) -> set[str]:
        return {n for b in self.built for n in b.elf.undefined}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str                    # error, warning, info
    message: str


@dataclass
class Verdict:
    module: str
    status: str
    reason: str
    route: str = ""                  # prebuilt (a built cell loads as is) or dkms (built on the host)
    cell: str = ""
    findings: list[Finding] = field(default_factory=list)

    def record(self) -> dict:
        return {"module": self.module, "verdict": self.status, "reason": self.reason, "route": self.route,
                "cell": self.cell, "findings": [f.__dict__ for f in self.findings]}


def is_signed(data: bytes) -> bool:
    return signature.read(data) is not None


def enforcement(f: Facts) -> str:
    """Why this kernel loads only signed modules ("" when it does not)."""
    if f.lockdown in ("integrity", "confidentiality"):
        why = f"lockdown={f.lockdown}"
        return why + (" (Secure Boot)" if f.secure_boot else "")
    if f.lockdown is None and f.secure_boot and _sb_lockdown(f) == "y":
        # Debian's (and Fedora's) kernels lock down to integrity at boot under Secure Boot
        return ("Secure Boot, under which this kernel locks down (CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT=y; "
                "/sys/kernel/security/lockdown was not readable)")
    if f.sig_enforce:
        return "module.sig_enforce=1"
    if f.config.get("CONFIG_MODULE_SIG_FORCE") == "y":
        return "CONFIG_MODULE_SIG_FORCE=y"
    return ""


def _sb_lockdown(f: Facts) -> str:
    """CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT: y, n ("is not set"), or "" when the config does not say."""
    return f.config.get("CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT", "") if f.config_source else ""


def _dkms_blocker(f: Facts, info: ModuleInfo) -> str:
    """Why dkms cannot build the module on this host ("" when it can)."""
    if not f.headers:
        return f"no kernel headers for {f.release} (install linux-headers-{f.release} or your distribution's kernel-devel)"
    if not f.dkms:
        return "dkms is not installed"
    if compare(f.dkms, info.dkms_needs) < 0:
        return f"dkms {f.dkms} is older than {info.dkms_needs}, which the module's dkms.conf needs"
    if f.pkgtool not in ("dpkg", "rpm"):
        return "neither dpkg nor rpm is there to install the DKMS package"
    need = rules()["min_free_mb"]
    if f.free_kb is not None and f.free_kb < need * 1024:
        return f"only {f.free_kb // 1024} MB free under /lib/modules (dkms needs about {need} MB)"
    return ""


def unexported(b: Built, exports: dict) -> list[str]:
    """The cell's undefined symbols that neither the kernel (its Module.symvers: vmlinux and its in-tree
    modules) nor the cell's own other .ko files export: insmod refuses the module ('Unknown symbol')."""
    from ..lint import deps
    f = deps.facts(b.elf, str(b.ko))
    provided = {s for _, e in b.siblings for s in deps.exports_of(e)}
    return sorted(n for n in f["needs"] if n not in exports and n not in provided and n not in f["weak"])


def _shown(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _mok_enrolled(f: Facts) -> bool:
    return "already enrolled" in f.mok


def judge(f: Facts, k: Kernel, info: ModuleInfo, host: str, exports: dict | None = None) -> Verdict:
    """`exports`: the kernel's Module.symvers from its pin's locked headers, for a host that runs exactly
    a pinned kernel without its headers installed (its own Module.symvers wins when it has one)."""
    m = info.module
    found: list[Finding] = []

    def fail(rule: str, message: str) -> Verdict:
        return Verdict(m.name, FAIL, message, findings=found + [Finding(rule, "error", message)])

    a = k.arch
    if a is None:
        return fail("arch-unsupported", f"{f.machine} is not an arch kmod builds for")
    if m.arches and a.name not in m.arches:
        return fail("arch-excluded", f"the module is limited to {', '.join(m.arches)} (kmod.toml `arches`); "
                                     f"this host is {a.name}")
    if f.sysctl.get("modules_disabled") == "1":
        return fail("modules-disabled", "module loading is switched off (kernel.modules_disabled=1) until reboot")
    if f.config_on("CONFIG_MODULES") is False:
        return fail("no-modules", "the kernel has no loadable module support (CONFIG_MODULES is not set)")
    if f.config_on("CONFIG_KPROBES") is False:
        return fail("kprobes-disabled", "kprobes are disabled in this kernel (CONFIG_KPROBES is not set)")
    if m.template == "kretprobe" and f.config_on("CONFIG_KRETPROBES") is False:
        return fail("kprobes-disabled", "kretprobes are disabled in this kernel (CONFIG_KRETPROBES is not set)")
    if not f.config_source:
        found.append(Finding("config-unread", "warning", "no kernel config readable (/boot/config-*, "
                             "/proc/config.gz): CONFIG_MODULES and CONFIG_KPROBES not checked"))

    t = f.target(host, a.name)
    if t.exports is None and exports is not None:
        t.exports = exports
    errors = []
    for x in against.probe_targets(info.probed, t):
        (errors if x.severity == "error" else found).append(Finding(x.rule, x.severity, x.message))
    if errors:
        return Verdict(m.name, FAIL, errors[0].message, findings=found + errors)
    if info.probed and f.blacklist is None:
        why = {"needs-root": "it needs root or passwordless sudo", "no-debugfs": "debugfs is not mounted"}.get(
            f.blacklist_status, "it is not readable")
        found.append(Finding("blacklist-unread", "warning",
                             f"the kprobe blacklist was not read ({why}): blacklisted targets not checked"))
    if f.kallsyms_readable and not f.addresses_visible and f.kallsyms:
        found.append(Finding("kallsyms-restricted", "info",
                             f"kallsyms addresses are hidden (kptr_restrict={f.sysctl.get('kptr_restrict', '?')}, "
                             "not root): probe targets checked by name only"))

    # GPL-only exports of this kernel under a non-GPL license stop any build, prebuilt or dkms.
    gpl_only = t.gpl_only() if t.exports is not None else ruledata.gpl_only_default()
    source = f"{host}'s Module.symvers" if t.exports is not None else "the pinned kernels' Module.symvers"
    same_arch = [b for b in info.built if b.arch == a.name]
    if same_arch:
        lic = license.check(same_arch[0].elf, gpl_only, source)
        if lic:
            return Verdict(m.name, FAIL, lic[0].message, findings=found + [Finding(x.rule, x.severity, x.message)
                                                                           for x in lic])
    elif m.template and m.license not in ruledata.gpl_compatible():
        return fail("license-gpl-only-symbol", f"license {m.license!r} is not GPL-compatible, and register_kprobe() "
                                               "is a GPL-only export: no kernel links the module")

    policy = enforcement(f)
    if not policy and f.lockdown is None and f.secure_boot and _sb_lockdown(f) != "n":
        found.append(Finding("signature-policy-unknown", "warning",
                             "Secure Boot is on, the lockdown state (/sys/kernel/security/lockdown) was not readable "
                             "and the kernel config does not say CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT: if this kernel "
                             "locks down under Secure Boot, only signed modules load (read it as root)"))
    cell_problems, unsigned = [], []
    for b in (b for b in same_arch if b.release == f.release):
        problems = [x for x in against.check(b.elf, a.name, t) if x.severity == "error"]
        missing = unexported(b, t.exports) if t.exports is not None else []
        if missing:
            problems.append(Finding("undefined-symbol", "error",
                                    f"{_shown(missing)} {'is' if len(missing) == 1 else 'are'} not exported by "
                                    f"{host}'s kernel (its Module.symvers) nor by the module's own .ko files: "
                                    f"insmod fails with 'Unknown symbol {missing[0]}'"))
        if b.boot.get("verdict") == "fail":
            problems.append(Finding("boot-test-failed", "error", f"its boot test failed at {b.boot.get('step')}: "
                                                                 f"{b.boot.get('reason')}"))
        if problems:
            cell_problems.append(f"{b.cell}: {problems[0].message}")
            continue
        if policy and not b.signed:
            unsigned.append(b.cell)
            continue
        checked = [n for n in b.elf.versions if t.exports and n in t.exports]
        if policy:
            found.append(Finding("signature-trust", "warning", f"{b.cell} is signed; {host} must trust its key"))
        if b.boot.get("verdict") == "error":
            found.append(Finding("boot-test-error", "warning", f"{b.cell}'s boot test could not run: "
                                                               f"{b.boot.get('reason')}"))
        detail = f"vermagic '{t.vermagic}'" if t.vermagic else "vermagic not read"
        if t.exports is None:
            detail += ", CRCs not checked (no Module.symvers)"
        else:
            detail += f", {len(checked)} CRCs" + (f" against {k.pin.name}'s headers" if exports is t.exports else "")
        return Verdict(m.name, WARN if _warnings(found) else PASS, f"the built cell {b.cell} loads as is ({detail})",
                       "prebuilt", b.cell, found)

    dkms_no = _dkms_blocker(f, info)
    key_not_trusted = ""
    if not dkms_no and policy and not _mok_enrolled(f):
        key_not_trusted = (f"dkms's signing key ({f.dkms_certificate}) is not enrolled"
                           + (" (no EFI: MOK keys cannot be)" if not f.efi else ""))
    if not dkms_no and not key_not_trusted:
        if t.exports is not None and same_arch:
            # what every build of the module imports, whatever kernel it was built for, and this kernel
            # lacks: a warning, not a failure, as dkms builds it there from source (its source may pick
            # another symbol on this kernel: printk before 5.15, _printk after)
            missing = sorted(set.intersection(*(set(unexported(b, t.exports)) for b in same_arch)))
            if missing:
                found.append(Finding("undefined-symbol", "warning",
                                     f"every build of it imports {_shown(missing)}, which neither {host}'s kernel "
                                     f"(its Module.symvers) nor the module's own .ko files export: dkms's build "
                                     f"there fails, or insmod refuses it ('Unknown symbol {missing[0]}'), unless "
                                     f"its source uses another symbol on this kernel"))
        return Verdict(m.name, WARN if _warnings(found) else PASS,
                       f"dkms builds it on the host (headers for {f.release}, dkms {f.dkms})", "dkms", "", found)

    if policy and (unsigned or key_not_trusted) and not cell_problems:
        # the one thing in the way is the signature policy: say so first
        why = [f"{', '.join(unsigned)} {'is' if len(unsigned) == 1 else 'are'} unsigned"] if unsigned else \
              [f"no built cell matches {f.release}"]
        why.append(key_not_trusted or f"dkms cannot build it there: {dkms_no}")
        reason = f"the kernel loads only modules signed by a key it trusts ({policy}): {'; '.join(why)}"
        return Verdict(m.name, FAIL, reason, findings=found + [Finding("signature-required", "error", reason)])
    dkms_no = dkms_no or key_not_trusted
    if cell_problems:
        prebuilt = f"no built cell loads there ({cell_problems[0]})"
    else:
        releases = sorted({b.release for b in same_arch})
        prebuilt = (f"no built cell matches {f.release}" +
                    (f" (built for {', '.join(releases)})" if releases else f" (nothing built for {a.name})"))
    reason = f"{prebuilt}, and dkms cannot build it there: {dkms_no}"
    if k.kind == DEBIAN:
        reason += f"; --auto-pin locks and builds exactly {k.release}"
    elif k.kind == PINNED and not cell_problems:
        reason += (f"; it is pinned: `invoke build --kernel {k.pin.name} --flavour {k.pin_flavour} --arch "
                   f"{k.arch.name}` (or --auto-pin) builds it")
    elif not cell_problems:
        reason += "; only dkms on the host can build for this kernel"
    return Verdict(m.name, FAIL, reason, findings=found + [Finding("no-build", "error", reason)])


def _warnings(found: list[Finding]) -> bool:
    return any(x.severity == "warning" for x in found)
