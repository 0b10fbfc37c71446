"""What preflight knows about each module before it asks any host: its built cells (from the manifest,
each .ko parsed once per run), the symbols it probes and the oldest dkms its dkms.conf needs."""
from ..lint import files
from ..lint.elf import BadElf, parse
from ..manifest import Manifest
from ..package import dkms
from ..spec import Module, Project
from .verdict import Built, ModuleInfo, is_signed


def built_cells(project: Project, manifest: Manifest, module: Module) -> list[Built]:
    out = []
    for cid, rec in sorted(manifest.cells.items()):
        if rec.get("module") != module.name or rec.get("result") != "ok" or not rec.get("ko"):
            continue
        ko = project.dist / rec["ko"]
        try:
            raw = ko.read_bytes()
            elf = parse(files.read_module(ko, raw))
        except (OSError, files.Unreadable, BadElf):
            continue   # a cell whose .ko is gone or damaged is not a cell that can be shipped
        out.append(Built(cid, rec.get("kernel", ""), rec.get("arch", ""), rec.get("release", ""), ko, elf,
                         is_signed(raw), rec.get("boot") or {}, _siblings(project, rec)))
    return out


def _siblings(project: Project, rec: dict) -> tuple:
    """The cell's other .ko files (one dkms package can build several): their exports resolve the
    module's symbols as the kernel resolves them (modprobe loads them first)."""
    out = []
    for k in rec.get("kos") or []:
        if k.get("ko") and k["ko"] != rec["ko"]:
            path = project.dist / k["ko"]
            try:
                out.append((str(path), parse(files.read_module(path, path.read_bytes()))))
            except (OSError, files.Unreadable, BadElf):
                continue   # a sibling that is gone provides nothing
    return tuple(out)


def probed(module: Module, built: list[Built]) -> dict[str, str]:
    """The spec's probes; for a hand-written module without `symbols`, what the lint finds in its .ko."""
    kind = "kretprobe" if module.template == "kretprobe" else "kprobe"
    if module.probes:
        return {p.symbol: kind for p in module.probes}
    if not built:
        return {}
    from ..lint import callgraph, probes
    return dict(probes.find(callgraph.build(built[0].elf)).symbols)


def dkms_needs(project: Project, module: Module) -> str:
    """The oldest dkms that understands the module's dkms.conf, without rendering anything: the
    directives depend on the [package.MODULE] options and on whether the source brings a Makefile."""
    files = {"Makefile": b""} if module.source and (module.source / "Makefile").is_file() else {}
    return dkms.dkms_dependency(dkms.conf_directives(module, dkms.options_for(project, module), files))


def infos(project: Project, modules: list[Module]) -> list[ModuleInfo]:
    manifest = Manifest(project.dist / "manifest.json")
    out = []
    for m in modules:
        built = built_cells(project, manifest, m)
        out.append(ModuleInfo(m, built, probed(m, built), dkms_needs(project, m)))
    return out
