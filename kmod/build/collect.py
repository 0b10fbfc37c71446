"""The .ko files of one cell, collected into dist/MODULE/KERNEL/ARCH/ with what later stages need to
know of each: its name, where the build made it (BUILT_MODULE_LOCATION), its sha256, its license, the
modules it depends on and whether it registers kprobes; and the order to load them in."""
from pathlib import Path

from .. import nofollow

# Any of these undefined means the module registers kprobes (BUILD_EXCLUSIVE_CONFIG=CONFIG_KPROBES).
KPROBE_API = ("register_kprobe", "register_kprobes", "register_kretprobe", "register_kretprobes")


def facts(ko: Path) -> dict:
    from ..lint.elf import BadElf, parse
    try:
        elf = parse(ko.read_bytes())
    except BadElf:  # the lint step says what is wrong with it
        return {"kernel_name": ko.stem.replace("-", "_"), "license": "", "depends": [], "kprobes": False}
    depends = [d for v in elf.modinfo_values("depends") for d in v.split(",") if d]
    names = elf.modinfo_values("name")
    return {"kernel_name": names[0] if names else ko.stem.replace("-", "_"),
            "license": (elf.modinfo_values("license") or [""])[0], "depends": depends,
            "kprobes": any(n in KPROBE_API for n in elf.undefined)}


def record(dest: Path, location: str, sha256: str, dist: Path) -> dict:
    return {"name": dest.stem, "location": location, "ko": str(dest.relative_to(dist)), "sha256": sha256,
            **facts(dest)}


def collect(root: Path, built: list[tuple[str, str]], out: Path, dist: Path) -> list[dict]:
    """Copy each module (path below `root`, path below its build folder) to `out`, as a regular file
    through no link (kmod.nofollow); their records, in load order."""
    kos = []
    for rel, built_as in built:
        dest = out / Path(rel).name
        sha = nofollow.copy_out(root, rel, dest, "artifact")
        kos.append(record(dest, built_as.rsplit("/", 1)[0] + "/" if "/" in built_as else "", sha, dist))
    return load_order(kos)


def load_order(kos: list[dict]) -> list[dict]:
    """Dependencies first (modinfo depends=, which modpost fills in from the symbols a module takes
    from its siblings); otherwise the build's order."""
    by_name = {k["kernel_name"]: k for k in kos}
    done, order = set(), []

    def visit(k, path=()):
        if k["kernel_name"] in done or k["kernel_name"] in path:
            return
        for dep in k["depends"]:
            if dep in by_name:
                visit(by_name[dep], path + (k["kernel_name"],))
        done.add(k["kernel_name"])
        order.append(k)

    for k in kos:
        visit(k)
    return order
