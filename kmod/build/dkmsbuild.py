"""Hand-written modules are built the way dkms builds them on a VM (templates/build/dkms-build.sh),
in kmod's container for each pin: their own dkms.conf when the source folder has one (read by bash
with dkms's variables set, BUILD_EXCLUSIVE_* honoured), else the dkms.conf kmod generates for the
package, less the module list, which make's modules.order then supplies. kmod's build and the VM's
dkms build are the same build.

The container sees the source read-only at SRC_MOUNT, dkms's tree (a fresh work folder) at
DKMS_TREE, and /lib/modules/RELEASE/{build,source} pointing at the pin's headers, as on a VM."""
import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..errors import BuildFailed
from ..spec import Module

SCRIPT = "build/dkms-build.sh"
SRC_MOUNT, DKMS_TREE = "/kmod/src", "/var/lib/dkms"
CONF_NAME = ".kmod-dkms.conf"   # the generated dkms.conf, written into the work folder
EXCLUDED_EXIT = 77              # dkms's exit code for a kernel BUILD_EXCLUSIVE_* rules out
SAFE_REL_RE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._+/-]+\.ko$")
NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")


def script_text() -> str:
    return (paths.templates() / SCRIPT).read_text()


def own_conf(files: dict) -> bool:
    """A source folder with its own dkms.conf is built (and packaged) the way that file says."""
    return "dkms.conf" in files


def generated_conf(module: Module, project) -> str:
    """The dkms.conf of the package ([package.NAME] options included), less BUILT_MODULE_* (make's
    modules.order names them) and the kprobes gate (the built modules tell whether they use kprobes)."""
    from ..package import dkms
    return dkms.dkms_conf(module, dkms.options_for(project, module), {}, kos=None)


@dataclass
class Result:
    """What the build script said (its KMOD- lines)."""
    conf: dict[str, dict[int, str]] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)      # below the build folder, in index order
    excluded: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    host_release: str = ""
    make: str = ""
    log: str = ""      # the whole output, for the diagnosis

    def value(self, name: str, index: int = 0) -> str:
        return self.conf.get(name, {}).get(index, "")


def parse(output: str) -> Result:
    r = Result(log=output)
    for line in output.splitlines():
        if not line.startswith("KMOD-"):
            continue
        key, _, rest = line[5:].partition(": ")
        if key == "CONF":
            parts = rest.split(" ")
            if len(parts) == 3 and parts[1].isdigit():
                try:
                    value = base64.b64decode(parts[2]).decode("utf-8", "replace")
                except ValueError:
                    continue
                r.conf.setdefault(parts[0], {})[int(parts[1])] = value
        elif key == "BUILT":
            r.built.append(rest.split(" ", 1)[-1])
        elif key == "MISSING":
            r.missing.append(rest.split(" ", 1)[-1])
        elif key == "FOUND":
            r.found.append(rest)
        elif key == "EXCLUDED":
            r.excluded = rest
        elif key == "ERROR":
            r.errors.append(rest)
        elif key == "WARNING":
            r.warnings.append(rest)
        elif key == "HEADER":
            r.headers.append(rest)
        elif key == "HOST-RELEASE":
            r.host_release = rest
        elif key == "MAKE":
            r.make = rest
    return r


def env(cell, conf_path: str, collect: str, release: str, headers: list[str]) -> dict:
    e = {"KMOD_KERNELVER": release, "KMOD_MACHINE": cell.arch.uname_machine, "KMOD_SRC": SRC_MOUNT,
         "KMOD_CONF": conf_path,
         "KMOD_HEADERS": " ".join(headers), "KMOD_JOBS": "1"}
    if collect:
        e["KMOD_COLLECT"] = collect
    # Cross builds: kbuild takes ARCH and CROSS_COMPILE from the environment, so a Makefile that calls
    # make -C $(KDIR) by itself cross-compiles too.
    from . import images
    e.update(dict(v.split("=", 1) for v in cell.arch.make_vars(images.build_arch())))
    return e


def package_dir(r: Result) -> str:
    """NAME/VERSION below dkms's tree, from the dkms.conf the script read."""
    name, version = r.value("PACKAGE_NAME"), r.value("PACKAGE_VERSION")
    if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(version) or ".." in (name, version):
        raise BuildFailed(f"dkms.conf's PACKAGE_NAME {name!r} / PACKAGE_VERSION {version!r} cannot name a folder",
                          "use letters, digits and . _ + - only")
    return f"{name}/{version}"


def built_modules(r: Result) -> list[tuple[str, str]]:
    """(path below dkms's tree, path below the module's build folder) of every module the script
    reported; a path that could leave the build folder is refused. kmod.nofollow reads them, through
    no link."""
    top = package_dir(r) + "/build/"
    out = []
    for rel in r.built:
        if not SAFE_REL_RE.fullmatch(rel) or ".." in rel.split("/"):
            raise BuildFailed(f"the build reported a module outside its build folder: {rel!r}")
        out.append((top + rel, rel))
    names = [Path(rel).stem for _, rel in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise BuildFailed(f"two modules are named {dup}.ko", "the kernel loads one module of a name: rename one")
    return out


def lib_modules(work: Path, kdir: str, common: str) -> Path:
    """A folder that, mounted at /lib/modules/RELEASE, gives that kernel's `build` (and `source`) links
    as the headers packages do on a VM (the image's foreign-arch headers have none)."""
    d = work / ".lib-modules"
    d.mkdir(exist_ok=True)
    for name, target in (("build", kdir), ("source", common)):
        if target and not (d / name).is_symlink():
            os.symlink(target, d / name)
    return d
