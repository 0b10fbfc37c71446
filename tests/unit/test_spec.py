from pathlib import Path

import pytest

from kmod import spec
from kmod.errors import UserError


@pytest.mark.parametrize("text,symbol,offset", [
    ("kernel_clone", "kernel_clone", 0),
    ("do_sys_openat2+0x10", "do_sys_openat2", 16),
    ("tcp_v4_connect+4", "tcp_v4_connect", 4),
    ("foo.isra.0", "foo.isra.0", 0),
    ("bar.constprop.0.cold", "bar.constprop.0.cold", 0),
    ("baz.part.12", "baz.part.12", 0),
])
def test_valid_symbols(text, symbol, offset):
    p = spec.parse_probe(text)
    assert (p.symbol, p.offset) == (symbol, offset)


@pytest.mark.parametrize("text", [
    "", "a b", "x;y", "../etc", '"q"', "1abc", "kernel_clone\n", "x\ny", "foo.bar", "foo+", "foo+0xZZ",
    "a" * 200, "$(reboot)", "foo.isra", "x`id`",
])
def test_invalid_symbols_refused(text):
    with pytest.raises(UserError, match="not a kernel symbol"):
        spec.parse_probe(text)


@pytest.mark.parametrize("name", ["", "Abc", "a b", "../x", "1a", "a" * 56, "a\n", "a.b", "a-"])
def test_invalid_module_names(name):
    with pytest.raises(UserError, match="module name"):
        spec.check_name(name)


@pytest.mark.parametrize("version", ["", "1-2", "a1", "1..2", "1 2", "1;rm", "1/2", "1\n"])
def test_invalid_versions(version):
    with pytest.raises(UserError, match="version"):
        spec.check_version(version)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kmod.toml"
    p.write_text(text)
    return p


def test_load_defaults_and_select(tmp_path):
    project = spec.load(write(tmp_path, '[[module]]\nname = "a"\nsymbols = ["kernel_clone"]\n'
                                        '[[module]]\nname = "b"\ntemplate = "kretprobe"\nsymbols = ["vfs_read"]\n'))
    assert [m.name for m in project.select(None)] == ["a"]
    assert [m.name for m in project.select("all")] == ["a", "b"]
    m = project.modules["a"]
    assert (m.license, m.version, m.template, m.package_name) == ("GPL", "0.1.0", "kprobe", "a")
    with pytest.raises(UserError, match="unknown module 'c'"):
        project.select("c")


@pytest.mark.parametrize("body,message", [
    ('name = "a"\n', "no symbols"),
    ('name = "a"\nsymbols = ["x"]\ntemplate = "uprobe"\n', "unknown template"),
    ('name = "a"\nsymbols = ["x"]\nlicense = "GPL\\"; evil"\n', "license"),
    ('name = "a"\nsymbols = ["x"]\nrecord_args = 9\n', "record_args"),
    ('name = "a"\ntemplate = "kretprobe"\nsymbols = ["x+4"]\n', "function entry"),
    ('name = "a"\nsymbols = ["x"]\nrecord_retval = true\n', "kretprobe"),
    ('name = "a"\nsymbols = ["x"]\ncolour = 1\n', "unknown key"),
    ('name = "a"\nsymbols = ["x"]\narches = ["sparc"]\n', "unsupported architecture"),
    ('name = "a"\nsymbols = ["x", "x"]\n', "twice"),
    ('name = "a"\nsymbols = ["x+8"]\nrecord_args = 1\n', "function entry"),
])
def test_bad_specs(tmp_path, body, message):
    with pytest.raises(UserError, match=message):
        spec.load(write(tmp_path, "[[module]]\n" + body))


def test_not_toml(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        spec.load(write(tmp_path, "[[module]\n"))


def test_symbol_override(tmp_path):
    project = spec.load(write(tmp_path, '[[module]]\nname = "a"\nsymbols = ["kernel_clone"]\nrecord_args = 2\n'))
    m = spec.with_overrides(project.modules["a"], "vfs_read,vfs_write.isra.0")
    assert [str(p) for p in m.probes] == ["vfs_read", "vfs_write.isra.0"]
    assert m.record_args == 2
    with pytest.raises(UserError, match="function entry"):
        spec.with_overrides(project.modules["a"], "vfs_write+0x8")
    with pytest.raises(UserError):
        spec.with_overrides(project.modules["a"], "bad symbol")


def test_find_walks_up(tmp_path, monkeypatch):
    write(tmp_path, '[[module]]\nname = "a"\nsymbols = ["x"]\n')
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    monkeypatch.delenv("KMOD_SPEC", raising=False)
    assert spec.find() == tmp_path / "kmod.toml"


def test_names_with_dashes_are_the_kernels_names(tmp_path):
    assert spec.check_name("ddcci-backlight") == "ddcci-backlight"
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "hid-kye"\nsymbols = ["kernel_clone"]\n')
    m = spec.load(tmp_path / "kmod.toml").modules["hid-kye"]
    assert (m.kernel_name, m.package_name) == ("hid_kye", "hid-kye")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "a-b"\nsymbols = ["x"]\n'
                                        '[[module]]\nname = "a_b"\nsymbols = ["x"]\n')
    with pytest.raises(UserError, match="same name to the kernel"):
        spec.load(tmp_path / "kmod.toml")
