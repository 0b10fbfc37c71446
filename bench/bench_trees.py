"""What checking the cache's unpacked trees costs (issue 8, item 4: kmod.archive.unpacked). Budget: <= 20 ms
on a cache hit.

In one run, against a private KMOD_CACHE holding the pin's .debs (copied from the shared cache, which is
never written), alternating, median of --reps:
  lint hit   `invoke lint --target PIN x.ko` with everything cached (a module of the pin's own image),
             as a user runs it, against the same command with the tree check stubbed out
  tree       the lint's linux-image tree looked up (kmod.lint.target.image_tree: every entry of about
             4,000 lstat()ed), against the lookup with the check stubbed out
  boot       the boot test's kernel lookup (kmod.boot.kernel.kernel), against the same stubbed
Results go to docs/benchmarks.md, section "Cached trees" (only that section is touched).

    python bench/bench_trees.py [--pin bookworm-6.1] [--arch x86_64] [--reps 15] [--no-write]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine, update_section  # noqa: E402

SECTION = "Cached trees"
STUB = "import kmod.archive.unpacked as u; u.check = lambda tree: ''; "


def lint_argv(ko: Path, pin: str, stub: bool) -> list[str]:
    main = "import sys; from invoke.main import program; sys.argv[0] = 'invoke'; program.run()"
    return [sys.executable, "-c", (STUB if stub else "") + main, "--search-root", str(ROOT), "lint",
            "--target", pin, str(ko)]


def run(argv, **kw) -> None:
    """The lint's verdict on an in-tree module may be findings (exit 2): only a crash stops the bench."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode not in (0, 2) or "Traceback" in proc.stderr:
        raise SystemExit(f"benchmark step failed: {' '.join(argv[3:])}\n{proc.stdout}{proc.stderr}")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pin", default="bookworm-6.1")
    ap.add_argument("--arch", default="x86_64")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    load = os.getloadavg()
    from kmod import arch as archmod
    from kmod import pins
    from kmod.archive import fetch, unpacked
    pin, a = pins.require_locked(pins.get(args.pin)), archmod.get(args.arch)
    debs = [fetch.fetch(pin.package(role, a)) for role in ("image", "headers")]   # the shared cache
    with tempfile.TemporaryDirectory(prefix="kmod-bench-trees-") as tmp:
        os.environ["KMOD_CACHE"] = str(Path(tmp) / "cache")
        for deb in debs:
            dest = Path(tmp) / "cache" / "debs" / deb.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(deb, dest)
        from kmod.boot import kernel
        from kmod.lint import target
        tree = target.image_tree(pin, a)
        kernel.kernel(pin, a)
        ko = Path(tmp) / "x.ko"
        shutil.copy(next(f for f in sorted(target.modules_dir(tree).rglob("*.ko"))), ko)
        entries = sum(1 for _ in tree.rglob("*"))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for stub in (False, True):   # warm both: the target, its lint results
            run(lint_argv(ko, args.pin, stub), cwd=tmp, env=env)
        check = unpacked.check
        times = {k: [] for k in ("lint", "lint0", "tree", "tree0", "boot", "boot0")}
        for _ in range(args.reps):
            for stub in (False, True):
                sfx = "0" if stub else ""
                times["lint" + sfx].append(timed(lambda: run(lint_argv(ko, args.pin, stub), cwd=tmp, env=env)))
                unpacked.check = (lambda t: "") if stub else check
                times["tree" + sfx].append(timed(lambda: target.image_tree(pin, a)))
                times["boot" + sfx].append(timed(lambda: kernel.kernel(pin, a)))
                unpacked.check = check
        m = {k: statistics.median(v) * 1000 for k, v in times.items()}

    rows = [("`invoke lint --target` hit", "lint"), (f"lint tree lookup ({entries:,} entries)", "tree"),
            ("boot kernel lookup", "boot")]
    table = "\n".join(f"| {name} | {m[k]:.1f} ms | {m[k + '0']:.1f} ms | {m[k] - m[k + '0']:+.1f} ms |"
                      for name, k in rows)
    body = f"""`python bench/bench_trees.py --pin {args.pin} --arch {args.arch} --reps {args.reps}` ({machine()}).
Every use of an unpacked tree in the cache checks it against the manifest of its files written when it
was unpacked (kmod.archive.unpacked: an lstat per entry, a hash only of what changed). Against the same
operation with the check stubbed out, in the same run, alternating, median of {args.reps}; budget +20 ms
on a hit. Load average at the start {load[0]:.1f}, at the end {os.getloadavg()[0]:.1f}.

A lint hit does not open the tree at all (the target is cached as data), so its difference is noise.
The lookup of a whole linux-image tree is an lstat per entry and over the 20 ms budget on this machine;
it is not on a hit's path: it is paid where the tree is read, i.e. when a target is made (a target-cache
miss, seconds of parsing) and by the in-tree lints (`bench_lint.py`, `test_lint_intree.py`), thousands
of modules read. The boot test's kernel lookup (a handful of files) is what every boot pays.

| operation | checked | unchecked | cost |
|---|---|---|---|
{table}
"""
    print(body)
    if not args.no_write:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
