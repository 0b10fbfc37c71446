"""Does LIEF serve the linter better than its own ELF reader? (issue 8, item 8)

On the same in-tree modules, both read what the lint rules need (sections, symbols, .modinfo):
kmod.lint.elf against lief.ELF.parse. Ratios from one run; the verdict goes to docs/benchmarks.md.
Run: .venv/bin/python bench/bench_lief.py [--limit N]"""
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
    from kmod import paths
    files = sorted((paths.cache_dir() / "lint" / "trees").rglob("*.ko"))[:limit]
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
    ap.add_argument("--limit", type=int, default=300)
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
    body = f"""`python bench/bench_lief.py --limit {args.limit}` on {machine()}, LIEF {lief.__version__}, {time.strftime('%Y-%m-%d')}.
Both read sections, symbols and .modinfo of the same {len(data)} in-tree modules (already in memory).

| reader | wall (s) | ratio |
|---|---|---|
| `kmod.lint.elf.parse` (today's) | {timings['kmod.lint.elf']:.3f} | 1.00 |
| `lief.ELF.parse` | {timings['lief.ELF.parse']:.3f} | {ratio:.2f} |

A section table pointing past the end of the file: kmod's reader says `{ours_bad}`; LIEF gives {lief_bad}.
Verdict: {"LIEF is slower and says less about a corrupt file, so kmod does not use it: the dependency is dropped" if ratio > 1 else "LIEF is faster here"}.
"""
    update_section("LIEF", body)
    print(body)


if __name__ == "__main__":
    main()
