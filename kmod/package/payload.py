"""What goes into every package of one module: the DKMS source tree (and the signing config), as
relative path -> (bytes, mode), plus the facts the control files need. Pure data: no tool runs here."""
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import licenses, render
from ..errors import UserError
from ..manifest import Manifest
from ..spec import Module, Project, check_name, check_version
from . import dkms

# Fixed so that packaging twice, anywhere, gives the same bytes; SOURCE_DATE_EPOCH overrides it.
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*)*$")
DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if value:
        if not value.isdigit() or int(value) > 253402300799:  # 9999-12-31: what tar, rpm and dpkg can date
            raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970",
                            "unset it, or give e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)")
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
    built: "Built | None" = None  # a hand-written module: what its builds made and read
    warnings: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        return f"{self.module.package_name}-dkms"

    @property
    def dkms_name(self) -> str:
        return self.built.conf_name if self.built and self.built.conf_name else self.module.package_name

    @property
    def version(self) -> str:
        """The package's version (the spec's)."""
        return self.module.version

    @property
    def module_version(self) -> str:
        """The version dkms knows the module by: its own dkms.conf's, else the spec's."""
        return self.built.conf_version if self.built and self.built.conf_version else self.module.version

    @property
    def top(self) -> str:
        return f"{dkms.SRC_PREFIX}/{self.dkms_name}-{self.module_version}"

    @property
    def kos(self) -> list[dict]:
        return list(self.built.kos) if self.built else []

    @property
    def kprobes(self) -> bool:
        """Whether the module uses kprobes: the description and BUILD_EXCLUSIVE_CONFIG follow it."""
        return dkms.uses_kprobes(self.module, self.kos)

    @property
    def summary(self) -> str:
        m = self.module
        text = m.description or f"{m.template or 'hand-written'} kernel module {m.name}"
        return (text[:1].upper() + text[1:])[:70]

    @property
    def description(self) -> str:
        m = self.module
        if m.source is None:
            return f"Module {m.name} {m.version} ({m.template}), probes: {', '.join(map(str, m.probes))}."
        mods = ", ".join(k["name"] + ".ko" for k in self.kos)
        what = "registers kprobes" if self.kprobes else "does not use kprobes"
        return f"Modules of {m.name} {self.module_version}: {mods} (hand-written; {what})."

    @property
    def license(self) -> str:
        """MODULE_LICENSE: the spec's for kmod's own modules, what the built modules declare otherwise."""
        found = [k["license"] for k in self.kos if k.get("license")]
        return found[0] if found else self.module.license

    @property
    def licenses(self) -> tuple[str, str, str]:
        lic = licenses.get(self.license)
        return lic.spdx, lic.dep5, lic.common

    @property
    def dkms_pairs(self) -> list:
        if self.built and self.built.conf_name:  # its own dkms.conf: the directives it set
            return [(k, v) for k, v in self.built.exclusive.items() if v]
        srcdir = self.top + "/"
        names = {p[len(srcdir):] for p in self.files if p.startswith(srcdir)}
        return dkms.conf_directives(self.module, self.options, {n: b"" for n in names}, self.kos or None)

    def dirs(self, top: str) -> list[str]:
        """Every folder below `top` (included) that holds a payload file, sorted."""
        out = set()
        for p in self.files:
            if p.startswith(top + "/"):
                parts = p.split("/")[:-1]
                for i in range(top.count("/") + 1, len(parts) + 1):
                    out.add("/".join(parts[:i]))
        return sorted(out)


@dataclass(frozen=True)
class Built:
    """What the builds of a hand-written module made (manifest): its .ko files in load order, and, when
    its source has a dkms.conf of its own, the name, version and BUILD_EXCLUSIVE_* it read there."""
    kos: tuple[dict, ...]
    conf_name: str = ""
    conf_version: str = ""
    exclusive: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def built(project: Project, module: Module, sources) -> Built:
    """A hand-written module is packaged from its builds: the dkms.conf lists the .ko files they made."""
    recs = [(cid, rec) for cid, rec in sorted(Manifest(project.dist / "manifest.json").cells.items())
            if cid.split("/", 1)[0] == module.name and rec.get("result") == "ok"]
    if not recs:
        raise UserError(f"module {module.name} is hand-written and has no successful build to package",
                        f"run `invoke build --module {module.name}` first: the package lists the .ko files "
                        "its builds made")
    stale = [cid for cid, rec in recs if (rec.get("inputs") or {}).get("sources") != sources.files]
    if stale:
        raise UserError(f"module {module.name}: its sources changed since the build of {stale[0]}",
                        f"run `invoke build --module {module.name}` again before packaging")
    kos: dict[str, dict] = {}
    per_cell = {cid: {k["name"] for k in rec.get("kos") or []} for cid, rec in recs}
    for _, rec in sorted(recs, key=lambda r: -len(r[1].get("kos") or [])):
        for k in rec.get("kos") or []:
            seen = kos.setdefault(k["name"], {key: k[key] for key in ("name", "location", "license", "kprobes")})
            seen["kprobes"] = seen["kprobes"] or k.get("kprobes", False)
    warnings = [f"{name}.ko is built for only some cells ({', '.join(c for c, n in per_cell.items() if name in n)}): "
                "dkms fails where it is missing; build it everywhere or limit the module with BUILD_EXCLUSIVE_*"
                for name in kos if not all(name in n for n in per_cell.values())]
    conf = [rec.get("dkms") or {} for _, rec in recs]
    if conf[0].get("conf") != "own":
        return Built(tuple(kos.values()), warnings=tuple(warnings))
    names = {(c.get("package_name"), c.get("package_version")) for c in conf}
    if len(names) != 1:
        raise UserError(f"module {module.name}: its dkms.conf names different packages on different kernels "
                        f"({', '.join(sorted(f'{n}/{v}' for n, v in names))})", "make PACKAGE_NAME/VERSION constant")
    name, version = names.pop()
    if version != module.version:
        warnings.append(f"the package's version {module.version} (the spec's) differs from dkms.conf's "
                        f"PACKAGE_VERSION {version}: set version = \"{version}\" in the spec to match")
    exclusive = {}
    for c in conf:
        exclusive.update({k: v for k, v in (c.get("exclusive") or {}).items() if v})
    return Built(tuple(kos.values()), name, version, exclusive, tuple(warnings))


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
    made = built(project, module, sources) if module.source is not None else None
    tree = dkms.source_tree(module, opts, dkms.read_sources(sources.dir, sources.files),
                            list(made.kos) if made else None)
    shell = Payload(module, opts, signing, {}, 0, "", made)
    # Modes as in the source folder (a helper script the Makefile runs stays executable).
    files = {f"{shell.top}/{name}": (data, sources.modes.get(name, 0o644)) for name, data in tree.items()}
    if signing:
        files[f"etc/dkms/framework.conf.d/{module.package_name}.conf"] = (
            dkms.framework_conf(signing).encode(), 0o644)
    return Payload(module, opts, signing, dict(sorted(files.items())), epoch(), Path(project.path).name, made,
                   made.warnings if made else ())


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
