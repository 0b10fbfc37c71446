"""NAME-dkms-VERSION-1.noarch.rpm with rpmbuild from a prepared tree; %post/%preun drive dkms with
--rpm_safe_upgrade. Reproducible: SOURCE_DATE_EPOCH is the build time and clamps every mtime."""
import shutil
import tempfile
import time
from pathlib import Path

from .. import arch as archmod
from .. import atomic, render
from . import tools
from .payload import Payload, write_tree


def file_name(p: Payload) -> str:
    return f"{p.package}-{p.version}-1.noarch.rpm"


def literal(text: str) -> str:
    """Text for a spec file: rpmbuild expands %macros (and %(shell)) everywhere, %% is a plain %."""
    return text.replace("%", "%%")


def rpm_arches(module) -> list[str]:
    """The RPM names (= `uname -m`) of the arches a module is limited to; [] for every arch. The package
    itself is noarch source (ExclusiveArch would refuse to build it on any other host)."""
    return sorted({archmod.get(a).uname_machine for a in module.arches})


def spec_text(p: Payload) -> str:
    top = "usr/src"
    dirs = [f"/{d}" for d in p.dirs(top) if d != top]
    return render.render_text(
        "package/spec.j2", m=p.module, package=p.package, version=p.version, summary=literal(p.summary),
        description=literal(p.description), license=p.licenses[0], homepage=literal(p.options.homepage),
        dkms_name=p.dkms_name, module_version=p.module_version, kprobes=p.kprobes,
        modules=[k["name"] for k in p.kos], dirs=dirs, files={f: mode for f, (_, mode) in p.files.items()}, maintainer=literal(p.options.maintainer),
        spec_file=literal(p.spec_file), rpm_arches=rpm_arches(p.module),
        rpm_date=time.strftime("%a %b %d %Y", time.gmtime(p.epoch)))


def build(p: Payload, out_dir: Path, work_root: Path) -> Path:
    rpmbuild = tools.require("rpmbuild", "to build the .rpm")
    # rpmbuild runs its scriptlets as `sh PATH` unquoted: a checkout path with a space breaks it. Such a
    # path builds in the system's temporary folder instead.
    spaced = any(c.isspace() for c in str(work_root))
    from .. import run as runmod
    work = runmod.scratch_dir("rpm") if spaced else Path(tempfile.mkdtemp(prefix="rpm.", dir=work_root))
    try:
        return _build(p, out_dir, work, rpmbuild)
    finally:
        if spaced:
            shutil.rmtree(work, ignore_errors=True)


def _build(p: Payload, out_dir: Path, work: Path, rpmbuild: str) -> Path:
    write_tree(work / "SOURCES" / "root", p.files, p.epoch)
    spec = work / "SPECS" / f"{p.package}.spec"
    spec.parent.mkdir(parents=True)
    spec.write_text(spec_text(p))
    defines = {"_topdir": str(work), "_buildhost": "kmod", "_binary_payload": "w9.gzdio",
               "use_source_date_epoch_as_buildtime": "1", "clamp_mtime_to_source_date_epoch": "1",
               "source_date_epoch_from_changelog": "0", "_rpmfilename": "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
               "_tmppath": str(work / "tmp"), "_dbpath": str(work / "db")}
    (work / "tmp").mkdir()
    argv = [rpmbuild, "-bb", "--nodeps", "--quiet"]
    for k, v in defines.items():
        argv += ["--define", f"{k} {v}"]
    tools.run([*argv, str(spec)], env={"SOURCE_DATE_EPOCH": str(p.epoch)}, what="rpmbuild")
    dest = out_dir / file_name(p)
    atomic.copy_file(work / "RPMS" / file_name(p), dest)
    return dest
