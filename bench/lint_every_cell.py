"""Zero errors on every in-tree module of the new arches' and flavours' pinned kernels (issue 11): the
in-tree modules are correct by construction, so any error the lint reports on them is a false positive.

For each locked cell (pin x flavour x arch) beyond the generic x86_64 and arm64 ones (whose modules
bench_lint.py and the CI sample already cover): unpack its linux-image package, lint every in-tree module
against the cell's own kernel (`--target PIN[-FLAVOUR]`), and record the count of modules, errors and
warnings and the wall time. The CI tests lint a fixed sample of each (tests/integration/test_lint_intree.py);
this is the full run, recorded in docs/benchmarks.md, section "Lint: every in-tree module of the new
arches and flavours".

    python bench/lint_every_cell.py [--cells trixie-6.12/riscv64,bookworm-6.1-rt/x86_64] [--jobs N] [--no-write]
"""
import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import update_section  # noqa: E402

from kmod import pins, support  # noqa: E402
from kmod.lint import lint_paths  # noqa: E402
from kmod.lint.files import SUFFIXES  # noqa: E402
from kmod.lint.target import image_tree, modules_dir  # noqa: E402

SECTION = "Lint: every in-tree module of the new arches and flavours"
COVERED = ("x86_64", "arm64")   # generic cells of these: bench_lint.py


def cells(wanted: list[str]) -> list[support.Cell]:
    out = []
    for c in support.cells(list(pins.all_pins().values())):
        cid = f"{c.pin.label(c.flavour.name)}/{c.arch.name}"
        if c.state != support.LOCKED:
            continue
        if wanted and cid not in wanted:
            continue
        if not wanted and c.flavour.is_generic and c.arch.name in COVERED:
            continue
        out.append(c)
    return out


def lint_cell(c: support.Cell, jobs: int) -> dict:
    tree = image_tree(c.pin, c.arch, c.flavour.name)
    files = sorted(f for f in modules_dir(tree).rglob("*") if f.name.endswith(SUFFIXES))
    t = time.monotonic()
    report = lint_paths(files, target=c.pin.label(c.flavour.name), jobs=jobs, use_cache=False, progress=True)
    wall = time.monotonic() - t
    errors = [(m.path, f.rule, f.message) for m, f in report.findings() if f.severity == "error"]
    rules = Counter(f.rule for _, f in report.findings() if f.severity == "warning")
    return {"cell": f"{c.pin.label(c.flavour.name)}/{c.arch.name}", "release": c.release, "modules": len(files),
            "errors": errors, "warnings": sum(rules.values()), "rules": rules, "wall": wall,
            "arches": {m.arch for m in report.modules}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="", help="PIN[-FLAVOUR]/ARCH, comma list (default: every new cell)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    results = []
    for c in cells([x for x in args.cells.split(",") if x]):
        r = lint_cell(c, args.jobs)
        results.append(r)
        print(f"{r['cell']}: {r['modules']} modules, {len(r['errors'])} error(s), {r['warnings']} warning(s), "
              f"{r['wall']:.1f} s", file=sys.stderr, flush=True)
        for path, rule, msg in r["errors"][:20]:
            print(f"  ERROR {path}: {rule}: {msg[:300]}", file=sys.stderr)
    rows = "\n".join(f"| {r['cell']} | {r['release']} | {r['modules']} | **{len(r['errors'])}** | {r['warnings']} "
                     f"({', '.join(f'{k} {v}' for k, v in r['rules'].most_common(3))}) | {r['wall']:.1f} |"
                     for r in results)
    total = sum(len(r["errors"]) for r in results)
    text = f"""`python bench/lint_every_cell.py --jobs {args.jobs}` on {platform.machine()}, {os.cpu_count()} CPU(s)
({time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end). Every in-tree module of each
cell's pinned `linux-image` package, linted against that cell's own kernel.

| cell | release | modules | errors | warnings (most common) | wall (s) |
|---|---|---:|---:|---|---:|
{rows}

{total} error(s) in all: {'zero, as the in-tree modules are correct by construction' if total == 0 else 'FALSE POSITIVES to fix'}.
The warnings are FP code the linter cannot see every caller of (reached through function pointers or
exports) and what the analysis could not follow.
"""
    print(text)
    if not args.no_write:
        update_section(SECTION, text)
    return 0 if total == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
