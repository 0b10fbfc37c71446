"""Arch and pin data: loaded from files, one place per fact, clear errors for the rest."""
import re

import pytest

from kmod import arch, pins
from kmod.archive import debversion
from kmod.errors import UserError


def test_arches_from_data():
    assert set(arch.names()) == {"x86_64", "arm64"}
    assert arch.get("aarch64") is arch.get("arm64")
    assert arch.get("amd64").debian_arch == "amd64"
    arm = arch.get("arm64")
    assert arm.make_vars("amd64") == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    assert arm.make_vars("arm64") == ["ARCH=arm64", "CROSS_COMPILE="]
    for a in arch.all_arches().values():
        assert {"binary", "machine", "cpu", "console"} <= set(a.qemu)


def test_unknown_arch():
    with pytest.raises(UserError, match=r"unsupported architecture: 'sparc'.*x86_64, arm64|arm64, x86_64"):
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
