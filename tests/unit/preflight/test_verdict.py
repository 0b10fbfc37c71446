"""Verdicts from recorded host facts and modules compiled here: every reason a module will not load."""
import dataclasses

from kmod.preflight import kernels
from kmod.preflight.verdict import FAIL, PASS, WARN, judge
from tests.unit.preflight.conftest import recorded


def crcs(f, **wrong):
    """__versions entries with the host's own CRCs (from its Module.symvers), some made wrong."""
    from kmod.lint.target import parse_symvers
    exports = parse_symvers(f.symvers)
    out = {n: exports[n][0] for n in ("register_kprobe", "_printk")}
    out.update(wrong)
    return out


def kind(f):
    return kernels.classify(f.release, f.machine, f.debian_version)


def test_pinned_host_loads_the_built_cell(vm_facts, module_info):
    v = judge(vm_facts, kind(vm_facts), module_info(crcs(vm_facts)), "vm")
    assert v.status == PASS and v.route == "prebuilt" and "clone_probe/bookworm-6.1/x86_64" in v.reason
    assert "2 CRCs" in v.reason and kind(vm_facts).kind == kernels.PINNED


def test_crc_mismatch_falls_back_to_dkms_then_fails_without_headers(vm_facts, module_info):
    info = module_info(crcs(vm_facts, register_kprobe=0x1234))
    v = judge(vm_facts, kind(vm_facts), info, "vm")
    assert v.status == PASS and v.route == "dkms" and "dkms builds it on the host" in v.reason
    no_headers = dataclasses.replace(vm_facts, headers=False)
    v = judge(no_headers, kind(no_headers), info, "vm")
    assert v.status == FAIL and "disagrees about version of symbol register_kprobe" in v.reason
    assert f"no kernel headers for {vm_facts.release}" in v.reason


def test_signature_enforcement_refuses_unsigned_builds_and_an_unenrolled_dkms_key(vm_facts, module_info):
    info = module_info(crcs(vm_facts))
    for facts, why in ((dataclasses.replace(vm_facts, sig_enforce=True), "module.sig_enforce=1"),
                       (dataclasses.replace(vm_facts, lockdown="integrity"), "lockdown=integrity")):
        v = judge(facts, kind(facts), info, "vm")
        assert v.status == FAIL and why in v.reason, v.reason
        assert "is unsigned" in v.reason and "is not enrolled" in v.reason
    enrolled = dataclasses.replace(vm_facts, sig_enforce=True, mok="/var/lib/dkms/mok.pub is already enrolled")
    v = judge(enrolled, kind(enrolled), info, "vm")
    assert v.status == PASS and v.route == "dkms"


def test_kernel_cannot_load_modules_or_has_no_kprobes(vm_facts, module_info):
    info = module_info(crcs(vm_facts))
    cases = [(dataclasses.replace(vm_facts, config={**vm_facts.config, "CONFIG_KPROBES": "n"}), "kprobes are disabled"),
             (dataclasses.replace(vm_facts, config={**vm_facts.config, "CONFIG_MODULES": "n"}), "no loadable module"),
             (dataclasses.replace(vm_facts, sysctl={**vm_facts.sysctl, "modules_disabled": "1"}), "modules_disabled=1"),
             (dataclasses.replace(vm_facts, free_kb=1024, headers=True), None)]
    for facts, why in cases[:3]:
        v = judge(facts, kind(facts), info, "vm")
        assert v.status == FAIL and why in v.reason


def test_probe_target_missing_or_blacklisted_in_that_kernel(vm_facts, module_info):
    v = judge(vm_facts, kind(vm_facts), module_info(crcs(vm_facts), probes=("kmod_no_such_function",)), "vm")
    assert v.status == FAIL and f"kmod_no_such_function is not in vm ({vm_facts.release})'s symbols" in v.reason
    # a blacklisted function of that kernel: the first of its debugfs blacklist
    line = vm_facts.blacklist.splitlines()[0]
    start, name = line.split()[0].split("-")[0], line.split()[1]
    facts = dataclasses.replace(vm_facts, kallsyms=vm_facts.kallsyms + [f"{start[2:]} T {name}"])
    v = judge(facts, kind(facts), module_info(crcs(vm_facts), probes=(name,)), "vm")
    assert v.status == FAIL and "blacklist" in v.reason and name in v.reason


def test_blacklist_unread_without_root_is_a_warning(vm_facts, module_info):
    facts = dataclasses.replace(vm_facts, blacklist=None, blacklist_status="needs-root", privilege="none")
    v = judge(facts, kind(facts), module_info(crcs(vm_facts)), "vm")
    assert v.status == WARN and any("needs root" in x.message for x in v.findings)


def test_gpl_only_symbols_under_another_license(vm_facts, module_info):
    v = judge(vm_facts, kind(vm_facts), module_info(crcs(vm_facts), license="Proprietary"), "vm")
    assert v.status == FAIL and "GPL-only" in v.reason and "register_kprobe" in v.reason


def test_dkms_too_old_missing_or_no_room(vm_facts, module_info):
    info = module_info(crcs(vm_facts, register_kprobe=1))     # the cell does not load: dkms must build it
    for facts, why in ((dataclasses.replace(vm_facts, dkms="2.8.4"), "dkms 2.8.4 is older than 3.0.3-4~"),
                       (dataclasses.replace(vm_facts, dkms=None), "dkms is not installed"),
                       (dataclasses.replace(vm_facts, free_kb=4096), "only 4 MB free under /lib/modules")):
        v = judge(facts, kind(facts), info, "vm")
        assert v.status == FAIL and why in v.reason, v.reason


def test_unpinned_debian_kernel_points_at_auto_pin():
    from kmod.preflight.verdict import ModuleInfo
    from kmod.spec import Module, parse_probe
    f = recorded("facts-bookworm-cloud.txt")
    k = kind(f)
    assert k.kind == kernels.DEBIAN and k.pin.name == "bookworm-6.1" and k.flavour == "cloud-amd64"
    assert k.auto_pin_name == "bookworm-6.1.0-56-cloud-amd64"
    info = ModuleInfo(Module("clone_probe", probes=(parse_probe("kernel_clone"),)), [], {"kernel_clone": "kprobe"}, "3.0.3-4~")
    v = judge(f, k, info, "cloud")
    assert v.status == FAIL and "nothing built for x86_64" in v.reason and "--auto-pin" in v.reason


def test_other_kernel_only_dkms_can_build_it(vm_facts, module_info):
    f = dataclasses.replace(vm_facts, release="6.18.44-custom", version="#1 SMP PREEMPT_DYNAMIC", headers=False,
                            vermagic="6.18.44-custom SMP preempt mod_unload modversions")
    k = kind(f)
    assert k.kind == kernels.OTHER
    v = judge(f, k, module_info(crcs(vm_facts)), "h")
    assert v.status == FAIL and "only dkms on the host can build for this kernel" in v.reason


def test_arch_limits_and_unknown_arches(vm_facts, module_info):
    v = judge(vm_facts, kind(vm_facts), module_info(crcs(vm_facts), arches=("arm64",)), "vm")
    assert v.status == FAIL and "limited to arm64" in v.reason
    f = dataclasses.replace(vm_facts, machine="sparc64")
    v = judge(f, kind(f), module_info(crcs(vm_facts)), "vm")
    assert v.status == FAIL and "sparc64 is not an arch kmod builds for" in v.reason


def test_a_failed_boot_test_disqualifies_the_cell(vm_facts, module_info):
    info = module_info(crcs(vm_facts), boot={"verdict": "fail", "step": "trigger", "reason": "WARNING on the console"})
    v = judge(dataclasses.replace(vm_facts, headers=False), kind(vm_facts), info, "vm")
    assert v.status == FAIL and "its boot test failed at trigger" in v.reason


def _without(f, name):
    """The host's Module.symvers without `name`: a kernel that does not export it."""
    text = "\n".join(ln for ln in f.symvers.splitlines() if ln.split("\t")[1:2] != [name])
    assert text != f.symvers
    return dataclasses.replace(f, symvers=text)


def test_an_import_the_other_kernel_does_not_export_is_a_warning_for_dkms(vm_facts, module_info):
    """A kernel that is not a pinned suite's: its Module.symvers decides more than the GPL-only rule.
    An import that neither it nor the module's own .ko files export: dkms builds from source there, so
    a warning (the source may use another symbol on that kernel)."""
    f = _without(dataclasses.replace(vm_facts, release="6.18.44-custom", version="#1 SMP PREEMPT_DYNAMIC",
                                     vermagic="6.18.44-custom SMP preempt mod_unload modversions"), "unregister_kprobes")
    k = kind(f)
    assert k.kind == kernels.OTHER
    v = judge(f, k, module_info(crcs(vm_facts)), "h")
    assert v.status == WARN and v.route == "dkms", v.reason
    [x] = [x for x in v.findings if x.rule == "undefined-symbol"]
    assert "imports unregister_kprobes, which neither h's kernel (its Module.symvers) nor" in x.message
    # every import exported: a pass, as before
    f = dataclasses.replace(vm_facts, release="6.18.44-custom", version="#1 SMP PREEMPT_DYNAMIC")
    assert judge(f, kind(f), module_info(crcs(vm_facts)), "h").status == PASS


def test_a_built_cell_whose_import_the_kernel_lacks_does_not_load(vm_facts, module_info):
    f = _without(dataclasses.replace(vm_facts, headers=False), "unregister_kprobes")
    v = judge(f, kind(f), module_info(crcs(vm_facts)), "vm")
    assert v.status == FAIL and "unregister_kprobes is not exported by vm's kernel" in v.reason, v.reason
    assert "Unknown symbol unregister_kprobes" in v.reason


def test_a_sibling_ko_that_exports_the_import_provides_it(vm_facts, module_info, build):
    """One package, two .ko files: what the other exports resolves the import (modprobe loads it first)."""
    from pathlib import Path

    from kmod.lint import files
    from kmod.lint.elf import parse
    from tests.unit.lint.test_lint_deps import EXPORT
    ko = build("x86_64", EXPORT + """
void unregister_kprobes(void *kps, int num) {}
EXPORT(unregister_kprobes, "_gpl", "");
int init_module(void) { return 0; }
void cleanup_module(void) {}
""", name="provider")
    sibling = (str(ko), parse(files.read_module(Path(ko), Path(ko).read_bytes())))
    info = module_info(crcs(vm_facts))
    info.built[:] = [dataclasses.replace(b, siblings=(sibling,)) for b in info.built]
    f = _without(dataclasses.replace(vm_facts, headers=False), "unregister_kprobes")
    v = judge(f, kind(f), info, "vm")
    assert v.status == PASS and v.route == "prebuilt", v.reason
