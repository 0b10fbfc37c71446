"""Hand-written source folders as shipped: modes kept, nothing followed out of the folder, special files
never opened; and the one license table every writer of a license reads."""
import os
import stat
import tarfile
import io

from kmod import licenses, render, spec
from kmod.lint import ruledata
from kmod.package import payload, tarball


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
    files, skipped = render.hand_written_files(src)
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
