"""The in-tree modules of the pinned Debian kernels are correct by construction: linting a fixed sample
of them (crypto, RAID and GPU drivers that use the FPU or vector units correctly among them) against
their own pin must report zero errors, on every arch and on a flavour. Needs the pinned linux-image
packages: fails in CI when they cannot be downloaded, skips locally. (Every module of every new cell:
bench/lint_every_cell.py, recorded in docs/benchmarks.md.)"""
from pathlib import Path

import pytest

from kmod import arch as archmod
from kmod import pins
from kmod.errors import KmodError
from kmod.lint import format_text, lint_paths
from kmod.lint.decode import has_fp
from kmod.lint.elf import parse
from kmod.lint.files import SUFFIXES, read_module
from kmod.lint.target import image_tree, modules_dir
from tests.conftest import need

# the kernel each arch's sample comes from: bookworm's where Debian ships it, else the newest pin's
CELLS = [("bookworm-6.1", "x86_64"), ("bookworm-6.1", "arm64"), ("bookworm-6.1", "ppc64el"),
         ("bookworm-6.1", "s390x"), ("trixie-6.12", "riscv64"), ("bookworm-6.1-rt", "x86_64")]
# FPU users by name: the interesting ones for fpu-unguarded
NAMED = {
    "x86_64": ["aesni-intel.ko", "raid6_pq.ko", "sha256-ssse3.ko", "sha512-ssse3.ko", "camellia-aesni-avx2.ko",
               "camellia-aesni-avx-x86_64.ko", "chacha-x86_64.ko", "poly1305-x86_64.ko", "ghash-clmulni-intel.ko",
               "crc32c-intel.ko", "crct10dif-pclmul.ko", "aegis128-aesni.ko", "serpent-avx2.ko", "twofish-avx-x86_64.ko",
               "kvm.ko", "kvm-intel.ko", "amdgpu.ko", "i915.ko"],
    "arm64": ["aes-neon-blk.ko", "aes-ce-blk.ko", "aes-neon-bs.ko", "sha2-ce.ko", "sha256-arm64.ko", "sha512-ce.ko",
              "sha3-ce.ko", "ghash-ce.ko", "crct10dif-ce.ko", "chacha-neon.ko", "poly1305-neon.ko",
              "nhpoly1305-neon.ko", "polyval-ce.ko", "raid6_pq.ko", "xor-neon.ko", "amdgpu.ko"],
    "ppc64el": ["vmx-crypto.ko", "crc32c-vpmsum.ko", "crct10dif-vpmsum.ko", "raid6_pq.ko", "kvm.ko",
                "kvm-hv.ko", "kvm-pr.ko"],
    "s390x": ["chacha_s390.ko", "raid6_pq.ko", "kvm.ko", "crc32-vx_s390.ko", "ghash_s390.ko", "aes_s390.ko"],
    "riscv64": ["aes-riscv64.ko", "chacha-riscv64.ko", "ghash-riscv64.ko", "sha256-riscv64.ko",
                "sha512-riscv64.ko", "xor.ko", "kvm.ko"],
}
# modules whose FP/vector code the decoder must see (the named lists hold some that only call helpers)
MUST_HAVE_FP = {"x86_64": "aesni-intel", "arm64": "aes-neon-blk", "ppc64el": "vmx-crypto",
                "s390x": "chacha_s390", "riscv64": "aes-riscv64"}
SPREAD = 40   # plus every Nth of the sorted rest, for variety (drivers, filesystems, net)


def stem(f: Path) -> str:
    return f.name.split(".ko", 1)[0]


def sample(label: str, arch_name: str) -> list[Path]:
    pin, flavour = pins.get_label(label)
    try:
        tree = image_tree(pins.require_locked(pin), archmod.get(arch_name), flavour)
    except KmodError as e:
        need(False, f"the pinned linux-image for {label}/{arch_name} ({e.line()})")
    files = sorted(f for f in modules_dir(tree).rglob("*") if f.name.endswith(SUFFIXES))
    wanted = {n[:-3] for n in NAMED[arch_name]}
    named = [f for f in files if stem(f) in wanted]
    rest = [f for f in files if f not in named]
    step = max(1, len(rest) // SPREAD)
    return named + rest[::step][:SPREAD]


@pytest.mark.parametrize("label,arch_name", CELLS, ids=[f"{p}/{a}" for p, a in CELLS])
def test_in_tree_modules_have_no_errors(label, arch_name):
    files = sample(label, arch_name)
    assert len(files) >= SPREAD
    report = lint_paths(files, target=label, use_cache=False)
    assert {m.arch for m in report.modules} == {arch_name}
    errors = [(m.path, f.rule, f.message) for m, f in report.findings() if f.severity == "error"]
    assert errors == [], format_text(report)
    # the FPU and vector users were really looked at: the decoder sees their FP code
    fp_user = next(f for f in files if stem(f) == MUST_HAVE_FP[arch_name])
    assert has_fp(parse(read_module(fp_user)))
