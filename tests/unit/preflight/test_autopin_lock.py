"""An auto-pin in the lock: exactly one kernel (ABI, flavour, Debian version) resolved like every pin,
loaded back as a pin of its own that derives from its suite's pin, without disturbing the others."""
import json
import shutil

import pytest

from kmod import arch as archmod
from kmod import flavour as flavourmod
from kmod import paths, pins
from kmod.archive import resolve
from tests.conftest import ROOT


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "toolchains", tmp_path / "toolchains")
    monkeypatch.setenv("KMOD_TOOLCHAINS", str(tmp_path / "toolchains"))
    pins.all_pins.cache_clear()
    yield tmp_path / "toolchains"
    pins.all_pins.cache_clear()


class Catalogue:
    """resolve.Catalogue's interface over a few records: two versions of each package of one ABI."""

    def __init__(self, abi, flavour, versions):
        self.records = {}
        for v in versions:
            for name, arch in ((f"linux-headers-{abi}-common", "all"), (f"linux-headers-{abi}-{flavour}", "amd64"),
                               (f"linux-image-{abi}-{flavour}-unsigned", "amd64"), ("linux-kbuild-6.1", "amd64"),
                               ("busybox-static", "amd64")):
                rec = {"Package": name, "Version": v, "Architecture": arch, "Filename": f"pool/{name}_{v}.deb",
                       "SHA256": "ab" * 32, "Size": "1"}
                self.records.setdefault((name, arch), []).append((rec, "security"))

    def versions(self, name, arch):
        return sorted(self.records.get((name, arch)) or self.records.get((name, "all")) or [],
                      key=lambda c: c[0]["Version"], reverse=True)


def test_exactly_the_hosts_build_is_chosen(monkeypatch):
    monkeypatch.setattr(resolve, "_downloadable", lambda pkg, mirror: True)
    base, a = pins.get("bookworm-6.1"), archmod.get("x86_64")
    cat = Catalogue("6.1.0-56", "cloud-amd64", ["6.1.192-1", "6.1.192-2"])
    pkgs = resolve.packages_for_abi(cat, None, base, "6.1.0-56", "amd64", log=lambda s: None,
                                    flavours={"x86_64": "cloud-amd64"}, version="6.1.192-1")
    by_role = {(p.role, p.for_arch): p for p in pkgs}
    assert by_role[("image", "x86_64")].name == "linux-image-6.1.0-56-cloud-amd64-unsigned"
    assert by_role[("image", "x86_64")].version == "6.1.192-1"          # not the newer build
    assert by_role[("headers", "x86_64")].version == "6.1.192-1" == by_role[("headers-common", "")].version
    assert by_role[("kbuild", "")].version == "6.1.192-2"               # kbuild: the newest that downloads
    assert not [p for p in pkgs if p.for_arch == "arm64"]                # only the host's arch
    logs = []
    assert resolve.packages_for_abi(cat, None, base, "6.1.0-56", "amd64", log=logs.append,
                                    flavours={"x86_64": "cloud-amd64"}, version="6.1.150-1") is None
    assert "no downloadable linux-headers-6.1.0-56-common 6.1.150-1" in logs[0]


def test_an_rt_kernel_takes_the_common_headers_its_flavour_file_names(monkeypatch):
    """rt's headers need linux-headers-ABI-common-rt (toolchains/flavours/rt.toml), not the generic ones."""
    monkeypatch.setattr(resolve, "_downloadable", lambda pkg, mirror: True)
    base = pins.get("bookworm-6.1")
    cat = Catalogue("6.1.0-56", "rt-amd64", ["6.1.192-1"])
    common = cat.records.pop(("linux-headers-6.1.0-56-common", "all"))
    cat.records[("linux-headers-6.1.0-56-common-rt", "all")] = [
        (dict(rec, Package="linux-headers-6.1.0-56-common-rt"), archive) for rec, archive in common]
    pkgs = resolve.packages_for_abi(cat, None, base, "6.1.0-56", "amd64", log=lambda s: None,
                                    flavours={"x86_64": "rt-amd64"})
    assert [p.name for p in pkgs if p.role == "headers-common"] == ["linux-headers-6.1.0-56-common-rt"]


def test_a_release_word_maps_back_to_its_flavour():
    a, b = archmod.get("x86_64"), archmod.get("arm64")
    assert flavourmod.of_release("rt-amd64", a).name == "rt" and flavourmod.of_release("rt-arm64", b).name == "rt"
    assert flavourmod.of_release("cloud-amd64", a).name == "cloud"
    assert flavourmod.of_release("amd64", a).name == "generic"
    assert flavourmod.of_release("rt-arm64", a) is None and flavourmod.of_release("weird-amd64", a) is None


def test_an_auto_pin_in_the_lock_is_a_pin_of_its_own(scratch):
    base, a = pins.get("bookworm-6.1"), archmod.get("x86_64")
    entry = {"abi": base.abi(a), "base": base.name, "flavour": "cloud-amd64", "arches": ["x86_64"],
             "packages": [dict(p.__dict__, name=p.name.replace("-amd64", "-cloud-amd64"))
                          for p in base.packages if p.for_arch in ("", "x86_64")]}
    data = pins.read_lock()
    data["bookworm-6.1.0-56-cloud-amd64"] = entry
    pins.write_lock(data)
    p = pins.get("bookworm-6.1.0-56-cloud-amd64")
    assert (p.base, p.suite, p.compiler, p.arches) == ("bookworm-6.1", "bookworm", base.compiler, ("x86_64",))
    assert p.release(a) == f"{base.abi(a)}-cloud-amd64" and p.kdir(a).endswith("-cloud-amd64")
    # a "generic" cell of its own pin, and still a cloud kernel: its flavour's data (boot_append, headers)
    assert p.flavour_of(a).name == "cloud" and base.flavour_of(a).name == "generic"
    assert p.lock_entry()["base"] == "bookworm-6.1"
    assert pins.get("6.1") is pins.get("bookworm-6.1")                  # the short names still mean the base
    assert pins.get("bookworm").name == "bookworm-6.1"
    assert json.loads((scratch / "kernels.lock").read_text())["pins"]["bookworm-6.1"]["kernels"] == base.kernels
    assert paths.toolchains() == scratch
