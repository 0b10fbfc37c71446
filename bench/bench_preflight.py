"""Preflight fan-out against its baseline (issue 13, "Speed"): 20 hosts read-only in <= 3x the wall of
one host, measured in one run.

The hosts are dropbear in containers on loopback ports (tests/preflight/fleet.py: the test suite's own
fleet, started here and removed at the end). Each measurement is one whole `kmod.preflight.run` in this
process (connect, the facts script, the verdicts, the report file), alternating one host and twenty,
median of --reps. Results are printed and written into docs/benchmarks.md, section "Preflight".

    python bench/bench_preflight.py [--reps 5] [--hosts 20] [--no-write]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import machine, update_section  # noqa: E402

from kmod import preflight  # noqa: E402
from kmod import spec as specmod  # noqa: E402
from kmod.build.runtime.docker import client as docker_client  # noqa: E402
from kmod.preflight import hosts as hostsmod  # noqa: E402
from kmod.preflight import ssh  # noqa: E402
from tests.preflight import fleet as fleetmod  # noqa: E402

GOAL = 3.0
SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n'


def one_run(project, targets, config: Path, jobs: int) -> float:
    opts = preflight.Options(ssh=ssh.Options(ssh_config=config), jobs=jobs, quiet=True)
    started = time.perf_counter()
    results = preflight.run(project, targets, project.select(None), opts)
    seconds = time.perf_counter() - started
    bad = [r for r in results if r.error]
    if bad:
        raise SystemExit(f"benchmark host not read: {bad[0].host}: {bad[0].error}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as tmp:
        tmp = Path(tmp)
        (tmp / "kmod.toml").write_text(SPEC)
        project = specmod.load(tmp / "kmod.toml")
        started = time.perf_counter()
        fleet = fleetmod.start(docker_client(), args.hosts, tmp)
        start_s = time.perf_counter() - started
        try:
            config = fleet.ssh_config()
            names = [f"node{i:02d}" for i in range(1, args.hosts + 1)]
            many = [hostsmod.parse(n) for n in names]
            one_run(project, many, config, args.hosts)   # warm: imports, caches, each dropbear's host key
            single, fan = [], []
            for _ in range(args.reps):
                single.append(one_run(project, many[:1], config, 1))
                fan.append(one_run(project, many, config, args.hosts))
        finally:
            fleet.stop()
    s, f = statistics.median(single), statistics.median(fan)
    ratio = f / s
    verdict = "ok" if ratio <= GOAL else "OVER GOAL"
    print(f"1 host: {s:.3f}s  {args.hosts} hosts (--jobs {args.hosts}): {f:.3f}s  ratio {ratio:.2f}x "
          f"(goal <= {GOAL}x) {verdict}; {args.hosts} containers started in {start_s:.1f}s")
    if args.no_write:
        return
    body = f"""Measured {time.strftime('%Y-%m-%d')} on {machine()} with `python bench/bench_preflight.py` (median
of {args.reps} runs each, alternating; one module `clone_probe`; the hosts are dropbear in {args.hosts}
containers on loopback ports, which share this machine's kernel, so a run measures connections and
fan-out, not a VM's speed; each run is a whole `kmod.preflight.run`: connect, the facts script, the
verdicts, dist/preflight.json).

| measure | value | target |
|---|---|---|
| 1 host, read-only | {s:.3f} s | |
| {args.hosts} hosts, read-only, `--jobs {args.hosts}` | {f:.3f} s = **{ratio:.2f}x** one host | <= {GOAL}x |
"""
    update_section("Preflight", body)
    print("docs/benchmarks.md: section Preflight written")


if __name__ == "__main__":
    main()
