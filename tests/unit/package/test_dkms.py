"""dkms.conf generation and the escaping that makes a value reach dkms exactly as written."""
import re
from pathlib import Path
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmod.errors import UserError
from kmod.package import dkms
from tests.conftest import need_tool

# dkms 3.0.10's safe_source + read_conf, reduced to what touches a value: source the file with dkms's
# variables set, re-emit each value through the same unquoted `eval echo`, source that again.
SAFE_SOURCE = r'''
kernelver=6.1.0-56-amd64; arch=x86_64; kernel_source_dir=/lib/modules/6.1.0-56-amd64/build
dkms_tree=/var/lib/dkms; source_tree=/usr/src; module=m; module_version=1
vars="PACKAGE_NAME PACKAGE_VERSION BUILT_MODULE_NAME DEST_MODULE_LOCATION AUTOINSTALL MAKE PRE_BUILD
POST_BUILD BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG"
tmpfile=$(mktemp)
( exec >"$tmpfile"
  . "$1" >/dev/null
  for _export_env in $vars; do
    for _i in $(eval echo \${!$_export_env[@]}); do
      eval echo '$_export_env[$_i]=\"${'$_export_env'[$_i]}\"'
    done
  done )
. "$tmpfile"; rm -f "$tmpfile"
printf '%s\n' "MAKE=${MAKE[0]}" "PRE_BUILD=$PRE_BUILD" "POST_BUILD=$POST_BUILD" \
  "BUILD_EXCLUSIVE_KERNEL=$BUILD_EXCLUSIVE_KERNEL" "BUILD_EXCLUSIVE_ARCH=$BUILD_EXCLUSIVE_ARCH" \
  "PACKAGE_NAME=$PACKAGE_NAME" "PACKAGE_VERSION=$PACKAGE_VERSION" "AUTOINSTALL=$AUTOINSTALL"
'''


def through_dkms(tmp_path, conf: str) -> dict:
    bash = need_tool("bash")
    path = tmp_path / "dkms.conf"
    path.write_text(conf)
    out = subprocess.run([bash, "-c", SAFE_SOURCE, "sh", str(path)], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def conf_for(module, **options):
    opts = dkms.parse_options(module.name, options)
    return dkms.dkms_conf(module, opts, {f"{module.name}.c": b"", "Kbuild": b""})


def test_required_directives_one_per_line(project):
    conf = conf_for(project.modules["clone_probe"])
    lines = [ln for ln in conf.splitlines() if ln and not ln.startswith("#")]
    assert lines[:6] == ['PACKAGE_NAME="clone-probe"', 'PACKAGE_VERSION="1.2.3"', 'BUILT_MODULE_NAME[0]="clone_probe"',
                         'DEST_MODULE_LOCATION[0]="/updates/dkms"', 'AUTOINSTALL="yes"',
                         'BUILD_EXCLUSIVE_CONFIG="CONFIG_KPROBES"']
    assert not any(ln.startswith("BUILD_EXCLUSIVE_ARCH") for ln in lines)  # all arches
    for dropped in ("CLEAN", "REMAKE_INITRD", "MODULES_CONF", "OBSOLETE_BY"):
        assert not re.search(rf"^{dropped}", conf, re.M)
    assert "uname" not in conf


def test_arch_limit_uses_uname_machine(project, tmp_path):
    conf = conf_for(project.modules["arm_only"])
    assert through_dkms(tmp_path, conf)["BUILD_EXCLUSIVE_ARCH"] == "^(aarch64)$"


def test_default_make_builds_for_the_kernel_dkms_passes(project, tmp_path):
    values = through_dkms(tmp_path, conf_for(project.modules["clone_probe"]))
    assert values["MAKE"] == "make KDIR=/lib/modules/6.1.0-56-amd64/build"
    assert values["PACKAGE_NAME"] == "clone-probe" and values["PACKAGE_VERSION"] == "1.2.3"


def test_makefile_uses_kernelrelease_not_uname(project):
    m = project.modules["clone_probe"]
    tree = dkms.source_tree(m, dkms.Options(), {"clone_probe.c": b"x", "Kbuild": b"obj-m := clone_probe.o\n"})
    assert list(tree) == ["Kbuild", "Makefile", "clone_probe.c", "dkms.conf"]
    makefile = tree["Makefile"].decode()
    assert "$(KERNELRELEASE)" in makefile and "uname" not in makefile


def test_hand_written_makefile_is_kept_and_dkms_default_make_used(project):
    m = project.modules["clone_probe"]
    files = {"Makefile": b"obj-m := clone_probe.o\n", "clone_probe.c": b"x"}
    tree = dkms.source_tree(m, dkms.Options(), files)
    assert tree["Makefile"] == files["Makefile"]
    assert b"MAKE[0]" not in tree["dkms.conf"]


@pytest.mark.parametrize("value", [
    'make CFLAGS="-O2 -DX=1" KDIR=${kernel_source_dir}',
    "echo $HOME `id` $(id) \\n ; rm -rf / # ${kernelver}",
    "sh ./pre.sh ${kernelver} '${arch}' \"quoted\" back\\slash",
    "make ${not_a_dkms_var} $kernelver",
])
def test_values_reach_dkms_literally(project, tmp_path, value):
    conf = conf_for(project.modules["clone_probe"], make=value, pre_build=value, post_build=value)
    values = through_dkms(tmp_path, conf)
    expected = (value.replace("${kernel_source_dir}", "/lib/modules/6.1.0-56-amd64/build")
                .replace("${kernelver}", "6.1.0-56-amd64").replace("${arch}", "x86_64"))
    assert values["MAKE"] == values["PRE_BUILD"] == values["POST_BUILD"] == expected


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e, blacklist_characters="*?[]"),
               min_size=1, max_size=40).filter(lambda s: s == s.strip() and "  " not in s))
def test_any_printable_value_survives(tmp_path_factory, value):
    from kmod.package.dkms import dkms_quote
    tmp = tmp_path_factory.mktemp("q")
    conf = f"POST_BUILD={dkms_quote(value)}\n"
    got = through_dkms(tmp, conf)["POST_BUILD"]
    assert got == dkms.VAR_RE.sub(lambda m: {"kernelver": "6.1.0-56-amd64", "arch": "x86_64",
                                             "kernel_source_dir": "/lib/modules/6.1.0-56-amd64/build",
                                             "dkms_tree": "/var/lib/dkms", "source_tree": "/usr/src",
                                             "module": "m", "module_version": "1"}[m.group(1)], value)


@pytest.mark.parametrize("value", ["make *.o", "a\nMAKE[1]=evil", "tab\there", "two  spaces", " lead", "x[0]", "a?"])
def test_values_that_cannot_survive_are_refused(value):
    with pytest.raises(UserError, match="safely"):
        dkms.parse_options("m", {"make": value})


def test_unknown_option_and_bad_kernel_version_refused():
    with pytest.raises(UserError, match="unknown key"):
        dkms.parse_options("m", {"clean": "make clean"})
    with pytest.raises(UserError, match="not a kernel version"):
        dkms.parse_options("m", {"build_exclusive_kernel_min": "6.1; rm"})
    with pytest.raises(UserError, match="maintainer"):
        dkms.parse_options("m", {"maintainer": "nobody"})


def test_dependency_follows_directives(project):
    m = project.modules["clone_probe"]
    files = {"Kbuild": b""}
    assert dkms.dkms_dependency(dkms.conf_directives(m, dkms.Options(), files)) == "3.0.3-4~"
    opts = dkms.parse_options(m.name, {"build_exclusive_kernel_min": "5.10", "build_exclusive_kernel_max": "6.12"})
    pairs = dkms.conf_directives(m, opts, files)
    assert ("BUILD_EXCLUSIVE_KERNEL_MIN", '"5.10"') in pairs
    assert dkms.dkms_dependency(pairs) == "3.0.11"


def test_options_from_spec_table(tmp_path):
    from kmod import spec as specmod
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "m1"\nsymbols = ["kernel_clone"]\n\n'
                                        '[package.m1]\nbuild_exclusive_kernel = "^6\\\\."\n'
                                        'maintainer = "Jane Doe <jane@example.org>"\n')
    project = specmod.load(tmp_path / "kmod.toml")
    opts = dkms.options_for(project, project.modules["m1"])
    assert opts.directives == {"BUILD_EXCLUSIVE_KERNEL": "^6\\."}
    assert opts.maintainer == "Jane Doe <jane@example.org>"


def test_kernel_regex_survives(project, tmp_path):
    conf = conf_for(project.modules["clone_probe"], build_exclusive_kernel="^(5\\.10|6\\.)")
    assert through_dkms(tmp_path, conf)["BUILD_EXCLUSIVE_KERNEL"] == "^(5\\.10|6\\.)"


@pytest.mark.parametrize("key,cert", [("relative/key", "/c"), ("/k", ""), ("/k;rm", "/c"), ("/a/../b", "/c"),
                                      ("/k $(id)", "/c")])
def test_signing_paths_validated(key, cert):
    with pytest.raises(UserError):
        dkms.Signing.from_flags(key, cert)


def test_signing_config_names_paths_only(tmp_path):
    s = dkms.Signing.from_flags("/var/lib/shim-signed/mok/MOK.priv", "/var/lib/shim-signed/mok/MOK.der")
    text = dkms.framework_conf(s)
    assert 'mok_signing_key="/var/lib/shim-signed/mok/MOK.priv"' in text
    assert 'mok_certificate="/var/lib/shim-signed/mok/MOK.der"' in text
    assert dkms.Signing.from_flags("", "") is None


@pytest.mark.parametrize("arches,expected", [(("ppc64el",), "^(ppc64le)$"), (("ppc64le", "x86_64"), "^(ppc64le|x86_64)$"),
                                             (("s390x", "riscv64", "arm64"), "^(aarch64|riscv64|s390x)$")])
def test_exclusive_arch_is_uname_m_of_every_arch(arches, expected):
    """dkms compares BUILD_EXCLUSIVE_ARCH with `uname -m`: ppc64le, not the triplet's powerpc64le."""
    from kmod.package import rpm
    from kmod.spec import parse_module
    m = parse_module({"name": "m", "symbols": ["kernel_clone"], "arches": list(arches)}, Path("."), "kmod.toml")
    assert dkms.exclusive_arch(m) == expected
    assert rpm.rpm_arches(m) == expected[2:-2].split("|")
