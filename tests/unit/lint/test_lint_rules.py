"""softfloat-helper, licenses, sleeping probe handlers and module shape on real compiler output."""
from kmod.lint import lint_file

from .conftest import rules_of

CLEAN_PROBE = """
    static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
    static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
    int init_module(void) { return register_kprobe(&kp); }
    void cleanup_module(void) { unregister_kprobe(&kp); }
"""


def test_clean_kprobe_module(build, arch):
    assert rules_of(lint_file(build(arch, CLEAN_PROBE), strict=True)) == []


def test_softfloat_helper(build, arch):
    obj = build(arch, """
        extern long __adddf3(long, long);
        long x;
        int init_module(void) { x = __adddf3(x, 1); return 0; }
        void cleanup_module(void) {}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("softfloat-helper", "error")]
    assert "Unknown symbol __adddf3" in r.findings[0].message


def test_license_missing(build, arch):
    r = lint_file(build(arch, CLEAN_PROBE, license=None), strict=True)
    assert rules_of(r) == [("license-missing", "error")]


def test_gpl_only_symbol_with_proprietary_license(build, arch):
    r = lint_file(build(arch, CLEAN_PROBE, license="Proprietary"), strict=True)
    assert rules_of(r) == [("license-gpl-only-symbol", "error")]
    assert "register_kprobe" in r.findings[0].message and "'Proprietary'" in r.findings[0].message


def test_dual_license_is_gpl_compatible(build, arch):
    assert rules_of(lint_file(build(arch, CLEAN_PROBE, license="Dual BSD/GPL"), strict=True)) == []


def test_proprietary_without_gpl_symbols_passes(build, arch):
    obj = build(arch, """
        int init_module(void) { _printk("hi\\n"); return 0; }
        void cleanup_module(void) {}
    """, license="Proprietary")
    assert rules_of(lint_file(obj, strict=True)) == []


def test_no_module_exit(build, arch):
    r = lint_file(build(arch, "int init_module(void) { return 0; }"), strict=True)
    assert rules_of(r) == [("no-module-exit", "warning")]


def test_sleep_in_kprobe_handler_direct(build, arch):
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { msleep(10); return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        int init_module(void) { return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("sleep-in-probe-handler", "error")]
    assert "handler -> msleep" in r.findings[0].message
    assert "timers-howto" in r.findings[0].message


def test_sleep_through_a_helper_in_a_kretprobe_handler(build, arch):
    obj = build(arch, """
        static char lock[64];
        static __attribute__((noinline)) void helper(void) { mutex_lock(lock); mutex_unlock(lock); }
        static int ret_handler(struct kretprobe_instance *ri, struct pt_regs *regs) { helper(); return 0; }
        static struct kretprobe rp = { .kp = { .symbol_name = "kernel_clone" }, .handler = ret_handler };
        int init_module(void) { return register_kretprobe(&rp); }
        void cleanup_module(void) { unregister_kretprobe(&rp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("sleep-in-probe-handler", "error")]
    f = r.findings[0]
    assert "kretprobe handler ret_handler" in f.message and "ret_handler -> helper -> mutex_lock" in f.message
    assert f.function == "helper"


def test_handler_set_at_run_time_is_found(build, arch):
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { msleep(1); return 0; }
        static struct kprobe kp;
        int init_module(void) { kp.symbol_name = "kernel_clone"; kp.pre_handler = handler; return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("probe-targets-unknown", "info"), ("sleep-in-probe-handler", "error")]
    # the symbol is set at run time: not checked, and the report says so (naming the likely one)
    assert "kernel_clone" in next(f.message for f in r.findings if f.rule == "probe-targets-unknown")


def test_gfp_kernel_allocation_in_handler(build, arch):
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { kfree(__kmalloc(64, 0xcc0)); return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        int init_module(void) { return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("sleep-in-probe-handler", "error")]
    assert "0xcc0" in r.findings[0].message and "__GFP_DIRECT_RECLAIM" in r.findings[0].message


def test_gfp_atomic_allocation_in_handler_passes(build, arch):
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { kfree(__kmalloc(64, 0x820)); return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        int init_module(void) { return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def test_sleeping_outside_handlers_is_fine(build, arch):
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        int init_module(void) { msleep(1); return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def test_dwarf_signature_finds_handlers(build, arch):
    # the handler is stored by a helper, not by the registering function nor in the object's
    # initialiser: relocations cannot tie it to the kprobe, its DWARF signature can
    obj = build(arch, """
        int my_pre(struct kprobe *p, struct pt_regs *regs) { msleep(1); return 0; }
        static struct kprobe kp;
        __attribute__((noinline)) void setup(struct kprobe *k) { k->pre_handler = my_pre; }
        int init_module(void) { setup(&kp); return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """, extra=["-g"])
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("probe-targets-unknown", "info"), ("sleep-in-probe-handler", "error")]


def test_kretprobe_on_a_function_that_never_returns(build, arch):
    obj = build(arch, """
        static int ret_handler(struct kretprobe_instance *ri, struct pt_regs *regs) { return 0; }
        static struct kretprobe rp = { .kp = { .symbol_name = "do_exit" }, .handler = ret_handler };
        int init_module(void) { return register_kretprobe(&rp); }
        void cleanup_module(void) { unregister_kretprobe(&rp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("kretprobe-noreturn", "warning")]


def test_without_dwarf_that_handler_is_not_seen_and_said_so(build, arch):
    obj = build(arch, """
        int my_pre(struct kprobe *p, struct pt_regs *regs) { msleep(1); return 0; }
        static struct kprobe kp;
        __attribute__((noinline)) void setup(struct kprobe *k) { k->pre_handler = my_pre; }
        int init_module(void) { setup(&kp); return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    # not seen, and said so: neither the handler nor the probed symbol is checked
    assert rules_of(lint_file(obj, strict=True)) == [("probe-handlers-unknown", "info"),
                                                     ("probe-targets-unknown", "info")]


def test_probe_object_found_through_the_argument_register(build, arch):
    # a global store between loading &kp and the (tail) call to register_kprobe: the object is what
    # the first argument register holds, not the last address the function touched
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { msleep(1); return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        extern long next(long);
        long x;
        int init_module(void) { x = next(x); return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    assert rules_of(lint_file(obj, strict=True)) == [("sleep-in-probe-handler", "error")]


def test_probe_array_registered_in_a_loop(build, arch):
    # the shape of kmod's own templates: an array of probes, registered one by one
    obj = build(arch, """
        static long hits[2];
        static int ret_handler(struct kretprobe_instance *ri, struct pt_regs *regs) { msleep(1); return 0; }
        static struct kretprobe probes[2] = {
            { .kp = { .symbol_name = "kernel_clone" }, .handler = ret_handler },
            { .kp = { .symbol_name = "do_exit" }, .handler = ret_handler },
        };
        int init_module(void) {
            int i, ret;
            for (i = 0; i < 2; i++) {
                hits[i] = 0;
                ret = register_kretprobe(&probes[i]);
                if (ret < 0) { _printk("cannot probe %d\\n", i); while (--i >= 0) unregister_kretprobe(&probes[i]); return ret; }
            }
            return 0;
        }
        void cleanup_module(void) { int i; for (i = 0; i < 2; i++) unregister_kretprobe(&probes[i]); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("kretprobe-noreturn", "warning"), ("sleep-in-probe-handler", "error")]


def test_calls_through_an_ops_struct_the_module_initialises_are_followed(build, arch):
    obj = build(arch, """
        struct ops { void (*run)(void); };
        static void slow(void) { msleep(1); }
        static const struct ops my_ops = { .run = slow };
        static const struct ops *volatile current_ops = &my_ops;
        static int handler(struct kprobe *p, struct pt_regs *regs) { current_ops->run(); return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        int init_module(void) { return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("sleep-in-probe-handler", "error")]
    assert "slow -> msleep" in r.findings[0].message


def test_a_call_through_a_pointer_nothing_resolves_is_said(build, arch):
    obj = build(arch, """
        struct ops { void (*run)(void); };
        static int handler(struct kprobe *p, struct pt_regs *regs) { ((struct ops *)p->addr)->run(); return 0; }
        static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
        int init_module(void) { return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("indirect-call-not-followed", "info")]
    assert "handler handler calls through a pointer at handler+0x" in r.findings[0].message


def test_a_symbol_from_a_module_parameter_is_checked_as_its_default(build, arch):
    """The kernel's samples/kprobes do this: `static char symbol[] = "kernel_clone"; module_param_string`."""
    obj = build(arch, """
        static char symbol[64] = "kernel_clone";
        static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
        static struct kprobe kp = { .symbol_name = symbol, .pre_handler = handler };
        int init_module(void) { return register_kprobe(&kp); }
        void cleanup_module(void) { unregister_kprobe(&kp); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("probe-targets-unknown", "info")]
    assert "kernel_clone is the default of a writable buffer" in r.findings[0].message


def test_a_struct_kprobe_on_the_stack_is_said_not_checked(build, arch):
    obj = build(arch, """
        static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
        int init_module(void) {
            struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
            return register_kprobe(&kp);
        }
        void cleanup_module(void) {}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("probe-targets-unknown", "info")]
    assert "on the stack" in r.findings[0].message and "kernel_clone" in r.findings[0].message
