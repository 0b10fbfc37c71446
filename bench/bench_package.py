"""Package benchmark (issue 4), measured in one run on the same rendered sources:

  `invoke package` for one module, all three formats (.deb, .rpm, .tar.gz), lintian excluded
  `invoke package --format deb` (lintian excluded) vs `dpkg-buildpackage -b` with dh_dkms on the
  same source tree (the way Debian packages a DKMS module)
Targets: all three formats <= 2 s wall; the .deb alone <= 0.5 x dpkg-buildpackage.

Run: python bench/bench_package.py   (writes the "Package" section of docs/benchmarks.md)
Needs: dpkg-dev, rpm, debhelper, dh-dkms (tests/integration/PACKAGE_REQUIRES.txt).
"""
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine, run, update_section, wall  # noqa: E402

SPEC = '[[module]]\nname = "clone_probe"\nversion = "0.1.0"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'
KMOD = [sys.executable, "-m", "kmod", "package", "--no-lintian"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
REPEAT = 5


def debian_source(work: Path, src: Path) -> Path:
    """A minimal dh + dh_dkms source package around the same DKMS tree kmod ships."""
    pkg = work / "clone-probe-dkms-0.1.0"
    shutil.copytree(src, pkg / "src")
    deb = pkg / "debian"
    (deb / "source").mkdir(parents=True)
    (deb / "source" / "format").write_text("3.0 (native)\n")
    (deb / "control").write_text(
        "Source: clone-probe-dkms\nSection: kernel\nPriority: optional\n"
        "Maintainer: kmod packager <kmod@packages.invalid>\n"
        "Build-Depends: debhelper-compat (= 13), dh-sequence-dkms\nStandards-Version: 4.6.2\n"
        "Rules-Requires-Root: no\n\n"
        "Package: clone-probe-dkms\nArchitecture: all\nDepends: ${misc:Depends}\n"
        "Description: kprobe kernel module clone_probe (DKMS)\n The same module, packaged by dh_dkms.\n")
    (deb / "changelog").write_text(
        "clone-probe-dkms (0.1.0) unstable; urgency=medium\n\n  * Benchmark.\n\n"
        " -- kmod packager <kmod@packages.invalid>  Mon, 01 Jan 2024 00:00:00 +0000\n")
    (deb / "rules").write_text("#!/usr/bin/make -f\n%:\n\tdh $@\n")
    (deb / "rules").chmod(0o755)
    (deb / "clone-probe-dkms.install").write_text("src/* usr/src/clone-probe-0.1.0/\n")
    (deb / "clone-probe-dkms.dkms").write_text("src/dkms.conf\n")
    (deb / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                                   "Files: *\nCopyright: 2024 The authors\nLicense: GPL-2+\n")
    return pkg


def main() -> None:
    for tool in ("dpkg-deb", "rpmbuild", "dpkg-buildpackage", "dh_dkms"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (apt-get install dpkg-dev rpm debhelper dh-dkms)")
    work = Path(tempfile.mkdtemp(prefix="bench-package-"))
    try:
        (work / "kmod.toml").write_text(SPEC)
        run(KMOD, cwd=work, env=ENV)  # render once; every timed run re-renders (unchanged) and packages
        run(["tar", "-xzf", str(work / "dist/packages/clone-probe-0.1.0.tar.gz"), "-C", str(work)])
        src = work / "dkms_source_tree"

        all_three = wall(lambda: run(KMOD, cwd=work, env=ENV), REPEAT)
        deb_only = wall(lambda: run([*KMOD, "--format", "deb"], cwd=work, env=ENV), REPEAT)
        pkg = debian_source(work / "dh", src)
        baseline = wall(lambda: run(["dpkg-buildpackage", "-b", "--no-sign", "-tc"], cwd=pkg,
                                    env={**os.environ, "LC_ALL": "C"}), REPEAT)
        built = sorted(p.name for p in (work / "dh").glob("*.deb"))
        assert built == ["clone-probe-dkms_0.1.0_all.deb"], built
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = deb_only / baseline
    body = f"""Measured {datetime.date.today()} on {machine()} with `python bench/bench_package.py`
(median of {REPEAT} runs each, one module `clone_probe`, lintian excluded, every run a fresh process).

| measure | value | target |
|---|---|---|
| `invoke package`, all three formats (.deb, .rpm, .tar.gz) | **{all_three:.2f} s** | <= 2 s |
| .deb alone: `invoke package --format deb` / `dpkg-buildpackage -b` with dh_dkms, same sources | {deb_only:.2f} s / {baseline:.2f} s = **{ratio:.2f}x** | <= 0.5x |
"""
    print(body)
    if "--no-write" not in sys.argv:
        update_section("Package", body)


if __name__ == "__main__":
    main()
