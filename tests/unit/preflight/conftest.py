"""Preflight unit tests: facts recorded from the test VM (tests/preflight/vm.py), modules compiled by the
lint tests' real compilers (tests/unit/lint/conftest.py), verdicts judged without any host."""
import dataclasses
from pathlib import Path

import pytest

from tests.unit.lint.conftest import build  # noqa: F401 - the compiling fixture, shared
from tests.conftest import need
from tests.unit.lint.conftest import have

FIXTURES = Path(__file__).parent / "fixtures"
# Imports as clone_probe's (the recorded facts hold the host's CRCs of those names only)
SOURCE = """
extern void unregister_kprobes(struct kprobe **kps, int num);
static int pre(struct kprobe *p, struct pt_regs *r) { _printk("hit\\n"); return 0; }
static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = pre };
static struct kprobe *kps[] = { &kp };
int init_module(void) { return register_kprobe(&kp); }
void cleanup_module(void) { unregister_kprobes(kps, 1); }
"""


def recorded(name: str):
    from kmod.preflight import facts
    return facts.parse((FIXTURES / name).read_text())


def pinned_release() -> str:
    """The release the bookworm pin locks for x86_64 now (the lock moves when `toolchains --update` runs)."""
    from kmod import arch, pins
    return pins.get("bookworm-6.1").release(arch.get("x86_64"))


@pytest.fixture
def vm_facts():
    """The pinned-kernel VM as read by root (recorded booted with module.sig_enforce=1; off here), named
    with the release the lock pins now: it stands for a host that runs the pinned kernel."""
    f = recorded("facts-bookworm-sig-enforce.txt")
    rel = pinned_release()
    return dataclasses.replace(f, sig_enforce=False, release=rel, vermagic=f.vermagic.replace(f.release, rel, 1))


@pytest.fixture
def module_info(build):
    """info(crcs=..., license=..., arches=..., probes=...) -> ModuleInfo with one built x86_64 cell."""
    from kmod.lint import files
    from kmod.lint.elf import parse
    from kmod.preflight.verdict import Built, ModuleInfo
    from kmod.spec import Module, parse_probe
    need(have("x86_64"), "`gcc`")

    def make(crcs: dict | None = None, license="GPL", arches=(), probes=("kernel_clone",), release="", boot=None):
        release = release or pinned_release()
        ko = build("x86_64", SOURCE, license=license, versions=crcs)
        raw = Path(ko).read_bytes()
        b = Built("clone_probe/bookworm-6.1/x86_64", "bookworm-6.1", "x86_64", release, Path(ko),
                  parse(files.read_module(Path(ko), raw)), False, boot or {})
        m = Module("clone_probe", license=license, arches=tuple(arches),
                   probes=tuple(parse_probe(p) for p in probes))
        return ModuleInfo(m, [b], {p: "kprobe" for p in probes}, "3.0.3-4~")
    return make
