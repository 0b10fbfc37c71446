"""Hand-written source folders as shipped: modes kept, nothing followed out of the folder, special files
never opened; and the one license table every writer of a license reads."""
import os
import stat
import tarfile
import io

from kmod import licenses, render, spec
from kmod.lint import ruledata
from kmod.package import payload, tarball


def write_build(project, name, sources, kos, dkms=None):
    """A manifest as a successful build of every pin would leave it (kmod.build.matrix)."""
    import json
    cells = {f"{name}/{pin}/x86_64": {"result": "ok", "inputs": {"sources": sources.files},
                                      "kos": [{**k, "ko": f"{name}/{pin}/x86_64/{k['name']}.ko"} for k in kos],
                                      "dkms": dkms or {"conf": "generated"}}
             for pin in ("bookworm-6.1", "trixie-6.12")}
    project.dist.mkdir(parents=True, exist_ok=True)
    (project.dist / "manifest.json").write_text(json.dumps({"format": 1, "cells": cells, "runs": []}))


def make_source(root):
    (root / "sub").mkdir(parents=True)
    (root / "Makefile").write_text("obj-m := m.o\n")
    (root / "m.c").write_text("int x;\n")
    (root / "gen.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "gen.sh", 0o700)
    (root / "sub" / "h.h").write_text("#define H 1\n")
    (root / "m.o").write_bytes(b"\x7fELF")          # a build product: left out
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("x")     # hidden: left out
    os.symlink("sub/h.h", root / "alias.h")         # inside: read as the file it names
    os.symlink("sub", root / "linked")              # a folder inside: read as that folder
    os.symlink(".", root / "sub" / "loop")          # a folder that contains the link: left out
    return root


def test_modes_and_links_inside(tmp_path):
    src = make_source(tmp_path / "src")
    files, skipped = render.hand_written_files(src)
    assert sorted(files) == ["Makefile", "alias.h", "gen.sh", "linked/h.h", "m.c", "sub/h.h"]
    assert files["gen.sh"][1] == 0o755 and files["m.c"][1] == 0o644
    assert files["alias.h"][0] == b"#define H 1\n"
    assert skipped == ["linked/loop: a symbolic link to a folder that contains it",
                       "sub/loop: a symbolic link to a folder that contains it"]


def test_links_out_and_special_files_are_left_out_unread(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("password")
    src = make_source(tmp_path / "src")
    os.symlink(secret, src / "key.h")
    os.symlink("../../etc", src / "etc")
    os.symlink("missing.h", src / "dangling.h")
    os.mkfifo(src / "fifo.ko.c")  # opening it would hang the render forever
    os.link(secret, src / "hard.h")  # a second name of a file outside the folder
    files, skipped = render.hand_written_files(src)
    assert "hard.h" not in files and "hard.h: a hard link (2 names for one file), left out" in skipped
    assert "key.h" not in files and "etc" not in files and "fifo.ko.c" not in files
    assert not any(b"password" in data for data, _ in files.values())
    assert f"key.h: a symbolic link to {secret}, outside the source folder" in skipped
    assert "fifo.ko.c: not a regular file" in skipped
    assert any(s.startswith("dangling.h:") for s in skipped)


def test_render_keeps_modes_and_the_digest_sees_them(tmp_path):
    src = make_source(tmp_path / "src")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "m"\nsource = "src"\n')
    m = spec.load(tmp_path / "kmod.toml").modules["m"]
    first = render.render(m, tmp_path / "dist")
    assert stat.S_IMODE((tmp_path / "dist" / "gen.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "dist" / "m.c").stat().st_mode) == 0o644
    os.chmod(src / "gen.sh", 0o644)
    second = render.render(m, tmp_path / "dist")
    assert second.files == first.files and second.digest != first.digest
    assert stat.S_IMODE((tmp_path / "dist" / "gen.sh").stat().st_mode) == 0o644


def test_package_keeps_the_exec_bit(tmp_path):
    make_source(tmp_path / "src")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "m"\nversion = "1.0"\nsource = "src"\n')
    project = spec.load(tmp_path / "kmod.toml")
    sources = render.render(project.modules["m"], project.dist / "m" / "src")
    write_build(project, "m", sources, [{"name": "m", "location": "", "license": "GPL", "kprobes": False}])
    p = payload.build(project, project.modules["m"], None)
    modes = {path.rsplit("/", 1)[-1]: mode for path, (_, mode) in p.files.items()}
    assert modes["gen.sh"] == 0o755 and modes["m.c"] == 0o644
    with tarfile.open(fileobj=io.BytesIO(tarball.tar_bytes(p))) as tar:
        assert tar.getmember("dkms_source_tree/gen.sh").mode == 0o755


def test_one_license_table():
    table = licenses.table()
    # every string the kernel's license_is_gpl_compatible() accepts, and the one module.h names besides
    assert set(table) == {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                          "Dual MPL/GPL", "Proprietary"}
    assert ruledata.gpl_compatible() == {n for n, lic in table.items() if lic.gpl_compatible}
    assert "Proprietary" not in ruledata.gpl_compatible()
    # "GPL" means version 2 to the kernel: the C header, the .rpm and debian/copyright agree
    gpl = licenses.get("GPL")
    assert (gpl.spdx, gpl.dep5) == ("GPL-2.0-only", "GPL-2")
    c = render.module_files(spec.Module(name="x", probes=(spec.Probe("kernel_clone"),)))["x.c"]
    assert "SPDX-License-Identifier: GPL-2.0-only" in c
    assert licenses.get("Beerware").spdx == "LicenseRef-Beerware" and not licenses.get("Beerware").gpl_compatible


def hand_written_project(tmp_path, files, extra='build_dir = "drv"\nmake_vars = { HDAPS = "1" }\n'):
    src = tmp_path / "src"
    for n, text in files.items():
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_text(text)
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "pair"\nversion = "1.0"\nsource = "src"\n' + extra)
    project = spec.load(tmp_path / "kmod.toml")
    return project, render.render(project.modules["pair"], project.dist / "pair" / "src")


def test_generated_dkms_conf_lists_every_module_and_follows_kprobes(tmp_path):
    project, sources = hand_written_project(tmp_path, {"drv/Kbuild": "obj-m := a.o b-c.o\n", "drv/a.c": ""})
    kos = [{"name": "a", "location": "drv/", "license": "Dual BSD/GPL", "kprobes": False},
           {"name": "b-c", "location": "drv/", "license": "Dual BSD/GPL", "kprobes": False}]
    write_build(project, "pair", sources, kos)
    p = payload.build(project, project.modules["pair"], None)
    conf = p.files["usr/src/pair-1.0/dkms.conf"][0].decode()
    assert 'BUILT_MODULE_NAME[0]="a"\nBUILT_MODULE_LOCATION[0]="drv/"\nDEST_MODULE_LOCATION[0]="/updates/dkms"' in conf
    assert 'BUILT_MODULE_NAME[1]="b-c"' in conf
    assert 'MAKE[0]="make -C ${kernel_source_dir} M=${dkms_tree}/${module}/${module_version}/build/drv HDAPS=1"' in conf
    assert "CONFIG_KPROBES" not in conf and "does not use kprobes" in p.description
    assert "usr/src/pair-1.0/Makefile" not in p.files  # built as shipped: no Makefile of kmod's
    assert p.licenses[0] == "GPL-2.0-only OR BSD-3-Clause"  # what the modules declare
    write_build(project, "pair", sources, [dict(kos[0], kprobes=True), kos[1]])
    p = payload.build(project, project.modules["pair"], None)
    assert 'BUILD_EXCLUSIVE_CONFIG="CONFIG_KPROBES"' in p.files["usr/src/pair-1.0/dkms.conf"][0].decode()
    assert "registers kprobes" in p.description


def test_own_dkms_conf_is_kept_and_names_the_tree(tmp_path):
    own = 'PACKAGE_NAME="up_stream"\nPACKAGE_VERSION="0.4.2"\nBUILT_MODULE_NAME[0]="a"\n'
    # no build_dir or make_vars: its own dkms.conf says how it is built (kmod.spec refuses them here)
    project, sources = hand_written_project(tmp_path, {"dkms.conf": own, "drv/Kbuild": "obj-m := a.o\n"}, extra="")
    write_build(project, "pair", sources, [{"name": "a", "location": "", "license": "GPL", "kprobes": False}],
                {"conf": "own", "package_name": "up_stream", "package_version": "0.4.2",
                 "exclusive": {"BUILD_EXCLUSIVE_CONFIG": "CONFIG_ACPI"}})
    p = payload.build(project, project.modules["pair"], None)
    assert p.files["usr/src/up_stream-0.4.2/dkms.conf"][0].decode() == own
    assert (p.dkms_name, p.module_version, p.package, p.version) == ("up_stream", "0.4.2", "pair-dkms", "1.0")
    assert p.dkms_pairs == [("BUILD_EXCLUSIVE_CONFIG", "CONFIG_ACPI")]
    assert any("PACKAGE_VERSION 0.4.2" in w for w in p.warnings)
    from kmod.package import deb
    ctl = {k: v[0].decode() for k, v in deb.control_files(p, deb.data_files(p)).items()}
    assert "DKMS_NAME=up_stream" in ctl["postinst"] and "DKMS_VERSION=0.4.2" in ctl["postinst"]
    assert "Depends: dkms (>= 3.0.3-4~)" in ctl["control"]


def test_hand_written_module_is_packaged_only_after_a_build_of_these_sources(tmp_path):
    import pytest
    from kmod.errors import UserError
    project, sources = hand_written_project(tmp_path, {"drv/Kbuild": "obj-m := a.o\n"})
    with pytest.raises(UserError, match="no successful build"):
        payload.build(project, project.modules["pair"], None)
    write_build(project, "pair", sources, [{"name": "a", "location": "", "license": "GPL", "kprobes": False}])
    (tmp_path / "src" / "drv" / "a.c").write_text("changed")
    with pytest.raises(UserError, match="sources changed since the build"):
        payload.build(project, project.modules["pair"], None)


def test_package_name_clash_is_found_in_the_suites_names(tmp_path, monkeypatch):
    from kmod.archive import resolve, shipped
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    reads = []

    class FakeCatalogue:
        def __init__(self, mirror, suite, arches, log=None):
            reads.append(suite)
            self.by_name = {("v4l2loopback-dkms", "all"): [], ("bash", "amd64"): []} if suite == "bookworm" else {}

    monkeypatch.setattr(resolve, "Catalogue", FakeCatalogue)
    monkeypatch.setattr(shipped.mirrormod, "configured", lambda: None)
    assert shipped.clashes("v4l2loopback-dkms", ["bookworm", "trixie"], "amd64") == ["bookworm"]
    assert shipped.clashes("clone-probe-dkms", ["bookworm", "trixie"], "amd64") == []
    assert reads == ["bookworm", "trixie"]  # the second look-up came from the cache
