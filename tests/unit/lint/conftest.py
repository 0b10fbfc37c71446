"""Build small relocatable objects with the real compilers (native, and each arch's cross compiler named
by its gnu_triplet), shaped like kernel modules (.modinfo, __versions), for the lint tests."""
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from kmod import arch as archmod
from tests.conftest import need

ARCHES = archmod.names()
_COMMON = ["-O2", "-ffreestanding", "-fno-pic", "-fno-asynchronous-unwind-tables", "-fno-stack-protector"]
# Kernel-like code generation per arch (no FP/vector registers unless asked for, as kbuild does).
CFLAGS = {
    "x86_64": _COMMON + ["-mcmodel=kernel", "-mno-red-zone", "-mno-sse", "-mno-mmx", "-mno-80387",
                         "-fcf-protection=none"],
    "arm64": _COMMON + ["-mgeneral-regs-only"],
    "ppc64el": _COMMON + ["-msoft-float", "-mno-altivec", "-mno-vsx"],
    "s390x": _COMMON + ["-msoft-float"],
    "riscv64": _COMMON + ["-march=rv64imac_zicsr_zifencei", "-mabi=lp64", "-mno-relax", "-mcmodel=medany"],
}
# vermagic as kbuild writes it for each arch's generic kernel of this pin (the release from the lock)
VERMAGIC_PIN = {"x86_64": "bookworm-6.1", "arm64": "bookworm-6.1", "ppc64el": "bookworm-6.1",
                "s390x": "bookworm-6.1", "riscv64": "trixie-6.12"}
VERMAGIC_TAIL = {"x86_64": "SMP preempt mod_unload modversions ", "arm64": "SMP mod_unload modversions aarch64",
                 "ppc64el": "SMP mod_unload modversions mprofile-kernel relocatable",
                 "s390x": "SMP mod_unload modversions ", "riscv64": "SMP mod_unload modversions riscv"}


def vermagic_of(arch: str) -> str:
    from kmod import pins
    pin, a = pins.get(VERMAGIC_PIN[arch]), archmod.get(arch)
    release = pin.release(a) if pin.has(a) else f"0.0.0-{a.kernel_flavour}"   # an arch not locked yet
    return f"{release} {VERMAGIC_TAIL[arch]}"
# One FP/SIMD instruction as inline asm, and how the linter prints it. No clobber list: kernel flags
# forbid naming vector registers, as in the kernel's own asm.
FP_ASM = {"x86_64": ("pxor %xmm0, %xmm0", "pxor xmm0, xmm0"),
          "arm64": ("movi v0.16b, #0", "movi v0.16b, #0"),
          "ppc64el": ("fmr 0,0", "fmr f0, f0"),
          "s390x": ("ldr %f0,%f0", "ldr %f0, %f0"),
          "riscv64": (r".option push\n.option arch, +d\nfmv.d.x ft0, zero\n.option pop", "fmv.d.x ft0, zero")}
# The guard as a module compiles it (an inline disable_kernel_fp() is a call to __msr_check_and_clear()).
GUARD = {"x86_64": ("kernel_fpu_begin_mask(3)", "kernel_fpu_end()"),
         "arm64": ("kernel_neon_begin()", "kernel_neon_end()"),
         "ppc64el": ("enable_kernel_fp()", "__msr_check_and_clear(0x2000)"),
         "s390x": ("__kernel_fpu_begin(0, 3)", "__kernel_fpu_end(0, 3)"),
         "riscv64": ("kernel_vector_begin()", "kernel_vector_end()")}


def compiler(arch: str) -> str:
    a = archmod.get(arch)
    return "gcc" if archmod.host() is a else f"{a.gnu_triplet}-gcc"


CC = {a: compiler(a) for a in ARCHES}

PRELUDE = r"""
#define MODINFO(tag, text) static const char __UNIQUE_##tag[] __attribute__((section(".modinfo"), used, aligned(1))) = text
struct pt_regs;
struct kprobe { void *hlist[2]; void *list[2]; unsigned long nmissed; void *addr; const char *symbol_name;
                unsigned int offset; int (*pre_handler)(struct kprobe *, struct pt_regs *);
                void (*post_handler)(struct kprobe *, struct pt_regs *, unsigned long); };   /* the kernel's layout */
struct kretprobe_instance;
struct kretprobe { struct kprobe kp; int (*handler)(struct kretprobe_instance *, struct pt_regs *);
                   int (*entry_handler)(struct kretprobe_instance *, struct pt_regs *); int maxactive; };
struct modversion_info { unsigned long crc; char name[56]; };
extern int register_kprobe(struct kprobe *);
extern void unregister_kprobe(struct kprobe *);
extern int register_kretprobe(struct kretprobe *);
extern void unregister_kretprobe(struct kretprobe *);
extern int _printk(const char *, ...);
extern void msleep(unsigned int);
extern void mutex_lock(void *);
extern void mutex_unlock(void *);
extern void *__kmalloc(unsigned long, unsigned int);
extern void kfree(const void *);
extern void kernel_fpu_begin_mask(unsigned int);
extern void kernel_fpu_end(void);
extern void kernel_neon_begin(void);
extern void kernel_neon_end(void);
extern void enable_kernel_fp(void);
extern void __msr_check_and_clear(unsigned long);
extern void __kernel_fpu_begin(void *, unsigned int);
extern void __kernel_fpu_end(void *, unsigned int);
extern void save_fpu_regs(void);
extern void kernel_vector_begin(void);
extern void kernel_vector_end(void);
"""


def have(arch: str) -> bool:
    return shutil.which(CC[arch]) is not None


@pytest.fixture(params=ARCHES)
def arch(request):
    need(have(request.param), f"`{CC[request.param]}` (tests/unit/lint/REQUIRES.txt)")
    return request.param


@pytest.fixture
def build(tmp_path):
    """build(arch, C source, license="GPL", vermagic=True, versions={name: crc}) -> path of the .o"""
    counter = [0]

    def _build(arch: str, source: str, license: str | None = "GPL", vermagic: bool = True,
               versions: dict[str, int] | None = None, name: str | None = None, extra: list[str] = ()) -> Path:
        need(have(arch), f"`{CC[arch]}`")
        counter[0] += 1
        parts = [PRELUDE]
        if license is not None:
            parts.append(f'MODINFO(license, "license={license}");')
        if vermagic:
            parts.append(f'MODINFO(vermagic, "vermagic={vermagic_of(arch)}");')
        if versions:
            entries = ", ".join(f'{{ {crc:#x}UL, "{n}" }}' for n, crc in versions.items())
            parts.append("static const struct modversion_info ____versions[] __attribute__((used, "
                         f'section("__versions"), aligned(8))) = {{ {entries} }};')
        parts.append(textwrap.dedent(source))
        src = tmp_path / f"{name or 'mod'}{counter[0]}.c"
        src.write_text("\n".join(parts))
        obj = src.with_suffix(".ko")
        p = subprocess.run([CC[arch], *CFLAGS[arch], *extra, "-c", str(src), "-o", str(obj)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return obj

    return _build


def asm_fp(arch: str) -> str:
    """One FP/SIMD instruction as inline asm."""
    return f'asm volatile("{FP_ASM[arch][0]}")'


def fp_text(arch: str) -> str:
    """That instruction as the linter's messages show it."""
    return FP_ASM[arch][1]


def guard(arch: str) -> tuple[str, str]:
    return GUARD[arch]


def rules_of(result) -> list[tuple[str, str]]:
    return sorted((f.rule, f.severity) for f in result.findings)


X86_CONFIG = ("CONFIG_X86_64=y\nCONFIG_SMP=y\nCONFIG_PREEMPT_BUILD=y\nCONFIG_MODULE_UNLOAD=y\n"
              "CONFIG_MODVERSIONS=y\n")


def kernel_tree(root: Path, release: str = "", symvers: str = "", system_map: str | None = None) -> Path:
    """A small x86_64 kernel headers tree (kernel.release, .config, Module.symvers[, System.map]) to lint
    against without a download; by default of the release the test modules' vermagic names."""
    release = release or vermagic_of("x86_64").split()[0]
    tree = root / f"linux-headers-{release}"
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text(release + "\n")
    (tree / ".config").write_text(X86_CONFIG)
    (tree / "Module.symvers").write_text(symvers)
    if system_map is not None:
        (tree / "System.map").write_text(system_map)
    return tree
