"""Fuzz: mutated modules never raise, never hang, and a file that is not a usable module gets exactly
one invalid-elf finding. KMOD_FUZZ_EXAMPLES sets the count (10,000 by default in CI, fewer locally).
The per-file lint runs in-process (engine.lint_bytes) so thousands of examples take seconds."""
import functools
import os
import struct
import subprocess
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmod.lint.engine import lint_bytes

from .conftest import CC, CFLAGS, PRELUDE, have

EXAMPLES = int(os.environ.get("KMOD_FUZZ_EXAMPLES") or (10000 if os.environ.get("CI") == "true" else 1500))

SOURCE = PRELUDE + r"""
MODINFO(license, "license=GPL");
MODINFO(vermagic, "vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ");
static const struct modversion_info ____versions[] __attribute__((used, section("__versions"), aligned(8))) =
    { { 0x11111111UL, "register_kprobe" } };
static char lock[64];
static __attribute__((noinline)) void helper(void) { mutex_lock(lock); mutex_unlock(lock); }
static __attribute__((noinline)) void fp(void) { %FP%; }
static int handler(struct kprobe *p, struct pt_regs *regs) { helper(); return 0; }
static struct kprobe kp = { .symbol_name = "_do_fork", .pre_handler = handler };
int init_module(void) { %BEGIN%; fp(); %END%; fp(); return register_kprobe(&kp); }
"""
FILL = {"x86_64": ("pxor %xmm0, %xmm0", "kernel_fpu_begin_mask(3)", "kernel_fpu_end()"),
        "arm64": ("movi v0.16b, #0", "kernel_neon_begin()", "kernel_neon_end()")}


@functools.cache
def seeds() -> tuple[bytes, ...]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("x86_64", "arm64"):
            if not have(arch):
                continue
            fp, begin, end = FILL[arch]
            src = Path(tmp, f"{arch}.c")
            src.write_text(SOURCE.replace("%FP%", f'asm volatile("{fp}")').replace("%BEGIN%", begin)
                           .replace("%END%", end))
            obj = src.with_suffix(".ko")
            subprocess.run([CC[arch], *CFLAGS[arch], "-c", str(src), "-o", str(obj)], check=True)
            out.append(obj.read_bytes())
    assert out, "no compiler for any arch"
    return tuple(out)


def check(data: bytes) -> None:
    result = lint_bytes(data, "fuzz.ko")
    rules = [f.rule for f in result.findings]
    assert "lint-internal-error" not in rules, result.findings
    if "invalid-elf" in rules:
        assert rules == ["invalid-elf"]
    for f in result.findings:
        assert f.severity in ("error", "warning", "info") and f.message


def test_seeds_lint_cleanly_enough():
    for s in seeds():
        rules = sorted(f.rule for f in lint_bytes(s, "seed.ko", strict=True).findings)
        # the seed breaks several rules on purpose, so mutations exercise them
        assert rules == ["fpu-unguarded", "no-module-exit", "sleep-in-probe-handler"], rules


field = st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 64, 24])


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(seeds())))
    n = len(data)
    kind = draw(st.sampled_from(["flip", "header", "section-table", "field", "truncate", "insert", "zero-run"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 16))):
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "header":
        data[draw(st.integers(0, 63))] = draw(st.integers(0, 255))
    elif kind == "section-table":
        shoff = struct.unpack_from("<Q", data, 40)[0]
        pos = draw(st.integers(shoff, n - 1))
        data[pos] = draw(st.integers(0, 255))
    elif kind == "field":
        pos = draw(st.integers(0, n - 8))
        struct.pack_into("<Q", data, pos, draw(field))
    elif kind == "truncate":
        del data[draw(st.integers(0, n - 1)):]
    elif kind == "insert":
        pos = draw(st.integers(0, n))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    else:
        pos = draw(st.integers(0, n - 1))
        data[pos:pos + draw(st.integers(1, 512))] = bytes(min(512, n - pos))
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_fuzz_mutated_modules(data):
    check(data)


@settings(max_examples=max(EXAMPLES // 10, 50), deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data):
    check(b"\x7fELF\x02\x01\x01" + data if data[:1] == b"\x00" else data)
