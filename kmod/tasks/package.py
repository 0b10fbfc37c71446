"""`invoke package`: DKMS .deb, .rpm and source tarball in dist/packages/."""
import sys

from .args import task
from .common import COMMON_HELP, cli_errors, output_folder


@task(help={"module": COMMON_HELP["module"], "spec": COMMON_HELP["spec"],
            "format": "deb, rpm, tarball or a comma list (default: all three)",
            "force": "package even when the manifest says the module's last build or lint failed",
            "sign_key": "path ON THE TARGET MACHINE of the MOK private key dkms signs with (never copied)",
            "sign_cert": "path ON THE TARGET MACHINE of the matching MOK certificate",
            "lintian": "run lintian on the .deb (default; --no-lintian skips it)"})
@cli_errors
def package(c, module="", format="", force=False, sign_key="", sign_cert="", spec="", lintian=True):
    """Build DKMS packages (.deb, .rpm, .tar.gz) of modules into dist/packages/."""
    from .. import spec as specmod
    from ..package import dkms, parse_formats
    from ..package import package as run
    formats = parse_formats(format)
    signing = dkms.Signing.from_flags(sign_key, sign_cert)
    project = specmod.load(specmod.find(spec or None))
    modules = project.select(module or None)
    output_folder(project)
    for m in modules:
        _warn_clash(m)
    for b in run(project, modules, formats, force=force, signing=signing, lint=lintian,
                 warn=lambda text: print(f"warning: {text}", file=sys.stderr)):
        note = ""
        if b.lintian is not None:
            warnings = sum(t.startswith("W:") for t in b.lintian)
            note = f" (lintian: {warnings} warning(s), no errors)"
        print(f"{b.module} {b.format}: {b.path} [{b.seconds:.2f}s]{note}")


def _warn_clash(m) -> None:
    """A package name the pinned suites' archives ship already: say so, and how to rename."""
    from .. import arch as archmod
    from .. import pins
    from ..archive import shipped
    from ..errors import KmodError
    name = f"{m.package_name}-dkms"
    suites = sorted({p.suite for p in pins.all_pins().values()})
    try:
        found = shipped.clashes(name, suites, archmod.host_debian_arch())
    except KmodError as e:
        print(f"warning: could not check whether Debian ships {name} ({e.message})", file=sys.stderr)
        return
    if found:
        print(f"warning: {name} clashes with Debian's own {name} ({', '.join(found)}): apt would replace one with "
              f"the other. Rename the module in the spec (name = \"{m.name}-local\" makes {m.package_name}-local-dkms)",
              file=sys.stderr)


TASKS = [package]
