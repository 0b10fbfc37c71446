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
    ('name = "a"\nsymbols = ["x"]\ntemplate = "uprobe"\n', "not one of kprobe, kretprobe"),
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
    # hid-kye is also an in-tree module of the pinned kernels: the spec says it replaces it on purpose
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "hid-kye"\nsymbols = ["kernel_clone"]\n'
                                        'replaces_in_tree = true\n')
    m = spec.load(tmp_path / "kmod.toml").modules["hid-kye"]
    assert (m.kernel_name, m.package_name) == ("hid_kye", "hid-kye")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "a-b"\nsymbols = ["x"]\n'
                                        '[[module]]\nname = "a_b"\nsymbols = ["x"]\n')
    with pytest.raises(UserError, match="same name to the kernel"):
        spec.load(tmp_path / "kmod.toml")


# --- the typed schema: wrong types, unknown keys, shapes (issue 9, items 4 and 5) -------------------

def load_text(tmp_path, text):
    return spec.load(write(tmp_path, text))


@pytest.mark.parametrize("text,message,hint", [
    ('[[module]]\nname = "a"\nsymbols = "kernel_clone"\n', "symbols must be a list of strings, not the string",
     'write symbols = ["kernel_clone"]'),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\narches = "x86_64"\n', "arches must be a list of strings",
     'write arches = ["x86_64"]'),
    ('[[module]]\nname = "a"\ntemplate = "kretprobe"\nsymbols = ["x"]\nrecord_retval = "false"\n',
     "record_retval must be true or false, not the string", "write record_retval = false, without quotes"),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\nrecord_args = "2"\n', "record_args must be an integer",
     "write record_args = 2, without quotes"),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\nrecord_args = true\n', "record_args must be an integer", None),
    ('[[module]]\nname = "a"\nsource = 5\n', "source must be a string, not the number 5", 'write source = "5"'),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\nsymbol = ["y"]\n', "unknown key 'symbol'", "did you mean 'symbols'?"),
    ('[module]\nname = "a"\nsymbols = ["x"]\n', "module must be an array of tables, not a table",
     "write [[module]], with two brackets"),
    ('modules = 1\n[[module]]\nname = "a"\nsymbols = ["x"]\n', "unknown key 'modules'", "did you mean 'module'?"),
    ('default = "a"\n[[module]]\nname = "a"\nsymbols = ["x"]\n', "default must be a list of strings",
     'write default = ["a"]'),
    ('default = ["b"]\n[[module]]\nname = "a"\nsymbols = ["x"]\n', "default names 'b', which is not a declared module", None),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\n[package.b]\nhomepage = "https://x.org"\n',
     r"\[package.b\] names no declared module", None),
    ('[[module]]\nname = "clone"\nsymbols = ["x"]\n[package.clones]\n', r"\[package.clones\] names no declared",
     r"did you mean \[package.clone\]?"),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\n[package.a]\nmaintaner = "A <a@b.c>"\n', "unknown key 'maintaner'",
     "did you mean 'maintainer'?"),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\n[package.a]\nmake = ["make"]\n', "make must be a string, not a list",
     None),
    ('[[module]]\nname = "a"\nsymbols = ["x"]\npackage = 3\n', "unknown key 'package'", None),
    ('package = 3\n[[module]]\nname = "a"\nsymbols = ["x"]\n', "package must be a table of tables", None),
    ('[[module]]\nsymbols = ["x"]\n', "name is missing", None),
    ('[[module]]\nname = "a"\nsource = "."\nrecord_args = 1\n', "record_args does not apply to a hand-written", None),
])
def test_schema_refuses_with_one_line(tmp_path, text, message, hint):
    if "source" in text:
        (tmp_path / "Kbuild").write_text("obj-m := a.o\n")
    with pytest.raises(UserError, match=message) as e:
        load_text(tmp_path, text)
    assert "\n" not in e.value.line()
    if hint:
        assert e.value.hint and e.value.hint.startswith(hint.replace("\\", "")), e.value.hint


def test_repeats_collapse(tmp_path):
    from kmod import arch, pins
    project = load_text(tmp_path, 'default = ["a", "a"]\n[[module]]\nname = "a"\nsymbols = ["x"]\n'
                                  'arches = ["x86_64", "amd64", "x86_64"]\n')
    assert project.default == ("a",) and project.modules["a"].arches == ("x86_64",)
    assert [m.name for m in project.select("a,a")] == ["a"]
    assert [a.name for a in arch.select("x86_64,x86_64,amd64")] == ["x86_64"]
    assert [p.name for p in pins.select("6.1,bookworm,bookworm-6.1")] == ["bookworm-6.1"]
    with pytest.raises(UserError, match="empty name"):
        arch.select("x86_64,,arm64")


def test_spec_that_is_not_utf8_or_a_folder(tmp_path):
    (tmp_path / "kmod.toml").write_bytes(b'[[module]]\nname = "\xff"\n')
    with pytest.raises(UserError, match="not UTF-8"):
        spec.load(tmp_path / "kmod.toml")
    with pytest.raises(UserError, match="is a folder"):
        spec.load(tmp_path)


def test_packaging_options_parsed_at_load(tmp_path):
    project = load_text(tmp_path, '[[module]]\nname = "a"\nsymbols = ["x"]\n'
                                  '[package.a]\nmake = "make all"\nbuild_exclusive_kernel_min = "6.1"\n')
    assert project.packaging["a"].directives == {"MAKE[0]": "make all", "BUILD_EXCLUSIVE_KERNEL_MIN": "6.1"}


# Every key of every table, fed every TOML type it does not take: always a UserError naming the key.
WRONG = {"string": '"zz"', "integer": "7", "float": "1.5", "boolean": "true", "strings": '["zz"]',
         "integers": "[1, 2]", "table": "{ a = 1 }", "tables": "[{ a = 1 }]", "datetime": "1979-05-27T07:32:00Z"}


def _cases():
    from kmod import schema
    out = []
    for table, cls in (("module", spec.Module), ("package", spec.Packaging), ("top", spec.SpecFile)):
        for k in schema.keys(cls):
            for kind, literal in WRONG.items():
                out.append(pytest.param(table, k, literal, id=f"{table}.{k.name}={kind}"))
    return out


def _conforms(k, literal):
    import tomllib

    from kmod import schema
    return schema.conforms(tomllib.loads(f"v = {literal}")["v"], k.type)


@pytest.mark.parametrize("table,k,literal", _cases())
def test_every_key_every_wrong_type(tmp_path, table, k, literal):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Kbuild").write_text("obj-m := m.o\n")
    module = {"name": '"m"', "symbols": '["kernel_clone"]'}
    package, top = {}, {}
    {"module": module, "package": package, "top": top}[table][k.name] = literal
    text = "".join(f"{n} = {v}\n" for n, v in top.items())
    text += "[[module]]\n" + "".join(f"{n} = {v}\n" for n, v in module.items()) if "module" not in top else ""
    text += "[package.m]\n" + "".join(f"{n} = {v}\n" for n, v in package.items()) if table == "package" else ""
    try:
        spec.load(write(tmp_path, text))
    except UserError as e:
        assert "\n" not in e.line()
        assert k.name in e.message, e.line()
        return
    assert _conforms(k, literal), f"{k.name} = {literal} was accepted"


def test_in_tree_module_names_refused_unless_replaced_on_purpose(tmp_path):
    """`ext4` as a module of ours would install to /updates/dkms and override the kernel's own ext4."""
    for name in ("ext4", "snd_hda_intel"):  # the kernel's snd-hda-intel: - and _ are one to the kernel
        with pytest.raises(UserError, match="in-tree module of the pinned kernels") as e:
            load_text(tmp_path, f'[[module]]\nname = "{name}"\nsymbols = ["x"]\n')
        assert "replaces_in_tree = true" in e.value.hint
    m = load_text(tmp_path, '[[module]]\nname = "ext4"\nsymbols = ["x"]\nreplaces_in_tree = true\n').modules["ext4"]
    assert m.replaces_in_tree
    assert load_text(tmp_path, '[[module]]\nname = "ext4_probe"\nsymbols = ["x"]\n').modules["ext4_probe"]


@pytest.mark.parametrize("line, key", [('make_vars = { HDAPS = "1" }', "make_vars"), ('make_target = "all"', "make_target"),
                                       ('build_dir = "src"', "build_dir")])
def test_a_source_with_its_own_dkms_conf_refuses_the_build_keys_it_ignores(tmp_path, line, key):
    """Its own dkms.conf (MAKE[0], BUILT_MODULE_LOCATION) is what kmod's build and dkms run: these keys
    were silently without effect."""
    (tmp_path / "src" / "src").mkdir(parents=True)
    (tmp_path / "src" / "dkms.conf").write_text('PACKAGE_NAME="m"\n')
    (tmp_path / "kmod.toml").write_text(f'[[module]]\nname = "m"\nsource = "src"\n{line}\n')
    with pytest.raises(UserError) as e:
        spec.load(tmp_path / "kmod.toml")
    assert f"{key} is not used: the source has its own dkms.conf" in str(e.value)
    assert "\n" not in str(e.value)
    # without a dkms.conf of its own the same key is what the generated one is made from
    (tmp_path / "src" / "dkms.conf").unlink()
    (tmp_path / "src" / "src" / "Makefile").write_text("all:\n")
    (tmp_path / "src" / "Makefile").write_text("all:\n")
    assert spec.load(tmp_path / "kmod.toml").modules["m"].source is not None


def test_a_source_with_its_own_dkms_conf_refuses_package_directives_it_ignores(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "dkms.conf").write_text('PACKAGE_NAME="m"\n')
    body = '[[module]]\nname = "m"\nsource = "src"\n[package.m]\nmaintainer = "A B <a@b.org>"\n'
    (tmp_path / "kmod.toml").write_text(body)
    assert spec.load(tmp_path / "kmod.toml").packaging["m"].maintainer == "A B <a@b.org>"   # still used
    (tmp_path / "kmod.toml").write_text(body + 'build_exclusive_kernel_min = "6.1"\n')
    with pytest.raises(UserError) as e:
        spec.load(tmp_path / "kmod.toml")
    assert "[package.m]: build_exclusive_kernel_min is not used" in str(e.value)
    assert "BUILD_EXCLUSIVE_KERNEL_MIN" in str(e.value) and "\n" not in str(e.value)
