"""The in-tree modules of the pinned Debian kernel are correct by construction: linting a fixed sample
of them (crypto, RAID and GPU drivers that use the FPU correctly among them) against their own pin must
report zero errors, on both arches. Needs the pinned linux-image packages: fails in CI when they cannot
be downloaded, skips locally."""
from collections import Counter
from pathlib import Path

import pytest

from kmod import arch as archmod
from kmod import pins
from kmod.errors import KmodError
from kmod.lint import format_text, lint_paths
from kmod.lint.target import image_tree, modules_dir
from tests.conftest import need

PIN = "bookworm-6.1"
# FPU users by name: the interesting ones for fpu-unguarded
NAMED = {
    "x86_64": ["aesni-intel.ko", "raid6_pq.ko", "sha256-ssse3.ko", "sha512-ssse3.ko", "camellia-aesni-avx2.ko",
               "camellia-aesni-avx-x86_64.ko", "chacha-x86_64.ko", "poly1305-x86_64.ko", "ghash-clmulni-intel.ko",
               "crc32c-intel.ko", "crct10dif-pclmul.ko", "aegis128-aesni.ko", "serpent-avx2.ko", "twofish-avx-x86_64.ko",
               "kvm.ko", "kvm-intel.ko", "amdgpu.ko", "i915.ko"],
    "arm64": ["aes-neon-blk.ko", "aes-ce-blk.ko", "aes-neon-bs.ko", "sha2-ce.ko", "sha256-arm64.ko", "sha512-ce.ko",
              "sha3-ce.ko", "ghash-ce.ko", "crct10dif-ce.ko", "chacha-neon.ko", "poly1305-neon.ko",
              "nhpoly1305-neon.ko", "polyval-ce.ko", "raid6_pq.ko", "xor-neon.ko", "amdgpu.ko"],
}
SPREAD = 40   # plus every Nth of the sorted rest, for variety (drivers, filesystems, net)


def sample(arch_name: str) -> list[Path]:
    pin = pins.require_locked(pins.get(PIN))
    try:
        tree = image_tree(pin, archmod.get(arch_name))
    except KmodError as e:
        need(False, f"the pinned linux-image for {arch_name} ({e.line()})")
    files = sorted(modules_dir(tree).rglob("*.ko"))
    named = [f for f in files if f.name in NAMED[arch_name]]
    rest = [f for f in files if f not in named]
    step = max(1, len(rest) // SPREAD)
    return named + rest[::step][:SPREAD]


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_in_tree_modules_have_no_errors(arch_name):
    files = sample(arch_name)
    assert len(files) >= 50
    report = lint_paths(files, target=PIN, use_cache=False)
    assert {m.arch for m in report.modules} == {arch_name}
    errors = [(m.path, f.rule, f.message) for m, f in report.findings() if f.severity == "error"]
    assert errors == [], format_text(report)
    rules = Counter(f.rule for _, f in report.findings())
    # the FPU users were really looked at: their asm is reached through pointers (warnings), never silence
    assert rules["fpu-unguarded"] > 0
