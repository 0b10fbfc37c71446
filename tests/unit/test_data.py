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
        for a, f in pin.planned():
            if not pin.has(a, f.name):
                assert not f.is_generic, f"{pin.name}/{a.name}: a generic kernel is always locked"
                continue
            abi = pin.abi(a, f.name)
            assert re.match(pin.abi_regex, abi)
            for role in ("headers", "image", "busybox", "kbuild", "headers-common"):
                pkg = pin.package(role, a, f.name)
                assert pkg.abi in (abi, "") and (pkg.for_arch in (a.name, ""))
            assert pin.package("image", a, f.name).name == a.image_package_name(pin.release(a, f.name))
        for p in pin.packages:
            assert re.fullmatch(r"[0-9a-f]{64}", p.sha256) and p.filename.startswith("pool/")


def test_each_arch_keeps_its_own_newest_abi():
    """An arch whose newest ABIs are missing from the mirror does not drag the others back (bullseye:
    the newest amd64 ABIs have no arm64 packages)."""
    pin = pins.get("bullseye-5.10")
    x86, arm = arch.get("x86_64"), arch.get("arm64")
    key = lambda abi: [int(n) for n in re.findall(r"\d+", abi)]
    assert key(pin.abi(x86)) >= key(pin.abi(arm))
    assert pin.kdir(x86) == f"/usr/src/linux-headers-{pin.abi(x86)}-amd64"


def test_a_format_1_lock_reads_as_generic(tmp_path, monkeypatch):
    from kmod import paths
    import shutil, json
    shutil.copytree(paths.toolchains(), tmp_path / "toolchains")
    lock = json.loads((tmp_path / "toolchains/kernels.lock").read_text())
    old = {"abi": "6.1.0-56", "packages": [
        {k: v for k, v in p.items() if k not in ("abi", "flavour")}
        for p in lock["pins"]["bookworm-6.1"]["packages"]]}
    lock = {"format": 1, "pins": {"bookworm-6.1": old}}
    (tmp_path / "toolchains/kernels.lock").write_text(json.dumps(lock))
    monkeypatch.setattr(paths, "toolchains", lambda: tmp_path / "toolchains")
    pins.all_pins.cache_clear()
    try:
        pin = pins.get("bookworm-6.1")
        assert pin.abi(arch.get("arm64")) == "6.1.0-56" and pin.package("headers", arch.get("arm64")).for_arch == "arm64"
        assert not pins.get("trixie-6.12").locked
    finally:
        pins.all_pins.cache_clear()


def test_pin_lookup():
    assert pins.get("6.1").name == "bookworm-6.1"
    assert pins.get("trixie").name == "trixie-6.12"
    assert pins.get("bullseye-5.10").release(arch.get("arm64")) == f"{pins.get('bullseye-5.10').abi(arch.get('arm64'))}-arm64"
    assert pins.get_label("bookworm-6.1-rt")[1] == "rt" and pins.get_label("bookworm-6.1")[1] == "generic"
    with pytest.raises(UserError, match="unsupported kernel"):
        pins.get("4.19")


@pytest.mark.parametrize("a,b,expected", [
    ("1.0~rc1", "1.0", -1), ("6.1.153-1", "6.1.148-1", 1), ("1:1.0", "2.0", 1),
    ("1.0", "1.0", 0), ("1.0-1", "1.0-1+deb12u1", -1), ("1.37.0-6+b9", "1.37.0-6", 1)])
def test_debian_version_order(a, b, expected):
    assert debversion.compare(a, b) == expected
