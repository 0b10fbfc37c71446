"""Does LIEF serve the linter better than its own ELF reader? (issue 8, item 8)

On the same in-tree modules, both read what the lint rules need (sections, symbols, .modinfo):
kmod.lint.elf against lief.ELF.parse. Ratios from one run; the verdict goes to docs/benchmarks.md.
Run: .venv/bin/python bench/bench_lief.py [--limit N] (lief installed beside kmod, e.g. pip install --target DIR lief
and PYTHONPATH=DIR: kmod does not depend on it)"""
import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine, update_section  # noqa: E402


def modules(limit: int) -> list[bytes]:
    """Every module of one unpacked linux-image tree (the amd64 one when there is one): the first few
    hundred paths of a tree are its smallest crypto and lib modules, not what a lint usually reads."""
    from kmod import paths
    trees = sorted(p for p in (paths.cache_dir() / "lint" / "trees").iterdir() if p.is_dir())
    trees.sort(key=lambda p: not p.name.endswith("-amd64-unsigned"))
    files = sorted(trees[0].rglob("*.ko"))[:limit or None] if trees else []
    if not files:
        raise SystemExit("no unpacked in-tree modules in the cache: run `invoke lint --target bookworm-6.1 x.ko` once")
    return [f.read_bytes() for f in files]


def ours(data: bytes):
    from kmod.lint import elf
    e = elf.parse(data)
    return len(e.sections), len(e.symbols), len(e.modinfo)


def theirs(data: bytes):
    import lief
    b = lief.ELF.parse(io.BytesIO(data))
    info = b.get_section(".modinfo")
    return len(b.sections), len(b.symtab_symbols), len(bytes(info.content).split(b"\0")) if info else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="at most this many modules (default: the whole tree)")
    args = ap.parse_args()
    import lief
    lief.logging.disable()
    data = modules(args.limit)
    ours(data[0]), theirs(data[0])  # imports and first-call costs out of the timing
    timings = {}
    for name, fn in (("kmod.lint.elf", ours), ("lief.ELF.parse", theirs)):
        t = time.perf_counter()
        for d in data:
            fn(d)
        timings[name] = time.perf_counter() - t
    # what the parse is worth: the whole lint of the same modules (no target: the per-module rules only)
    from kmod.lint.engine import lint_bytes
    t = time.perf_counter()
    for i, d in enumerate(data):
        lint_bytes(d, f"m{i}.ko")
    timings["lint"] = time.perf_counter() - t
    corrupt = bytearray(data[0])
    corrupt[0x28:0x30] = (len(corrupt) * 4).to_bytes(8, "little")  # e_shoff past the end
    from kmod.lint import elf
    try:
        elf.parse(bytes(corrupt))
        ours_bad = "parsed"
    except elf.BadElf as e:
        ours_bad = f"BadElf: {e}"
    lief_bad = lief.ELF.parse(io.BytesIO(bytes(corrupt)))
    lief_bad = "None (no reason given)" if lief_bad is None else f"parsed, {len(lief_bad.sections)} sections"
    ratio = timings["lief.ELF.parse"] / timings["kmod.lint.elf"]
    share = timings["kmod.lint.elf"] / timings["lint"]
    saved = (timings["kmod.lint.elf"] - timings["lief.ELF.parse"]) / timings["lint"]
    lief_reads_corrupt = lief_bad != "None (no reason given)"
    if ratio < 1 and saved >= 0.10 and not lief_reads_corrupt:
        verdict = "LIEF is worth using: it parses faster and refuses the corrupt file"
    else:
        reasons = []
        if ratio >= 1:
            reasons.append("it parses no faster")
        else:
            reasons.append(f"parsing is {share:.0%} of a lint, so LIEF's faster parse would save at most "
                           f"{saved:.0%} of it")
        if lief_reads_corrupt:
            reasons.append("it reads a section table past the end of the file as a valid ELF, where the lint "
                           "must say `invalid-elf`")
        verdict = "kmod keeps its own reader and does not depend on LIEF: " + "; and ".join(reasons)
    limit = f" --limit {args.limit}" if args.limit else ""
    body = f"""`python bench/bench_lief.py{limit}` on {machine()}, LIEF {lief.__version__}, {time.strftime('%Y-%m-%d')}.
Both read sections, symbols and .modinfo of the same {len(data)} in-tree modules (already in memory); the
whole lint of those modules (the per-module rules, no target, one process) says what the parse is worth.

| reader | wall (s) | ratio |
|---|---|---|
| `kmod.lint.elf.parse` (today's) | {timings['kmod.lint.elf']:.3f} | 1.00 |
| `lief.ELF.parse` | {timings['lief.ELF.parse']:.3f} | {ratio:.2f} |
| the whole lint of the same modules (`lint_bytes`) | {timings['lint']:.3f} | {timings['lint'] / timings['kmod.lint.elf']:.1f} |

A section table pointing past the end of the file: kmod's reader says `{ours_bad}`; LIEF gives {lief_bad}.
Verdict: {verdict}.
"""
    update_section("LIEF", body)
    print(body)


if __name__ == "__main__":
    main()
