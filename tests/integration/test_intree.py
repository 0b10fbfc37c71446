"""toolchains/intree_modules.txt is what `python -m kmod.intree` makes from the current lock."""
import pytest

from kmod import arch, intree, pins

pytestmark = pytest.mark.integration


def test_made_from_the_locked_images():
    expected = {f"{p.name}/{a}": p.package("image", arch.get(a)).sha256
                for p in pins.all_pins().values() if p.locked for a in p.arches}
    assert intree.sources() == expected, "the lock changed: run `python -m kmod.intree` and commit"


def test_every_module_of_a_pinned_image_is_listed():
    pin, a = pins.get("bookworm-6.1"), arch.get("x86_64")
    names = intree.image_modules(pin, a)  # read from the real .deb (fetched and checked against the lock)
    assert len(names) > 3000 and {"ext4", "snd_hda_intel", "kvm"} <= names
    assert names <= intree.names()
