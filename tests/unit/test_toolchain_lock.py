"""Which packages a toolchain image is made of follows from the pin, its arches' data and the verified
indexes alone (issue 8, item 3): a signed file:// archive with a small dependency graph."""
import pytest

from kmod import arch, pins
from kmod.archive import mirror, resolve, toolchain
from kmod.errors import UserError
from tests.archive_mirror import Archive, key  # noqa: F401 (a fixture)

SUITES = ("bookworm", "bookworm-updates", "bookworm-security")


@pytest.fixture
def catalogue(tmp_path, key, monkeypatch):
    a = Archive(tmp_path / "debian", key)

    def pkg(name, version="1", arch_="amd64", suite="bookworm", **fields):
        a.add(suite, name, version, arch_, f"{name} {version}".encode(), index_arch="amd64", **fields)
    pkg("libc6", "2.36-1", Priority="required")
    pkg("libc6", "2.36-2", suite="bookworm-security", Priority="required")
    pkg("dash", Priority="required", **{"Pre-Depends": "libc6 (>= 2.36-2)"})
    pkg("usrmerge", Depends="perl-not-here")
    pkg("init-system-helpers", Priority="required", Depends="usrmerge | usr-is-merged")
    pkg("usr-is-merged", arch_="all")
    pkg("apt", Depends="libc6, gpgv | gpgv2")
    pkg("gpgv2", Provides="gpgv")
    pkg("gcc-12", "12.2.0-14", Depends="cpp-12 (= 12.2.0-14), binutils, libc6 (>= 2.30)")
    pkg("cpp-12", "12.2.0-13")
    pkg("cpp-12", "12.2.0-14")
    pkg("cpp-12", "12.2.0-15", suite="bookworm-updates")  # newer, but gcc-12 wants = 12.2.0-14
    pkg("binutils")
    pkg("make")
    pkg("libc6-dev", Depends="libc6 (= 2.36-2)")
    pkg("gcc-12-aarch64-linux-gnu", "12.2.0-14cross1", Depends="libc6-arm64-cross")
    pkg("libc6-arm64-cross", "2.36-8cross1", arch_="all")
    pkg("binutils-aarch64-linux-gnu")
    for s in SUITES:
        a.publish(s, ["amd64"])
    monkeypatch.setenv("KMOD_ARCHIVE_KEYRING", str(key.keyring))
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    m = mirror.Mirror(a.uri, a.uri)
    return resolve.Catalogue(m, "bookworm", ["amd64"], log=lambda s: None)


def test_tool_names_follow_from_the_pin_and_the_arch_files():
    pin = pins.get("bookworm-6.1")
    names = toolchain.tool_names(pin, "amd64")
    assert names[:3] == ["gcc-12", "libc6-dev", "make"]
    for a in pin.arches:
        triplet = arch.get(a).gnu_triplet
        assert (f"gcc-12-{triplet}" in names) == (arch.get(a).debian_arch != "amd64")
    assert toolchain.tool_names(pin, "amd64", arch.get("x86_64")) == ["gcc-12", "libc6-dev", "make"]


def test_lock_is_the_closure_at_exact_versions(catalogue):
    import dataclasses
    # the small archive holds the arm64 cross tools only: the pin's other foreign arches left out
    pin = dataclasses.replace(pins.get("bookworm-6.1"), arches=("x86_64", "arm64"))
    locked = {p.name: p for p in toolchain.lock(catalogue, pin, [], "amd64")}
    base = {n for n, p in locked.items() if p.role == "base"}
    assert base == {"libc6", "dash", "init-system-helpers", "usr-is-merged", "apt", "gpgv2"}
    assert "usrmerge" not in locked  # bookworm: debootstrap's own exclusion (toolchains/image.toml)
    assert locked["libc6"].version == "2.36-2"
    assert locked["cpp-12"].version == "12.2.0-14"  # the newest that satisfies gcc-12's "="
    tools = {n for n, p in locked.items() if p.role == "toolchain"}
    assert tools == {"gcc-12", "cpp-12", "binutils", "make", "libc6-dev", "gcc-12-aarch64-linux-gnu",
                     "libc6-arm64-cross", "binutils-aarch64-linux-gnu"}
    assert all(p.sha256 and p.filename.startswith("pool/") for p in locked.values())


def test_a_dependency_no_index_offers_is_one_line(catalogue, monkeypatch):
    spec = {**toolchain.image_spec(), "tools": ["{compiler}", "no-such-tool"]}
    monkeypatch.setattr(toolchain, "image_spec", lambda: spec)
    with pytest.raises(UserError, match="no version of no-such-tool"):
        toolchain.lock(catalogue, pins.get("bookworm-6.1"), [], "amd64")
