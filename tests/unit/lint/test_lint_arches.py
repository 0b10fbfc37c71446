"""What the lint knows of each arch's kernels from the arch data: the arch and the vermagic words a
.config means, and a kernel that refuses probes at a function's entry (riscv64 without
KPROBES_ON_FTRACE), checked against small kernel trees made here."""
import pytest

from kmod import arch as archmod
from kmod.lint import lint_paths
from kmod.lint.target import _arch_from_config, vermagic_from_config

from .conftest import rules_of

BASE = {"CONFIG_SMP": "y", "CONFIG_MODULE_UNLOAD": "y", "CONFIG_MODVERSIONS": "y"}
CONFIGS = {
    "x86_64": ({"CONFIG_X86_64": "y"}, ""),
    "arm64": ({"CONFIG_ARM64": "y"}, " aarch64"),
    "ppc64el": ({"CONFIG_PPC64": "y", "CONFIG_CPU_LITTLE_ENDIAN": "y", "CONFIG_MPROFILE_KERNEL": "y",
                 "CONFIG_RELOCATABLE": "y"}, " mprofile-kernel relocatable"),
    "s390x": ({"CONFIG_S390": "y", "CONFIG_64BIT": "y"}, ""),
    "riscv64": ({"CONFIG_RISCV": "y", "CONFIG_64BIT": "y"}, " riscv"),
}


@pytest.mark.parametrize("arch_name", sorted(CONFIGS))
def test_arch_and_vermagic_from_a_config(arch_name):
    config, words = CONFIGS[arch_name]
    config = {**BASE, **config}
    assert _arch_from_config(config) == arch_name
    release = f"1.2.3-{archmod.get(arch_name).kernel_flavour}"
    assert vermagic_from_config(release, config) == f"{release} SMP mod_unload modversions{words}"
    assert vermagic_from_config(release, {**config, "CONFIG_PREEMPT_RT": "y"}).split()[2] == "preempt_rt"
    # 6.12's rt kernels also set PREEMPT_BUILD, which vermagic.h tests first
    assert vermagic_from_config(release, {**config, "CONFIG_PREEMPT_RT": "y", "CONFIG_PREEMPT_BUILD": "y"}
                                ).split()[2] == "preempt"


def riscv_tree(root, ftrace_probes: bool):
    tree = root / "linux-headers-6.12.0-1-riscv64"
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text("6.12.0-1-riscv64\n")
    (tree / ".config").write_text("".join(f"{k}=y\n" for k in ("CONFIG_RISCV", "CONFIG_64BIT", "CONFIG_SMP",
                                                             "CONFIG_DYNAMIC_FTRACE"))
                                  + ("CONFIG_KPROBES_ON_FTRACE=y\n" if ftrace_probes else ""))
    (tree / "Module.symvers").write_text("".join(f"0x00000000\t{n}\tvmlinux\tEXPORT_SYMBOL_GPL\t\n" for n in
                                                 ("register_kretprobe", "unregister_kretprobe",
                                                  "register_kprobe", "unregister_kprobe")))
    return tree


KRETPROBE = """
    static int ret_handler(struct kretprobe_instance *ri, struct pt_regs *regs) { return 0; }
    static struct kretprobe rp = { .kp = { .symbol_name = "do_sys_openat2" }, .handler = ret_handler };
    int init_module(void) { return register_kretprobe(&rp); }
    void cleanup_module(void) { unregister_kretprobe(&rp); }
"""
KPROBE = """
    static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
    static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
    int init_module(void) { return register_kprobe(&kp); }
    void cleanup_module(void) { unregister_kprobe(&kp); }
"""


def lint_against(obj, tree):
    r = lint_paths([obj], target=str(tree), jobs=1, use_cache=False).modules[0]
    return [x for x in rules_of(r) if x[0] not in ("vermagic-mismatch", "probe-targets-unchecked")]


def test_a_kretprobe_where_the_kernel_refuses_function_entries_is_said_before_boot(build, tmp_path):
    obj = build("riscv64", KRETPROBE, vermagic=False)
    refused = lint_paths([obj], target=str(riscv_tree(tmp_path / "a", False)), jobs=1, use_cache=False).modules[0]
    assert ("kretprobe-entry-refused", "error") in rules_of(refused)
    f = next(f for f in refused.findings if f.rule == "kretprobe-entry-refused")
    assert "do_sys_openat2" in f.message and "KPROBES_ON_FTRACE" in f.message and "0x8" in f.message
    assert lint_against(obj, riscv_tree(tmp_path / "b", True)) == []     # that kernel can
    # a kprobe at the first byte is refused too (kprobe_example: -22); one past the site is accepted
    entry = lint_against(build("riscv64", KPROBE, vermagic=False), riscv_tree(tmp_path / "c", False))
    assert entry == [("kprobe-entry-refused", "warning")]
    past = KPROBE.replace('.symbol_name = "kernel_clone",', '.symbol_name = "kernel_clone", .offset = 8,')
    assert lint_against(build("riscv64", past, vermagic=False), riscv_tree(tmp_path / "d", False)) == []
    assert lint_against(build("riscv64", KPROBE, vermagic=False), riscv_tree(tmp_path / "e", True)) == []
