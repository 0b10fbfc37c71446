"""fpu-unguarded on real compiler output, every arch: breakers and their clean twins."""
from pathlib import Path

from kmod import arch as archmod
from kmod.lint import lint_file

from .conftest import asm_fp, fp_text, guard, rules_of


def fpu(result):
    return [f for f in result.findings if f.rule == "fpu-unguarded"]


def test_unguarded_fp_in_init_is_an_error_with_path(build, arch):
    obj = build(arch, f"""
        static __attribute__((noinline)) void fp_helper(void) {{ {asm_fp(arch)}; }}
        int init_module(void) {{ fp_helper(); return 0; }}
        void cleanup_module(void) {{}}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    f = fpu(r)[0]
    assert f.function == "fp_helper" and f.section == ".text"
    assert "init_module -> fp_helper" in f.message
    assert fp_text(arch) in f.message
    assert r.arch == arch


def test_guarded_fp_passes(build, arch):
    begin, end = guard(arch)
    obj = build(arch, f"""
        static __attribute__((noinline)) void fp_helper(void) {{ {asm_fp(arch)}; }}
        int init_module(void) {{ {begin}; fp_helper(); {end}; return 0; }}
        void cleanup_module(void) {{}}
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def test_fp_inline_between_guards_passes(build, arch):
    begin, end = guard(arch)
    obj = build(arch, f"""
        int init_module(void) {{ {begin}; {asm_fp(arch)}; {end}; return 0; }}
        void cleanup_module(void) {{}}
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def per_path(arch: str) -> list:
    """What a guard that covers only part of a function yields: an error where the guard is followed per
    path; nothing where the arch's data takes it per function (s390's conditional inline guards)."""
    return [] if archmod.get(arch).lint.fpu_flow == "function" else [("fpu-unguarded", "error")]


def test_fp_after_the_guard_ends_is_flagged(build, arch):
    begin, end = guard(arch)
    obj = build(arch, f"""
        int init_module(void) {{ {begin}; {end}; {asm_fp(arch)}; return 0; }}
        void cleanup_module(void) {{}}
    """)
    assert rules_of(lint_file(obj, strict=True)) == per_path(arch)


def test_also_reachable_unguarded_is_flagged(build, arch):
    begin, end = guard(arch)
    obj = build(arch, f"""
        static __attribute__((noinline)) void fp_helper(void) {{ {asm_fp(arch)}; }}
        static __attribute__((noinline)) void sloppy(void) {{ fp_helper(); }}
        int init_module(void) {{ {begin}; fp_helper(); {end}; return 0; }}
        void cleanup_module(void) {{ sloppy(); }}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    assert "cleanup_module -> sloppy -> fp_helper" in fpu(r)[0].message


def test_wrappers_around_the_guard_count_as_guards(build, arch):
    begin, end = guard(arch)
    obj = build(arch, f"""
        static __attribute__((noinline)) void my_begin(void) {{ {begin}; }}
        static __attribute__((noinline)) void my_end(void) {{ {end}; }}
        static __attribute__((noinline)) void fp_helper(void) {{ {asm_fp(arch)}; }}
        int init_module(void) {{ my_begin(); fp_helper(); my_end(); return 0; }}
        void cleanup_module(void) {{}}
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def test_conditional_guard_on_one_path_only_is_flagged(build, arch):
    begin, end = guard(arch)
    obj = build(arch, f"""
        int flag;
        int init_module(void) {{
            if (flag) {begin};
            {asm_fp(arch)};
            if (flag) {end};
            return 0;
        }}
        void cleanup_module(void) {{}}
    """)
    assert rules_of(lint_file(obj, strict=True)) == per_path(arch)


def test_reached_only_through_a_function_pointer_is_a_warning(build, arch):
    obj = build(arch, f"""
        static void fp_cb(void) {{ {asm_fp(arch)}; }}
        void (*volatile hook)(void) = fp_cb;
        int init_module(void) {{ return 0; }}
        void cleanup_module(void) {{}}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "warning")]
    assert "function pointer" in fpu(r)[0].message and fpu(r)[0].function == "fp_cb"


def test_fp_in_a_probe_handler_is_an_error(build, arch):
    obj = build(arch, f"""
        static int handler(struct kprobe *p, struct pt_regs *regs) {{ {asm_fp(arch)}; return 0; }}
        static struct kprobe kp = {{ .symbol_name = "kernel_clone", .pre_handler = handler }};
        int init_module(void) {{ return register_kprobe(&kp); }}
        void cleanup_module(void) {{ unregister_kprobe(&kp); }}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    assert "probe handler" in fpu(r)[0].message


def test_no_fp_no_finding(build, arch):
    obj = build(arch, """
        int counter;
        int init_module(void) { counter++; return 0; }
        void cleanup_module(void) { counter--; }
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def test_x87_and_avx_are_fp_too(build):
    obj = build("x86_64", """
        int init_module(void) { asm volatile("fninit"); return 0; }
        void cleanup_module(void) { asm volatile("vzeroupper"); }
    """)
    r = lint_file(obj, strict=True)
    assert sorted(f.function for f in fpu(r)) == ["cleanup_module", "init_module"]


def test_text_before_any_symbol_is_not_lost(tmp_path: Path, build):
    # asm with no function symbol at all: the section itself is the function
    obj = build("x86_64", """
        asm(".text\\n movaps %xmm0, %xmm1\\n ret\\n");
        int init_module(void) { return 0; }
        void cleanup_module(void) {}
    """)
    r = lint_file(obj, strict=True)
    assert [f.rule for f in r.findings] == []   # unreachable code is nobody's entry: no finding


def test_jump_into_the_middle_of_guarded_fp_code(build):
    # the label sits inside a run of FP instructions; the jump to it skips the guard
    obj = build("x86_64", """
        asm(".text\\n.type asm_fn,@function\\nasm_fn:\\n"
            " test %edi, %edi\\n jz 2f\\n call kernel_fpu_begin_mask\\n"
            " pxor %xmm0, %xmm0\\n2: pxor %xmm1, %xmm1\\n ret\\n.size asm_fn, .-asm_fn\\n");
        extern void asm_fn(int);
        int init_module(void) { asm_fn(0); return 0; }
        void cleanup_module(void) {}
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    assert "pxor xmm1, xmm1" in fpu(r)[0].message


def test_guarded_asm_without_the_jump_passes(build):
    obj = build("x86_64", """
        asm(".text\\n.type asm_fn,@function\\nasm_fn:\\n"
            " call kernel_fpu_begin_mask\\n pxor %xmm0, %xmm0\\n pxor %xmm1, %xmm1\\n"
            " call kernel_fpu_end\\n ret\\n.size asm_fn, .-asm_fn\\n");
        extern void asm_fn(int);
        int init_module(void) { asm_fn(0); return 0; }
        void cleanup_module(void) {}
    """)
    assert rules_of(lint_file(obj, strict=True)) == []


def test_s390_inline_guard_with_conditional_calls(build):
    # the shape of s390's inline kernel_fpu_begin(): save_fpu_regs() or __kernel_fpu_begin() or neither
    obj = build("s390x", """
        int owner, mask;
        static __attribute__((noinline)) void vx(void) { asm volatile("ldr %f0,%f0"); }
        int init_module(void) {
            if (!owner) save_fpu_regs(); else if (mask) __kernel_fpu_begin(0, 3);
            vx();
            if (mask) __kernel_fpu_end(0, 3);
            return 0;
        }
        void cleanup_module(void) { vx(); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    assert "cleanup_module -> vx" in fpu(r)[0].message     # the unguarded caller, not init_module


def test_riscv_vector_code_capstone_cannot_decode_is_fp(build):
    obj = build("riscv64", r"""
        static __attribute__((noinline)) void vec(void) {
            asm volatile(".option push\n.option arch, +v\nvsetvli t0, zero, e8, m1, ta, ma\n"
                         "vxor.vv v0, v0, v0\n.option pop");
        }
        int init_module(void) { kernel_vector_begin(); vec(); kernel_vector_end(); return 0; }
        void cleanup_module(void) { vec(); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    assert fpu(r)[0].function == "vec" and "cleanup_module -> vec" in fpu(r)[0].message


def test_ppc_vector_units_and_their_guards(build):
    obj = build("ppc64el", """
        extern void enable_kernel_altivec(void);
        extern void enable_kernel_vsx(void);
        static __attribute__((noinline)) void vmx(void) { asm volatile(".machine push\\n.machine power8\\nvxor 0,0,0\\n.machine pop"); }
        static __attribute__((noinline)) void vsx(void) { asm volatile(".machine push\\n.machine power8\\nxxlxor 0,0,0\\n.machine pop"); }
        int init_module(void) {
            enable_kernel_altivec(); vmx(); __msr_check_and_clear(0x2000000);
            enable_kernel_vsx(); vsx(); __msr_check_and_clear(0x2800000);
            return 0;
        }
        void cleanup_module(void) { vsx(); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    assert fpu(r)[0].function == "vsx" and "vs0" in fpu(r)[0].message


def test_s390_vector_registers_are_fp_state(build):
    """z13's vector facility: its registers %v0-%v15 overlay the FPRs and %v16-%v31 are the kernel's to
    save too (kernel_fpu_begin(KERNEL_VXR)), so a vector instruction outside the guard is FP use."""
    obj = build("s390x", r"""
        static __attribute__((noinline)) void vx(void) {
            asm volatile(".machine push\n.machine z13\nvx %v16,%v17,%v18\n.machine pop");
        }
        static __attribute__((noinline)) void vlow(void) {
            asm volatile(".machine push\n.machine z13\nvzero %v1\n.machine pop");
        }
        int init_module(void) { __kernel_fpu_begin(0, 0x3f); vx(); vlow(); __kernel_fpu_end(0, 0x3f); return 0; }
        void cleanup_module(void) { vx(); }
    """)
    r = lint_file(obj, strict=True)
    assert rules_of(r) == [("fpu-unguarded", "error")]
    f = fpu(r)[0]
    assert f.function == "vx" and "cleanup_module -> vx" in f.message and "vx %v16, %v17, %v18" in f.message
