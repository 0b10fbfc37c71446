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


# ----------------------------------------------------------------------------------------------------
# Odd files: only regular files are read, decompression is capped, memory stays bounded.

def test_special_files_are_findings_not_hangs(tmp_path):
    import subprocess
    import sys
    os.mkfifo(tmp_path / "fifo.ko")
    os.symlink("/dev/zero", tmp_path / "zero.ko")
    os.symlink("/dev/null", tmp_path / "null.ko.xz")
    (tmp_path / "dir.ko").mkdir()      # a folder named like a module is walked, not read
    proc = subprocess.run([sys.executable, "-m", "kmod.lint", str(tmp_path), "--format", "json"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KMOD_CACHE": str(tmp_path / "cache")})
    import json
    report = {Path(m["path"]).name: m["findings"] for m in json.loads(proc.stdout)["modules"]}
    assert proc.returncode == 2, proc.stderr
    assert set(report) == {"fifo.ko", "zero.ko", "null.ko.xz"}
    for name, kind in (("fifo.ko", "a FIFO"), ("zero.ko", "a character device"), ("null.ko.xz", "a character device")):
        assert [f["rule"] for f in report[name]] == ["invalid-elf"]
        assert f"is {kind}, not a regular file" in report[name][0]["message"]


def test_read_raw_checks_the_open_file_not_a_stat_before_it(tmp_path):
    """A FIFO swapped in after the stat: opened non-blocking, refused on fstat, no hang."""
    from kmod.lint import files
    os.mkfifo(tmp_path / "late.ko")
    try:
        files.read_raw(tmp_path / "late.ko")
    except files.Unreadable as e:
        assert "FIFO" in str(e)
    else:
        raise AssertionError("a FIFO was read")


def _bombs(folder: Path) -> dict[str, int]:
    """Modules that inflate past the cap: gzip and zstd to 2 GiB, xz to 320 MiB (xz of 2 GiB takes
    a dozen seconds to make; anything past the cap proves the same)."""
    import lzma
    import shutil
    import zlib
    zeros = bytes(64 << 20)
    c = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0)
    (folder / "bomb.ko.xz").write_bytes(b"".join(c.compress(zeros) for _ in range(5)) + c.flush())
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(folder / "bomb.ko.gz", "wb") as f:
        for _ in range(32):
            f.write(c.compress(zeros))
        f.write(c.flush())
    sizes = {"bomb.ko.xz": 5 * len(zeros), "bomb.ko.gz": 32 * len(zeros)}
    if shutil.which("zstd"):
        with open(folder / "bomb.ko.zst", "wb") as out:
            head = subprocess.Popen(["head", "-c", str(2 << 30), "/dev/zero"], stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-1", "-q", "-c"], stdin=head.stdout, stdout=out, check=True)
            head.wait()
        sizes["bomb.ko.zst"] = 2 << 30
    return sizes


def _wait_with_peak_rss(proc, timeout: float) -> tuple[bytes, bytes, int]:
    """stdout, stderr and the peak RSS (KiB) of this child alone: wait4() reports the rusage of the
    one process it reaps (RUSAGE_CHILDREN would be the largest of every child this test run ever had)."""
    import threading
    got = {}
    readers = [threading.Thread(target=lambda k=k, f=f: got.__setitem__(k, f.read()))
               for k, f in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return got["out"], got["err"], usage.ru_maxrss


def test_decompression_bombs_end_in_a_finding_under_a_memory_limit(tmp_path):
    """Each bomb is one invalid-elf finding; the lint process never holds much more than the cap
    (RLIMIT_AS of 1.5 GiB: a 2 GiB bomb inflated whole would die with MemoryError)."""
    import json
    import resource
    import sys
    from tests.conftest import need_tool
    need_tool("zstd")
    from kmod.lint.files import MAX_MODULE
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    sizes = _bombs(bombs)
    assert all(os.path.getsize(bombs / n) < 10 << 20 for n in sizes)   # small files, huge contents
    limit = 3 << 29

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen([sys.executable, "-m", "kmod.lint", str(bombs), "--format", "json", "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=cap,
                            env={**os.environ, "KMOD_CACHE": str(tmp_path / "cache")})
    out, err, peak_kib = _wait_with_peak_rss(proc, timeout=300)
    assert proc.returncode == 2, err.decode()
    report = {Path(m["path"]).name: m["findings"] for m in json.loads(out)["modules"]}
    assert set(report) == set(sizes)
    for name in sizes:
        assert [f["rule"] for f in report[name]] == ["invalid-elf"], report[name]
        assert "decompression bomb" in report[name][0]["message"]
    assert peak_kib * 1024 < MAX_MODULE + (400 << 20), f"peak RSS {peak_kib >> 10} MiB"
