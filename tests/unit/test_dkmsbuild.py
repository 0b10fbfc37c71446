"""Hand-written modules built the way dkms builds them (templates/build/dkms-build.sh), run here with the
host runtime against the fake kbuild tree (tests/fixtures/fake_kdir) so that every branch costs
milliseconds; tests/integration/test_realmods.py proves the same on the pinned kernels in Docker."""
import json
import os
import subprocess
import sys

import pytest

from kmod.build import dkmsbuild
from tests.conftest import ROOT, need_tool

FAKE_KDIR = ROOT / "tests" / "fixtures" / "fake_kdir"


@pytest.fixture(autouse=True)
def tools():
    need_tool("make")
    need_tool("bash")


def build(project, *args, module="m"):
    proc = subprocess.run([sys.executable, "-m", "kmod", "build", "--runtime", "host", "--kdir", str(FAKE_KDIR),
                           "--arch", "x86_64", "--module", module, "--no-lint", *args], cwd=project,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    manifest = json.loads((project / "dist" / "manifest.json").read_text())
    return proc, manifest["cells"][f"{module}/host/x86_64"]


def project_with(tmp_path, files: dict, spec_extra: str = "", modes: dict | None = None):
    src = tmp_path / "src"
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    for name, mode in (modes or {}).items():
        os.chmod(src / name, mode)
    (tmp_path / "kmod.toml").write_text(f'[[module]]\nname = "m"\nversion = "1.0"\nsource = "src"\n{spec_extra}')
    return tmp_path


def test_own_dkms_conf_two_modules_in_subfolders_values_expanded_twice(tmp_path):
    conf = ('PACKAGE_NAME="pkg"\nPACKAGE_VERSION="2.0"\nB="${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build"\n'
            'MAKE[0]="make -C ${kernel_source_dir} M=$B/a && make -C $kernel_source_dir M=$B/b"\n'
            'BUILT_MODULE_NAME[0]="one"\nBUILT_MODULE_LOCATION[0]="a"\nDEST_MODULE_LOCATION[0]="/extra"\n'
            'BUILT_MODULE_NAME[1]="two-x"\nBUILT_MODULE_LOCATION[1]="b/"\nDEST_MODULE_LOCATION[1]="/extra"\n')
    project = project_with(tmp_path, {"dkms.conf": conf, "a/one.c": "", "b/two-x.c": "", "Makefile": ""})
    proc, rec = build(project)
    assert proc.returncode == 0 and rec["result"] == "ok", proc.stderr
    assert [(k["name"], k["location"]) for k in rec["kos"]] == [("one", "a/"), ("two-x", "b/")]
    assert rec["dkms"]["package_name"] == "pkg" and rec["dkms"]["conf"] == "own"
    assert rec["dkms"]["make"].startswith("make -j1 KERNELRELEASE=6.1.0-fake-amd64 -C ")
    assert (project / "dist" / "m" / "host" / "x86_64" / "two-x.ko").is_file()


def test_build_exclusive_cell_is_excluded_not_failed(tmp_path):
    conf = ('PACKAGE_NAME="m"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="m"\nDEST_MODULE_LOCATION[0]="/extra"\n'
            'if ! grep -q "^CONFIG_NOT_HERE=y" "$kernel_source_dir/.config"; then BUILD_EXCLUSIVE_ARCH="^nope$"; fi\n')
    project = project_with(tmp_path, {"dkms.conf": conf, "m.c": ""})
    proc, rec = build(project)
    assert proc.returncode == 0, proc.stderr
    assert rec["result"] == "excluded" and 'BUILD_EXCLUSIVE_ARCH="^nope$" does not match x86_64' in rec["reason"]
    assert "1 excluded" in proc.stdout and "excluded m/host/x86_64" in proc.stderr
    again, rec2 = build(project)
    assert "(1 cached, 1 excluded" in again.stdout and rec2["result"] == "excluded"


@pytest.mark.parametrize("line,excluded", [
    ('BUILD_EXCLUSIVE_CONFIG="CONFIG_KPROBES CONFIG_FAKE"', False),
    ('BUILD_EXCLUSIVE_CONFIG="CONFIG_ACPI"', True),
    ('BUILD_EXCLUSIVE_CONFIG="!CONFIG_FAKE"', True),
    ('BUILD_EXCLUSIVE_KERNEL="^6\\.1\\."', False),
    ('BUILD_EXCLUSIVE_KERNEL_MIN="6.2"', True),
    ('BUILD_EXCLUSIVE_KERNEL_MAX="6.0.9"', True),
    ('BUILD_EXCLUSIVE_KERNEL_MAX="6.1.0-fake-amd64"', False),
])
def test_build_exclusive_directives(tmp_path, line, excluded):
    conf = f'PACKAGE_NAME="m"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="m"\nDEST_MODULE_LOCATION[0]="/extra"\n{line}\n'
    _, rec = build(project_with(tmp_path, {"dkms.conf": conf, "m.c": ""}))
    assert rec["result"] == ("excluded" if excluded else "ok"), rec


def test_expected_module_missing_says_what_was_built_and_what_to_set(tmp_path):
    conf = 'PACKAGE_NAME="m"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="m"\nDEST_MODULE_LOCATION[0]="/extra"\n'
    proc, rec = build(project_with(tmp_path, {"dkms.conf": conf, "other.c": ""}))
    assert proc.returncode == 2 and rec["result"] == "failed"
    (d,) = [d for d in rec["diagnosis"] if d["cause"] == "ko-missing"]
    assert "m.ko was not built" in d["advice"] and "make built other.ko" in d["advice"]
    assert "BUILT_MODULE_NAME[i]" in d["advice"]


def test_without_dkms_conf_every_module_of_the_build_dir_is_collected(tmp_path):
    project = project_with(tmp_path, {"drv/a.c": "", "drv/b.c": "", "drv/Kbuild": "obj-m := a.o b.o\n"},
                           'build_dir = "drv"\nmake_vars = { FOO = "bar", REL = "${kernelver}" }\n')
    proc, rec = build(project)
    assert rec["result"] == "ok", proc.stderr
    assert [(k["name"], k["location"]) for k in rec["kos"]] == [("a", "drv/"), ("b", "drv/")]
    assert rec["dkms"]["conf"] == "generated"
    assert rec["dkms"]["make"].endswith("/m/1.0/build/drv FOO=bar REL=6.1.0-fake-amd64")


def test_no_module_built_says_where_they_are(tmp_path):
    # kbuild on the top folder builds nothing; the modules are in a subfolder make was not pointed at
    project = project_with(tmp_path, {"Makefile": "", "sub/x.c": "", "sub/modules.order": "x.o\n",
                                      "sub/x.ko": ""}, 'make_target = "all"\n')
    (project / "src" / "Makefile").write_text("all:\n\tprintf 'x' > sub/x.ko\n")
    proc, rec = build(project)
    assert rec["result"] == "ok", rec  # the sub/modules.order a Makefile left is found in any subfolder
    assert [k["name"] for k in rec["kos"]] == ["x"]


def test_makefile_that_asks_uname_is_named_as_the_cause(tmp_path):
    mk = "KVER := $(shell uname -r)\nall:\n\t$(MAKE) -C /lib/modules/$(KVER)/build M=$(CURDIR) modules\n"
    project = project_with(tmp_path, {"Makefile": mk, "m.c": ""}, 'make_target = "all"\n')
    proc, rec = build(project)
    assert proc.returncode == 2
    (d,) = [d for d in rec["diagnosis"] if d["cause"] == "release-from-uname"]
    assert os.uname().release in d["advice"] and "Makefile sets KVER from $(shell uname -r)" in d["advice"]
    assert 'make_vars = { KVER = "${kernelver}" }' in d["advice"]


def test_pre_build_script_runs_and_its_exec_bit_matters(tmp_path):
    conf = ('PACKAGE_NAME="m"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="gen"\nDEST_MODULE_LOCATION[0]="/extra"\n'
            'PRE_BUILD="gen.sh ${kernelver}"\n')
    files = {"dkms.conf": conf, "gen.sh": '#!/bin/sh\necho "/* for $1 */" > gen.c\n'}
    proc, rec = build(project_with(tmp_path, files, modes={"gen.sh": 0o755}))
    assert rec["result"] == "ok", proc.stderr
    assert b"gen.c" in (tmp_path / "dist" / "m" / "host" / "x86_64" / "gen.ko").read_bytes()
    other = tmp_path / "noexec"
    other.mkdir()
    proc, rec = build(project_with(other, files, modes={"gen.sh": 0o644}))
    assert rec["result"] == "failed"
    assert any(d["cause"] == "script-not-executable" for d in rec["diagnosis"]), rec["diagnosis"]
    assert "gen.sh is not executable" in proc.stderr


def test_parse_ignores_malformed_lines():
    r = dkmsbuild.parse("KMOD-CONF: MAKE 0 bWFrZQ==\nKMOD-CONF: junk\nKMOD-BUILT: 0 a/b.ko\nnoise\n")
    assert r.value("MAKE") == "make" and r.built == ["a/b.ko"]


def test_arch_specific_header_advises_arches(tmp_path):
    project = project_with(tmp_path, {"m.c": "#include <asm/msr.h>\n", "Kbuild": "obj-m := m.o\n"},
                           'make_vars = { MISSING_HEADER = "asm/msr.h" }\n')
    _, rec = build(project)
    (d,) = [d for d in rec["diagnosis"] if d["cause"] == "header-arch-specific"]
    assert "asm/msr.h exists only for arch/x86, not for arm64" in d["advice"]
    assert 'arches = ["x86_64"]' in d["advice"]
    assert not any(d["cause"] == "missing-header" for d in rec["diagnosis"])  # not "moved or removed"


def test_own_header_outside_the_source_folder_names_the_folder(tmp_path):
    (tmp_path / "include" / "linux").mkdir(parents=True)
    (tmp_path / "include" / "linux" / "ddcci.h").write_text("/* the module's own */\n")
    src = tmp_path / "drv"
    src.mkdir()
    (src / "m.c").write_text("#include <linux/ddcci.h>\n")
    (src / "Kbuild").write_text("obj-m := m.o\nccflags-y := -I$(src)/../include\n")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "m"\nsource = "drv"\n'
                                        'make_vars = { MISSING_HEADER = "linux/ddcci.h" }\n')
    _, rec = build(tmp_path)
    (d,) = [d for d in rec["diagnosis"] if d["cause"] == "header-outside-source"]
    assert f"it is at {tmp_path}/include/linux/ddcci.h, outside the source folder {src}" in d["advice"]
    assert f"({tmp_path})" in d["advice"] and 'build_dir = "drv"' in d["advice"]


def test_own_quoted_header_missing_and_kernel_header_gone(tmp_path):
    project = project_with(tmp_path, {"m.c": '#include "local.h"\n', "Kbuild": "obj-m := m.o\n"},
                           'make_vars = { MISSING_HEADER = "local.h" }\n')
    _, rec = build(project)
    assert [d["cause"] for d in rec["diagnosis"]][:1] == ["header-own-missing"], rec["diagnosis"]
    other = tmp_path / "k"
    other.mkdir()
    project = project_with(other, {"m.c": "#include <linux/genhd.h>\n", "Kbuild": "obj-m := m.o\n"},
                           'make_vars = { MISSING_HEADER = "linux/genhd.h" }\n')
    _, rec = build(project)
    assert [d["cause"] for d in rec["diagnosis"]] == ["missing-header"], rec["diagnosis"]


def test_package_options_run_in_kmods_build_too(tmp_path):
    """[package.NAME] pre_build is a line of the generated dkms.conf: kmod's build runs it as dkms will."""
    files = {"Kbuild": "obj-m := m.o\n", "gen.sh": '#!/bin/sh\necho "/* made by PRE_BUILD */" > m.c\n'}
    project = project_with(tmp_path, files, '\n[package.m]\npre_build = "gen.sh"\n', modes={"gen.sh": 0o755})
    proc, rec = build(project)
    assert rec["result"] == "ok", proc.stderr
    assert b"m.c" in (tmp_path / "dist" / "m" / "host" / "x86_64" / "m.ko").read_bytes()


def test_a_cell_of_several_modules_is_linted_together(tmp_path):
    """The lint step takes every .ko of the cell at once (and records their load order); the fake
    kbuild's .ko are no ELF, so the lint fails the cell, in one line each and no traceback."""
    project = project_with(tmp_path, {"a.c": "", "b.c": "", "Kbuild": "obj-m := a.o b.o\n"})
    proc = subprocess.run([sys.executable, "-m", "kmod", "build", "--runtime", "host", "--kdir", str(FAKE_KDIR),
                           "--arch", "x86_64", "--module", "m"], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    rec = json.loads((project / "dist" / "manifest.json").read_text())["cells"]["m/host/x86_64"]
    assert proc.returncode == 2 and rec["result"] == "failed"
    assert {f["ko"] for f in rec["lint"]} == {"m/host/x86_64/a.ko", "m/host/x86_64/b.ko"}


def test_a_built_module_named_like_an_in_tree_one_fails_its_cell(tmp_path):
    """The spec's name is checked when the spec is read; a hand-written Kbuild can still build an
    `ext4.ko` (or `snd-hda-intel.ko`: - and _ are one to the kernel), which dkms would install over the
    kernel's own. The cell fails and keeps no such .ko, unless the spec says it replaces it on purpose."""
    project = project_with(tmp_path, {"ext4.c": "", "snd-hda-intel.c": "", "mine.c": "",
                                      "Kbuild": "obj-m := ext4.o snd-hda-intel.o mine.o\n"})
    proc, rec = build(project)
    assert proc.returncode == 2 and rec["result"] == "failed"
    assert rec["diagnosis"][0]["cause"] == "in-tree module name"
    assert "ext4.ko has the name of a module of the pinned kernels" in rec["errors"][0]
    assert "replaces_in_tree = true" in proc.stderr
    assert not list((project / "dist" / "m" / "host" / "x86_64").glob("*.ko"))
    (project / "kmod.toml").write_text((project / "kmod.toml").read_text() + "replaces_in_tree = true\n")
    proc, rec = build(project)
    assert rec["result"] == "ok", proc.stderr
