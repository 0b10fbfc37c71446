"""Arch and pin data: loaded from files, one place per fact, clear errors for the rest."""
import re

import pytest

from kmod import arch, pins
from kmod.archive import debversion
from kmod.errors import UserError


def test_arches_from_data():
    assert set(arch.names()) == {"x86_64", "arm64", "ppc64el", "s390x", "riscv64"}
    assert arch.get("aarch64") is arch.get("arm64")
    assert arch.get("amd64").debian_arch == "amd64"
    arm = arch.get("arm64")
    assert arm.make_vars("amd64") == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    assert arm.make_vars("arm64") == ["ARCH=arm64", "CROSS_COMPILE="]
    for a in arch.all_arches().values():
        assert {"binary", "machine", "cpu", "console"} <= set(a.qemu)
        assert a.lint.fpu_begin and a.lint.fpu_end and len(a.argument_registers) >= 5
        assert arch.by_elf_machine(a.elf_number) is a
        assert arch.select(",".join([a.debian_arch, a.uname_machine, a.name])) == [a]


@pytest.mark.parametrize("debian,uname", [("ppc64el", "ppc64le"), ("amd64", "x86_64"), ("arm64", "aarch64"),
                                          ("s390x", "s390x"), ("riscv64", "riscv64")])
def test_debian_and_uname_names_are_aliases(debian, uname):
    assert arch.get(debian) is arch.get(uname)
    assert (arch.get(debian).debian_arch, arch.get(uname).uname_machine) == (debian, uname)


def test_arch_from_kernel_config():
    ppc = {"CONFIG_PPC64": "y", "CONFIG_CPU_LITTLE_ENDIAN": "y", "CONFIG_RELOCATABLE": "y"}
    assert arch.by_config(ppc).name == "ppc64el"
    assert arch.by_config(ppc).vermagic_suffix(ppc) == ["relocatable"]
    assert arch.by_config({"CONFIG_PPC64": "y"}) is None   # big-endian ppc64: not supported
    assert arch.by_config({"CONFIG_ARM64": "y"}).vermagic_suffix({}) == ["aarch64"]
    rv = arch.get("riscv64")
    assert rv.ftrace_entry_offset({"CONFIG_DYNAMIC_FTRACE": "y"}) == 8
    assert rv.ftrace_entry_offset({"CONFIG_DYNAMIC_FTRACE": "y", "CONFIG_KPROBES_ON_FTRACE": "y"}) == 0
    assert arch.get("x86_64").ftrace_entry_offset({"CONFIG_DYNAMIC_FTRACE": "y"}) == 0


def test_unknown_arch():
    with pytest.raises(UserError, match=r"unsupported architecture: 'sparc' \(choose one of: arm64, ppc64el"):
        arch.get("sparc")


def test_pins_are_locked_with_hashes():
    all_pins = pins.all_pins()
    assert {"bullseye-5.10", "bookworm-6.1", "trixie-6.12"} <= set(all_pins)
    for pin in all_pins.values():
        assert pin.locked, pin.name
        assert re.match(pin.abi_regex, pin.abi)
        roles = {(p.role, p.for_arch) for p in pin.packages}
        for a in pin.arches:
            assert {("headers", a), ("image", a), ("busybox", a)} <= roles
        assert ("kbuild", "") in roles and ("headers-common", "") in roles
        for p in pin.packages:
            assert re.fullmatch(r"[0-9a-f]{64}", p.sha256) and p.filename.startswith("pool/")


def test_pin_lookup():
    assert pins.get("6.1").name == "bookworm-6.1"
    assert pins.get("trixie").name == "trixie-6.12"
    assert pins.get("bullseye-5.10").release(arch.get("arm64")) == f"{pins.get('bullseye-5.10').abi}-arm64"
    with pytest.raises(UserError, match="unsupported kernel"):
        pins.get("4.19")


@pytest.mark.parametrize("a,b,expected", [
    ("1.0~rc1", "1.0", -1), ("6.1.153-1", "6.1.148-1", 1), ("1:1.0", "2.0", 1),
    ("1.0", "1.0", 0), ("1.0-1", "1.0-1+deb12u1", -1), ("1.37.0-6+b9", "1.37.0-6", 1)])
def test_debian_version_order(a, b, expected):
    assert debversion.compare(a, b) == expected
