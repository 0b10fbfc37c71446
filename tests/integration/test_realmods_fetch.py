"""tests/realmods.py: real module sources found in the mirror's indexes, downloaded with their sha256
checked, unpacked once into the cache."""
import pytest

from tests.realmods import RealModules

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mods():
    return RealModules()


def test_dkms_package_unpacks_to_its_dkms_tree(mods):
    src = mods.dkms_source("ddcci-dkms", "bookworm")
    pkg = mods.package("ddcci-dkms", "bookworm")
    assert src.name == f"ddcci-{pkg.version.split('-')[0]}"
    conf = (src / "dkms.conf").read_text()
    assert 'PACKAGE_NAME="ddcci"' in conf and "BUILT_MODULE_LOCATION[1]" in conf
    assert mods.dkms_source("ddcci-dkms", "bookworm") == src  # second time: the cached tree


def test_kernel_kprobe_samples(mods):
    d = mods.kernel_samples("bookworm", "6.1", "kprobes")
    assert {"kprobe_example.c", "kretprobe_example.c", "Makefile"} <= {p.name for p in d.iterdir()}
    assert "CONFIG_SAMPLE_KPROBES" in (d / "Makefile").read_text()


def test_unknown_package_is_a_lookup_error(mods):
    with pytest.raises(LookupError, match="no package"):
        mods.package("no-such-package-dkms", "bookworm")
