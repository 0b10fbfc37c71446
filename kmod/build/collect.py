"""The .ko files of one cell, collected into dist/MODULE/KERNEL/ARCH/ with what later stages need to
know of each: its name, where the build made it (BUILT_MODULE_LOCATION), its sha256, its license, the
modules it depends on (modpost's depends=) and whether it registers kprobes; in the order to load them."""
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


def record(dest: Path, location: str, sha256: str, dist: Path, cert: Path | None = None) -> dict:
    """`signature`: "absent" or "present"; against `cert` (a signing build's) "verifies" or "does not verify"."""
    from ..lint import signature
    return {"name": dest.stem, "location": location, "ko": str(dest.relative_to(dist)), "sha256": sha256,
            **facts(dest), "signature": signature.state(dest.read_bytes(), cert)}


def collect(root: Path, built: list[tuple[str, str]], out: Path, dist: Path, cert: Path | None = None) -> list[dict]:
    """Copy each module (path below `root`, path below its build folder) to `out`, as a regular file
    through no link (kmod.nofollow); their records, in load order."""
    kos = []
    for rel, built_as in built:
        dest = out / Path(rel).name
        sha = nofollow.copy_out(root, rel, dest, "artifact")
        kos.append(record(dest, built_as.rsplit("/", 1)[0] + "/" if "/" in built_as else "", sha, dist, cert))
    return load_order(kos, dist)


def load_order(kos: list[dict], dist: Path) -> list[dict]:
    """Providers first, as the lint resolves symbols among the cell's modules (kmod.lint.deps: the
    order insmod must follow, what depmod computes for modprobe)."""
    if len(kos) < 2:
        return kos
    from ..lint.deps import provider_order
    by_path = {str(dist / k["ko"]): k for k in kos}
    return [by_path[str(p)] for p in provider_order(list(by_path))]
