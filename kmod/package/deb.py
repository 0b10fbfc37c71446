"""NAME-dkms_VERSION_all.deb with dpkg-deb: the DKMS source under /usr/src, dh_dkms-style maintainer
scripts, md5sums, copyright and changelog; reproducible (SOURCE_DATE_EPOCH, --root-owner-group)."""
import gzip
import hashlib
import io
import tempfile
import time
from pathlib import Path

from .. import atomic, render
from . import dkms, tools
from .payload import Payload, rfc2822, write_tree


def file_name(p: Payload) -> str:
    return f"{p.package}_{p.version}_all.deb"


def gzip_bytes(data: bytes, when: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=when, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def data_files(p: Payload) -> dict:
    """The payload plus what Debian policy wants in every package."""
    ctx = dict(m=p.module, package=p.package, version=p.version, maintainer=p.options.maintainer,
               date=rfc2822(p.epoch), spec_file=p.spec_file)
    doc = f"usr/share/doc/{p.package}"
    spdx, dep5, common = p.licenses
    license_text = (["On Debian systems, the complete text of the GNU General Public License version 2",
                     f"can be found in /usr/share/common-licenses/{common}."] if common else
                    ["See the module source for the license terms."])
    files = dict(p.files)
    files[f"{doc}/copyright"] = (render.render_text("package/copyright.j2", m=p.module, license=dep5,
                                                    license_text=license_text, spec_file=p.spec_file,
                                                    year=time.gmtime(p.epoch).tm_year).encode(), 0o644)
    # A version without a Debian revision makes a native package: its changelog is changelog.gz.
    files[f"{doc}/changelog.gz"] = (gzip_bytes(render.render_text("package/changelog.j2", **ctx).encode(),
                                               p.epoch), 0o644)
    return dict(sorted(files.items()))


def control_files(p: Payload, files: dict) -> dict:
    pairs = p.dkms_pairs
    installed_kib = sum((len(data) + 1023) // 1024 for data, _ in files.values()) + len(p.dirs("usr"))
    ctx = dict(m=p.module, package=p.package, version=p.version, maintainer=p.options.maintainer,
               homepage=p.options.homepage, summary=p.summary, description=p.description,
               dkms_version=dkms.dkms_dependency(pairs), installed_size=installed_kib,
               dkms_name=p.dkms_name, module_version=p.module_version, kprobes=p.kprobes,
               modules=[k["name"] for k in p.kos])
    md5 = "".join(f"{hashlib.md5(data).hexdigest()}  {path}\n" for path, (data, _) in files.items())
    out = {"control": (render.render_text("package/control.j2", **ctx).encode(), 0o644),
           "md5sums": (md5.encode(), 0o644),
           "postinst": (render.render_text("package/postinst.j2", **ctx).encode(), 0o755),
           "prerm": (render.render_text("package/prerm.j2", **ctx).encode(), 0o755)}
    conffiles = [f"/{path}\n" for path in files if path.startswith("etc/")]
    if conffiles:
        out["conffiles"] = ("".join(conffiles).encode(), 0o644)
    return out


def build(p: Payload, out_dir: Path, work_root: Path) -> Path:
    dpkg_deb = tools.require("dpkg-deb", "to build the .deb")
    files = data_files(p)
    work = Path(tempfile.mkdtemp(prefix="deb.", dir=work_root))
    root = work / "root"
    tree = dict(files)
    tree.update({f"DEBIAN/{name}": v for name, v in control_files(p, files).items()})
    write_tree(root, tree, p.epoch)
    target = work / file_name(p)
    tools.run([dpkg_deb, "--root-owner-group", "-Zxz", "--build", str(root), str(target)],
              env={"SOURCE_DATE_EPOCH": str(p.epoch)}, what="dpkg-deb")
    dest = out_dir / file_name(p)
    atomic.copy_file(target, dest)
    return dest
