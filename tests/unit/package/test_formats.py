"""Control files, RPM spec and tarball as generated (no packaging tool runs here), and every refusal
happening before anything is written."""
import gzip
import io
import tarfile

import pytest

from kmod.errors import InfraError, UserError
from kmod.package import deb, dkms, package, parse_formats, payload, rpm, tarball
from kmod.spec import Module

from .conftest import tree, write_manifest


@pytest.fixture
def pl(project):
    return payload.build(project, project.modules["clone_probe"], None)


def test_payload_is_the_dkms_source_tree(pl):
    assert list(pl.files) == [f"usr/src/clone-probe-1.2.3/{n}" for n in
                              ("Kbuild", "Makefile", "clone_probe.c", "dkms.conf")]
    assert all(mode == 0o644 for _, mode in pl.files.values())
    assert not any(p.endswith((".o", ".ko")) for p in pl.files)


def test_deb_control_and_scripts(pl):
    files = deb.data_files(pl)
    ctl = {k: v[0].decode() for k, v in deb.control_files(pl, files).items()}
    fields = dict(ln.split(": ", 1) for ln in ctl["control"].splitlines() if ln and not ln.startswith(" "))
    assert fields["Package"] == "clone-probe-dkms" and fields["Version"] == "1.2.3"
    assert fields["Architecture"] == "all" and fields["Section"] == "kernel"
    assert fields["Depends"] == "dkms (>= 3.0.3-4~)"
    assert all(len(ln) <= 80 for ln in ctl["control"].splitlines())
    assert '/usr/lib/dkms/common.postinst "$DKMS_NAME" "$DKMS_VERSION"' in ctl["postinst"]
    assert "configure)" in ctl["postinst"] and "DKMS_NAME=clone-probe" in ctl["postinst"]
    assert 'dkms remove -m "$DKMS_NAME" -v "$DKMS_VERSION" --all' in ctl["prerm"]
    assert "conffiles" not in ctl
    md5 = ctl["md5sums"].splitlines()
    assert [ln.split("  ", 1)[1] for ln in md5] == list(files)
    assert deb.file_name(pl) == "clone-probe-dkms_1.2.3_all.deb"


def test_signing_adds_a_conffile_with_paths_only(project, tmp_path):
    secret = tmp_path / "MOK.priv"
    secret.write_text("-----BEGIN PRIVATE KEY----- secret-material")
    s = dkms.Signing.from_flags(str(secret), "/etc/mok/MOK.der")
    p = payload.build(project, project.modules["clone_probe"], s)
    conf = p.files["etc/dkms/framework.conf.d/clone-probe.conf"][0].decode()
    assert str(secret) in conf and "secret-material" not in conf
    ctl = deb.control_files(p, deb.data_files(p))
    assert ctl["conffiles"][0] == b"/etc/dkms/framework.conf.d/clone-probe.conf\n"
    assert "%config(noreplace) /etc/dkms/framework.conf.d/clone-probe.conf" in rpm.spec_text(p)
    assert all(b"secret-material" not in data for data, _ in p.files.values())


def test_rpm_spec(pl):
    spec = rpm.spec_text(pl)
    assert "Name:           clone-probe-dkms" in spec and "Release:        1" in spec
    assert "BuildArch:      noarch" in spec and "Requires:       dkms" in spec
    assert "dkms add -m clone-probe -v 1.2.3 --rpm_safe_upgrade" in spec
    assert "dkms install -m clone-probe -v 1.2.3 -k \"$kver\" --rpm_safe_upgrade" in spec
    assert "dkms remove -m clone-probe -v 1.2.3 --all --rpm_safe_upgrade" in spec
    assert "%dir /usr/src/clone-probe-1.2.3" in spec and "/usr/src/clone-probe-1.2.3/dkms.conf" in spec
    assert rpm.file_name(pl) == "clone-probe-dkms-1.2.3-1.noarch.rpm"


def test_tarball_is_a_dkms_tree_and_reproducible(pl):
    data = tarball.tar_bytes(pl)
    assert data == tarball.tar_bytes(pl)
    assert gzip.decompress(data)  # valid gzip
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names[0] == "dkms_source_tree"
        assert "dkms_source_tree/dkms.conf" in names
        assert {(m.uid, m.gid, m.uname, m.mtime) for m in tar.getmembers()} == {(0, 0, "root", pl.epoch)}
    assert tarball.file_name(pl) == "clone-probe-1.2.3.tar.gz"


def test_epoch_from_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert payload.epoch() == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UserError):
        payload.epoch()


@pytest.mark.parametrize("field,value", [("name", "Bad Name"), ("name", "x;rm"), ("name", "UPPER"),
                                         ("version", "1.0 beta"), ("version", "1..2"), ("version", "1.0-1"),
                                         ("version", "1.0$(id)"), ("version", "v1")])
def test_bad_names_and_versions_refused_before_writing(project, field, value):
    good = project.modules["clone_probe"]
    bad = Module(**{**{k: getattr(good, k) for k in ("name", "version", "template", "probes", "spec_dir")},
                    field: value})
    with pytest.raises(UserError):
        package(project, [bad], ["tarball"], lint=False)
    assert tree(project.dist) == []


def test_manifest_failure_refused_unless_forced(project):
    write_manifest(project, {"clone_probe/bookworm-6.1/x86_64": {"result": "failed"},
                             "clone_probe/trixie-6.12/x86_64": {"result": "ok",
                                                                "lint": [{"rule": "fpu", "severity": "error"}]},
                             "other/bookworm-6.1/x86_64": {"result": "failed"}})
    m = project.modules["clone_probe"]
    with pytest.raises(UserError, match=r"bookworm-6.1/x86_64 \(build failed\).*--force"):
        package(project, [m], ["tarball"], lint=False)
    assert not (project.dist / "packages").exists()
    built = package(project, [m], ["tarball"], force=True, lint=False)
    assert [b.path.name for b in built] == ["clone-probe-1.2.3.tar.gz"]


def test_lint_failure_alone_is_refused(project):
    write_manifest(project, {"clone_probe/trixie-6.12/x86_64": {"result": "ok", "lint": [
        {"rule": "fpu-unguarded", "severity": "error"}, {"rule": "x", "severity": "warning"}]}})
    with pytest.raises(UserError, match="lint fpu-unguarded"):
        package(project, [project.modules["clone_probe"]], ["tarball"], lint=False)


@pytest.mark.parametrize("fmt,tool,pkg", [("deb", "dpkg-deb", "dpkg"), ("rpm", "rpmbuild", "rpm")])
def test_missing_tool_is_one_line(project, monkeypatch, fmt, tool, pkg):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InfraError) as e:
        package(project, [project.modules["clone_probe"]], [fmt], lint=False)
    assert e.value.line() == f"environment error: {tool} is missing (to build the .{fmt}) (apt-get install {pkg})"
    assert tree(project.dist) == []


def test_missing_lintian_names_the_way_out(project, monkeypatch, tmp_path):
    import os
    import shutil
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("dpkg-deb") or "/usr/bin/true"
    os.symlink(real, bin_dir / "dpkg-deb")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(InfraError, match=r"lintian is missing .*--no-lintian.*apt-get install lintian"):
        package(project, [project.modules["clone_probe"]], ["deb"])


def test_formats_parsing():
    assert parse_formats("") == ["deb", "rpm", "tarball"]
    assert parse_formats("rpm, deb,rpm") == ["rpm", "deb"]
    with pytest.raises(UserError, match="unknown package format"):
        parse_formats("snap")


def test_unsafe_source_file_name_refused(tmp_path):
    from kmod import spec as specmod
    src = tmp_path / "src"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := m1.o\n")
    (src / "bad name.c").write_text("")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "m1"\nsource = "src"\n')
    project = specmod.load(tmp_path / "kmod.toml")
    with pytest.raises(UserError, match="cannot be packaged"):
        package(project, [project.modules["m1"]], ["tarball"], lint=False)
    assert not (project.dist / "packages").exists()


def test_rpm_spec_escapes_macros(tmp_path):
    """A description or homepage with % must not run rpm macros (%(...) would run a shell)."""
    from kmod import spec as specmod
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "m1"\nsymbols = ["kernel_clone"]\n'
                                        'description = "100% sure %(touch /tmp/pwned) %{_bindir}"\n'
                                        '[package.m1]\nhomepage = "https://example.org/%7Ex"\n')
    project = specmod.load(tmp_path / "kmod.toml")
    spec = rpm.spec_text(payload.build(project, project.modules["m1"], None))
    assert "100%% sure %%(touch /tmp/pwned) %%{_bindir}" in spec
    assert "https://example.org/%%7Ex" in spec
