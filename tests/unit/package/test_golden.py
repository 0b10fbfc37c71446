"""Generated packaging files against golden files in tests/unit/package/golden/. Regenerate with
KMOD_GOLDEN_RENDER=1 and review the diff."""
import os
import shutil
from pathlib import Path

import pytest

from kmod import spec as specmod
from kmod.package import deb, dkms, payload, rpm

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("KMOD_GOLDEN_RENDER") == "1"
SPEC = """
[[module]]
name = "clone_probe"
version = "0.1.0"
symbols = ["kernel_clone"]
record_args = 1

[[module]]
name = "arm_ret"
version = "2.0~rc1"
template = "kretprobe"
symbols = ["do_sys_openat2"]
record_retval = true
arches = ["arm64"]
description = "Counts openat returns on arm64"

[package.arm_ret]
build_exclusive_kernel_min = "5.10"
pre_build = "sh ./prepare.sh ${kernelver} \\"$HOME\\""
maintainer = "Jane Doe <jane@example.org>"
homepage = "https://example.org/arm_ret"
"""


def generated(p: payload.Payload) -> dict[str, str]:
    files = deb.data_files(p)
    ctl = deb.control_files(p, files)
    top = p.top + "/"
    out = {name[len(top):]: data.decode() for name, (data, _) in p.files.items()
           if name.startswith(top) and name.rsplit("/", 1)[-1] in ("dkms.conf", "Makefile")}
    out.update({f"DEBIAN.{k}": v[0].decode() for k, v in ctl.items() if k != "md5sums"})
    out[f"{p.package}.spec"] = rpm.spec_text(p)
    return out


@pytest.mark.parametrize("name", ["clone_probe", "arm_ret"])
def test_golden(name, tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    project = specmod.load(tmp_path / "kmod.toml")
    signing = dkms.Signing.from_flags("/var/lib/dkms/mok.key", "/var/lib/dkms/mok.pub") if name == "arm_ret" else None
    got = generated(payload.build(project, project.modules[name], signing))
    folder = GOLDEN / name
    if REGENERATE:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for fname, text in got.items():
            (folder / fname).write_text(text)
    assert folder.is_dir(), f"no golden files in {folder}; run with KMOD_GOLDEN_RENDER=1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(got)
    for fname, text in got.items():
        assert text == (folder / fname).read_text(), f"{folder / fname} differs; regenerate with KMOD_GOLDEN_RENDER=1"
