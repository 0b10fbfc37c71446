"""Secure Boot as a host reports it (mokutil --sb-state, or the SecureBoot efivar when mokutil is not
there: fixtures/secureboot/), and what it means for signatures: with lockdown unreadable, Secure Boot on
and CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT=y the kernel is locked down (integrity), so only signed modules
load."""
import dataclasses
import re

import pytest

from kmod.preflight import facts, kernels
from kmod.preflight.verdict import FAIL, PASS, WARN, enforcement, judge
from tests.unit.preflight.conftest import FIXTURES
from tests.unit.preflight.test_verdict import crcs

SB = FIXTURES / "secureboot"


def host_says(secureboot: str, efi: str = "efi", lockdown: str | None = None) -> facts.Facts:
    """The recorded VM's answer with its efi, secureboot (and lockdown) sections replaced."""
    text = (FIXTURES / "facts-bookworm-sig-enforce.txt").read_text()

    def section(name: str, body: str) -> None:
        nonlocal text
        text = re.sub(rf"(?ms)^({re.escape(facts.MARKER)} {name}\n).*?(?=^{re.escape(facts.MARKER)} )",
                      lambda m: m.group(1) + body, text)
    section("efi", efi + "\n")
    section("secureboot", secureboot)
    if lockdown is not None:
        section("lockdown", lockdown)
    return facts.parse(text)


@pytest.mark.parametrize("fixture,state", [
    ("mokutil-enabled.txt", True),
    ("mokutil-disabled.txt", False),
    ("mokutil-shim-validation-off.txt", False),    # shim tells the kernel (MokSBStateRT): not enforced
    ("mokutil-unsupported.txt", False),
    ("mokutil-no-efivars.txt", None),
    ("efivar-on.txt", True),
    ("efivar-off.txt", False),
    ("efi-nothing-readable.txt", None),
])
def test_secure_boot_state(fixture, state):
    assert host_says((SB / fixture).read_text()).secure_boot is state


def test_bios_has_no_secure_boot():
    assert host_says("", efi="bios").secure_boot is False


def locked(f: facts.Facts, config: str | None = "y", sig_enforce=False) -> facts.Facts:
    cfg = dict(f.config)
    if config is None:
        cfg.pop("CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT", None)
    else:
        cfg["CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT"] = config
    return dataclasses.replace(f, config=cfg, sig_enforce=sig_enforce)


def test_secure_boot_with_lockdown_unreadable_is_enforcement():
    f = locked(host_says((SB / "mokutil-enabled.txt").read_text(), lockdown="\n"))
    assert f.lockdown is None and f.secure_boot
    why = enforcement(f)
    assert "Secure Boot" in why and "CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT=y" in why
    # lockdown readable says what it is, whatever the config
    assert enforcement(locked(host_says((SB / "mokutil-enabled.txt").read_text()))) == ""
    # Secure Boot off, or a kernel that does not lock down under it: no enforcement from it
    assert enforcement(locked(host_says((SB / "efivar-off.txt").read_text(), lockdown="\n"))) == ""
    assert enforcement(locked(host_says((SB / "efivar-on.txt").read_text(), lockdown="\n"), config="n")) == ""


def test_an_unsigned_cell_is_refused_under_it(vm_facts, module_info):
    sb = host_says((SB / "efivar-on.txt").read_text(), lockdown="\n")
    f = locked(dataclasses.replace(vm_facts, efi=True, secure_boot=sb.secure_boot, lockdown=None, mok="no-key"))
    k = kernels.classify(f.release, f.machine, f.debian_version)
    v = judge(f, k, module_info(crcs(vm_facts)), "vm")
    assert v.status == FAIL and "Secure Boot" in v.reason and "is unsigned" in v.reason, v.reason
    # the kernel's config unread: not known to be enforced, but said
    f = locked(f, config=None)
    v = judge(f, k, module_info(crcs(vm_facts)), "vm")
    assert v.status == WARN and any(x.rule == "signature-policy-unknown" for x in v.findings), v.findings
    # Secure Boot off: loads as is
    f = dataclasses.replace(f, secure_boot=False)
    assert judge(f, k, module_info(crcs(vm_facts)), "vm").status == PASS
