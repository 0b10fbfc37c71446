"""Build small relocatable objects with the real compilers, shaped like kernel modules (.modinfo,
__versions), for the lint tests."""
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import need

CC = {"x86_64": "gcc", "arm64": "aarch64-linux-gnu-gcc"}
CFLAGS = {
    "x86_64": ["-O2", "-ffreestanding", "-fno-pic", "-mcmodel=kernel", "-mno-red-zone", "-mno-sse",
               "-mno-mmx", "-mno-80387", "-fno-asynchronous-unwind-tables", "-fcf-protection=none",
               "-fno-stack-protector"],
    "arm64": ["-O2", "-ffreestanding", "-fno-pic", "-mgeneral-regs-only", "-fno-asynchronous-unwind-tables",
              "-fno-stack-protector"],
}
VERMAGIC = {"x86_64": "6.1.0-56-amd64 SMP preempt mod_unload modversions ",
            "arm64": "6.1.0-56-arm64 SMP mod_unload modversions aarch64"}

PRELUDE = r"""
#define MODINFO(tag, text) static const char __UNIQUE_##tag[] __attribute__((section(".modinfo"), used, aligned(1))) = text
struct pt_regs;
struct kprobe { const char *symbol_name; void *addr; int (*pre_handler)(struct kprobe *, struct pt_regs *);
                void (*post_handler)(struct kprobe *, struct pt_regs *, unsigned long); };
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
"""


def have(arch: str) -> bool:
    return shutil.which(CC[arch]) is not None


@pytest.fixture(params=["x86_64", "arm64"])
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
            parts.append(f'MODINFO(vermagic, "vermagic={VERMAGIC[arch]}");')
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
    # no clobber list: kernel flags forbid naming vector registers, as in the kernel's own asm
    return ('asm volatile("pxor %xmm0, %xmm0")' if arch == "x86_64"
            else 'asm volatile("movi v0.16b, #0")')


def guard(arch: str) -> tuple[str, str]:
    return (("kernel_fpu_begin_mask(3)", "kernel_fpu_end()") if arch == "x86_64"
            else ("kernel_neon_begin()", "kernel_neon_end()"))


def rules_of(result) -> list[tuple[str, str]]:
    return sorted((f.rule, f.severity) for f in result.findings)
