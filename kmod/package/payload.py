"""What goes into every package of one module: the DKMS source tree (and the signing config), as
relative path -> (bytes, mode), plus the facts the control files need. Pure data: no tool runs here."""
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .. import licenses, render
from ..errors import UserError
from ..spec import Module, Project, check_name, check_version
from . import dkms

# Fixed so that packaging twice, anywhere, gives the same bytes; SOURCE_DATE_EPOCH overrides it.
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*)*$")
DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if value:
        if not value.isdigit():
            raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
        return int(value)
    return DEFAULT_EPOCH


@dataclass(frozen=True)
class Payload:
    module: Module
    options: dkms.Options
    signing: dkms.Signing | None
    files: dict          # path below / (no leading slash) -> (bytes, mode)
    epoch: int
    spec_file: str

    @property
    def package(self) -> str:
        return f"{self.module.package_name}-dkms"

    @property
    def dkms_name(self) -> str:
        return self.module.package_name

    @property
    def version(self) -> str:
        return self.module.version

    @property
    def summary(self) -> str:
        m = self.module
        text = m.description or f"{m.template or 'hand-written'} kernel module {m.name}"
        return (text[:1].upper() + text[1:])[:70]

    @property
    def description(self) -> str:
        m = self.module
        probes = ", ".join(map(str, m.probes)) or "see the source"
        return f"Module {m.name} {m.version} ({m.template or 'hand-written'}), probes: {probes}."

    @property
    def licenses(self) -> tuple[str, str, str]:
        lic = licenses.get(self.module.license)
        return lic.spdx, lic.dep5, lic.common

    @property
    def dkms_pairs(self) -> list:
        srcdir = dkms.source_dir(self.module) + "/"
        names = {p[len(srcdir):] for p in self.files if p.startswith(srcdir)}
        return dkms.conf_directives(self.module, self.options, {n: b"" for n in names})

    def dirs(self, top: str) -> list[str]:
        """Every folder below `top` (included) that holds a payload file, sorted."""
        out = set()
        for p in self.files:
            if p.startswith(top + "/"):
                parts = p.split("/")[:-1]
                for i in range(top.count("/") + 1, len(parts) + 1):
                    out.add("/".join(parts[:i]))
        return sorted(out)


def check(module: Module) -> None:
    """Second fence (spec.load is the first): nothing Debian, RPM or dkms would reject gets through."""
    check_name(module.name)
    check_version(module.version)
    if not DEB_NAME_RE.fullmatch(module.package_name + "-dkms"):
        raise UserError(f"package name {module.package_name}-dkms is invalid")


def build(project: Project, module: Module, signing: dkms.Signing | None) -> Payload:
    check(module)
    opts = dkms.options_for(project, module)
    sources = render.render(module, project.dist / module.name / "src")
    for name in sources.files:
        if not SAFE_PATH_RE.fullmatch(name) or ".." in name.split("/"):
            raise UserError(f"module {module.name}: source file name {name!r} cannot be packaged",
                            "use letters, digits and . _ + - in file names")
        # Second fence (render is the first): a hand-written file that is a link leading out of its
        # folder would ship a host file in the package.
        if module.source is not None and not (module.source / name).resolve().is_relative_to(module.source.resolve()):
            raise UserError(f"module {module.name}: source file {name} is a link leading out of {module.source}: "
                            "refused, it would put a host file in the package",
                            "copy the file into the source folder instead of linking to it")
    tree = dkms.source_tree(module, opts, dkms.read_sources(sources.dir, sources.files))
    top = dkms.source_dir(module)
    # Modes as in the source folder (a helper script the Makefile runs stays executable).
    files = {f"{top}/{name}": (data, sources.modes.get(name, 0o644)) for name, data in tree.items()}
    if signing:
        files[f"etc/dkms/framework.conf.d/{module.package_name}.conf"] = (
            dkms.framework_conf(signing).encode(), 0o644)
    return Payload(module, opts, signing, dict(sorted(files.items())), epoch(), Path(project.path).name)


def write_tree(root: Path, files: dict, when: int, extra_dirs_mode: int = 0o755) -> None:
    """Lay `files` out below `root` with fixed modes and mtimes (umask and clock play no part)."""
    for rel, (data, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
    root.mkdir(parents=True, exist_ok=True)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.chmod(d, extra_dirs_mode)
    for p in [*root.rglob("*"), root]:
        os.utime(p, (when, when), follow_symlinks=False)


def rfc2822(when: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
