"""The boot test's cached kernel (kmod.boot.kernel, kmod.archive.unpacked; issue 8 item 4): the pin's real
linux-image .deb, unpacked into a private KMOD_CACHE (it is unpacked twice: about 13 s)."""
import shutil

import pytest

from kmod.archive import fetch, unpacked
from tests.conftest import need_tool

pytestmark = pytest.mark.integration


def test_the_boot_kernel_and_its_vmlinux_are_checked(tmp_path, monkeypatch, capsys):
    """The pin's real kernel image: the vmlinux QEMU boots (made of the bzImage) is in the manifest from
    the start, so a changed vmlinux is unpacked and made again, with one note."""
    need_tool("dpkg-deb")
    from kmod import arch, pins
    from kmod.boot import kernel
    pin, x86 = pins.get("bookworm-6.1"), arch.get("x86_64")
    pkg = pin.package("image", x86)
    deb = fetch.fetch(pkg)
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    fetch.cached_path(pkg).parent.mkdir(parents=True)
    shutil.copy(deb, fetch.cached_path(pkg))
    k = kernel.kernel(pin, x86)
    assert k.image.name == "vmlinux" and unpacked.check(k.image.parent) == ""
    capsys.readouterr()
    with open(k.image, "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    again = kernel.kernel(pin, x86)
    assert again.image == k.image and unpacked.check(k.image.parent) == ""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed: vmlinux differs from what was unpacked" in err[0]
