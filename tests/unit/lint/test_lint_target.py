"""Rules against a target kernel, with a small kernel tree made here (Module.symvers, .config,
kernel.release, System.map) so no download is needed; test_lint_pins.py does the same with the pins."""
import pytest

from kmod.errors import UserError
from kmod.lint import lint_paths

from .conftest import kernel_tree, rules_of

EXPORTS = {"register_kprobe": (0x11111111, True), "unregister_kprobe": (0x22222222, True),
           "_printk": (0x33333333, False), "msleep": (0x44444444, False)}
SYSTEM_MAP = """\
ffffffff81000000 T _stext
ffffffff81001000 T kernel_clone
ffffffff81002000 T do_exit
ffffffff81003000 t do_int3
ffffffff81900000 d _kbl_addr_do_int3
ffffffff81004000 T __kprobes_text_start
ffffffff81004010 t kprobe_inner
ffffffff81004100 T __kprobes_text_end
ffffffff81005000 T __noinstr_text_start
ffffffff81005010 T noinstr_func
ffffffff81005100 T __noinstr_text_end
ffffffff81006000 T tcp_v4_connect
ffffffff81006100 t tcp_v4_connect.isra.0
ffffffff81007000 t only_clone.constprop.0
ffffffff81008000 T do_sys_openat2
"""
CLEAN = """
    static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
    static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
    int init_module(void) { _printk("x"); return register_kprobe(&kp); }
    void cleanup_module(void) { unregister_kprobe(&kp); }
"""
VERSIONS = {"register_kprobe": 0x11111111, "unregister_kprobe": 0x22222222, "_printk": 0x33333333}


@pytest.fixture
def kernel(tmp_path):
    return kernel_tree(tmp_path, symvers="".join(
        f"{crc:#010x}\t{name}\tvmlinux\tEXPORT_SYMBOL{'_GPL' if gpl else ''}\t\n"
        for name, (crc, gpl) in EXPORTS.items()), system_map=SYSTEM_MAP)


def lint(obj, kernel, probes=None):
    report = lint_paths([obj], target=str(kernel), jobs=1, probes=probes, use_cache=False)
    return report.modules[0]


def test_clean_module_against_the_target(build, kernel):
    assert rules_of(lint(build("x86_64", CLEAN, versions=VERSIONS), kernel)) == []


def test_arch_mismatch(build, kernel):
    need_arm = build("arm64", CLEAN, versions=VERSIONS)
    assert rules_of(lint(need_arm, kernel)) == [("arch-mismatch", "error")]


def test_vermagic_mismatch(build, kernel):
    (kernel / "include/config/kernel.release").write_text("6.1.0-55-amd64\n")
    r = lint(build("x86_64", CLEAN, versions=VERSIONS), kernel)
    assert rules_of(r) == [("vermagic-mismatch", "error")]
    assert "6.1.0-55-amd64" in r.findings[0].message


def test_modversion_mismatch(build, kernel):
    r = lint(build("x86_64", CLEAN, versions={**VERSIONS, "register_kprobe": 0xdeadbeef}), kernel)
    assert rules_of(r) == [("modversion-mismatch", "error")]
    assert "register_kprobe" in r.findings[0].message and "0xdeadbeef" in r.findings[0].message


def test_undefined_symbol(build, kernel):
    obj = build("x86_64", CLEAN + "extern void not_in_this_kernel(void); void f(void) { not_in_this_kernel(); }",
                versions=VERSIONS)
    r = lint(obj, kernel)
    assert rules_of(r) == [("undefined-symbol", "error")]
    assert "not_in_this_kernel" in r.findings[0].message


def test_gpl_only_comes_from_the_target(build, kernel):
    r = lint(build("x86_64", CLEAN, versions=VERSIONS, license="Proprietary"), kernel)
    assert rules_of(r) == [("license-gpl-only-symbol", "error")]


@pytest.mark.parametrize("probe, expected, words", [
    ("kernel_clone", [], []),
    ("kernel_clone+0x4", [], []),          # NAME+OFFSET probes NAME
    ("_do_fork+0x10", [("probe-target-missing", "error")], ["kernel_clone"]),
    ("_do_fork", [("probe-target-missing", "error")], ["kernel_clone"]),
    ("do_sys_open", [("probe-target-missing", "error")], ["do_sys_openat2"]),
    ("do_int3", [("probe-target-blacklisted", "error")], ["NOKPROBE_SYMBOL"]),
    ("kprobe_inner", [("probe-target-blacklisted", "error")], [".kprobes.text"]),
    ("noinstr_func", [("probe-target-blacklisted", "error")], [".noinstr.text"]),
    ("tcp_v4_connect", [("probe-target-clone", "warning")], ["tcp_v4_connect.isra.0"]),
    ("only_clone", [("probe-target-clone", "warning")], ["only_clone.constprop.0"]),
])
def test_probe_targets_from_the_spec(build, kernel, probe, expected, words):
    r = lint(build("x86_64", CLEAN, versions=VERSIONS), kernel, probes=[probe])
    assert rules_of(r) == expected
    for w in words:
        assert w in r.findings[0].message


def test_probe_target_from_the_module_strings(build, kernel):
    obj = build("x86_64", CLEAN.replace('"kernel_clone"', '"_do_fork"'), versions=VERSIONS)
    r = lint(obj, kernel)
    assert rules_of(r) == [("probe-target-missing", "error")]
    assert "Did you mean kernel_clone" in r.findings[0].message


def test_system_map_alone_is_a_target(build, kernel):
    obj = build("x86_64", CLEAN.replace('"kernel_clone"', '"_do_fork"'), versions=VERSIONS)
    report = lint_paths([obj], target=str(kernel / "System.map"), jobs=1, use_cache=False)
    assert rules_of(report.modules[0]) == [("probe-target-missing", "error")]


def test_unknown_target_is_a_user_error(build):
    with pytest.raises(UserError) as e:
        lint_paths([build("x86_64", CLEAN)], target="no-such-kernel", jobs=1, use_cache=False)
    assert "unsupported kernel" in e.value.line()


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        lint_paths([tmp_path / "nothing.ko"], use_cache=False)
    assert "no such file" in e.value.line()
