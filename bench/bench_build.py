"""Build benchmark (issue 2), every figure a ratio against a baseline measured in this same run:

  one module, one arm64 target, warm image: `invoke build` wall / raw `docker run ... make` wall
  no-change rebuild (cache hit): wall, and proof that no container started
  the full matrix (every locked pin x flavour x arch, about 25 cells) on all cores: parallel wall / sum of
  the cells' sequential walls
  peak RSS of the tool's own process for the full matrix

Run: .venv/bin/python bench/bench_build.py   (writes the "Build" section of docs/benchmarks.md)
     .venv/bin/python bench/bench_build.py --against REV [--reps N]   (what issue 8's checks cost against a
     checkout without them: cache hit in ms, warm build as a ratio; its own section)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine, run, update_section, wall  # noqa: E402

from kmod import arch, pins, support  # noqa: E402
from kmod.build import images  # noqa: E402

SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'
KMOD = [sys.executable, "-m", "kmod"]
# As in an installed venv: bytecode written and used (a sandbox's PYTHONDONTWRITEBYTECODE=1 would make
# every run compile kmod from source, ~60 ms of a cache hit that users never pay)
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(ROOT)}


def kmod(work: Path, *args, env=None):
    return run([*KMOD, "build", "--no-lint", *args], cwd=work, env=env or ENV)


def fresh(work: Path) -> None:
    shutil.rmtree(work / "dist", ignore_errors=True)


SUPPLY = ("Build: what the supply-chain checks cost", "before signed indexes, locked compilers, the in-build "
          "image check, no-follow collection, the sandbox and signing support")


def against(rev: str, reps: int, section: tuple[str, str] = SUPPLY) -> None:
    """What the supply-chain checks cost (issue 8): this checkout against `rev` (a checkout without them),
    alternating, in this one invocation. Cache hit: the no-change rebuild; warm build: one arm64 cell
    with its image present, lint off (both sides' images are built first, outside the timing)."""
    import statistics

    import docker
    engine = docker.from_env()
    before = {i.id for i in engine.images.list()}
    base = Path(tempfile.mkdtemp(prefix="kmod-bench-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), rev], check=True,
                   capture_output=True)
    try:
        trees = {"baseline": base, "this": ROOT}
        works = {}
        for name, tree in trees.items():
            w = Path(tempfile.mkdtemp(prefix=f"kmod-bench-{name}-"))
            (w / "kmod.toml").write_text(SPEC)
            works[name] = (w, {**os.environ, "PYTHONPATH": str(tree)})
            kmod(w, "--arch", "arm64", "--kernel", "bookworm-6.1", env=works[name][1])  # images, sources
        hit = {n: [] for n in trees}
        warm = {n: [] for n in trees}
        for _ in range(reps):
            for name in trees:
                w, env = works[name]
                dead = {**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
                t = time.perf_counter()
                kmod(w, "--arch", "arm64", "--kernel", "bookworm-6.1", env=dead)
                hit[name].append(time.perf_counter() - t)
                fresh(w)
                t = time.perf_counter()
                kmod(w, "--arch", "arm64", "--kernel", "bookworm-6.1", env=env)
                warm[name].append(time.perf_counter() - t)
        med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in (("hit", hit), ("warm", warm))}
        dh = (med["hit"]["this"] - med["hit"]["baseline"]) * 1000
        rw = med["warm"]["this"] / med["warm"]["baseline"]
        title, what = section
        flag = "" if section == SUPPLY else f" --section {title.split(': ', 1)[-1]!r}"
        body = f"""Measured {time.strftime('%Y-%m-%d')} on {machine()} with `python bench/bench_build.py --against {rev}
--reps {reps}{flag}`: this checkout against `{rev}` ({what}), alternating, medians of {reps}.

| measure | baseline | this | cost | budget |
|---|---|---|---|---|
| no-change rebuild (cache hit, engine unreachable) | {med['hit']['baseline']:.3f} s | {med['hit']['this']:.3f} s | **{dh:+.0f} ms** | <= +20 ms |
| one arm64 cell, warm image, `--no-lint` | {med['warm']['baseline']:.2f} s | {med['warm']['this']:.2f} s | **{rw:.3f}x** | <= 1.05x |

Every run: cache hit baseline {', '.join(f'{x:.3f}' for x in hit['baseline'])} / this {', '.join(f'{x:.3f}' for x in hit['this'])} s;
warm build baseline {', '.join(f'{x:.2f}' for x in warm['baseline'])} / this {', '.join(f'{x:.2f}' for x in warm['this'])} s.
"""
        update_section(title, body)
        print(body)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
        # the images the baseline's checkout made are not this kmod's: gone with it (tests pick images by
        # this checkout's tags, and an older recipe's image has none of its labels)
        for image in engine.images.list():
            if image.id not in before and not any(t == images.tag(pins.get(p)) for t in image.tags
                                                  for p in pins.names()):
                try:
                    engine.images.remove(image.id, force=True)
                except docker.errors.APIError:
                    pass


def main() -> None:
    if "--against" in sys.argv:
        i = sys.argv.index("--against")
        reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 7
        section = SUPPLY
        if "--section" in sys.argv:  # another change's cost, in its own section
            name = sys.argv[sys.argv.index("--section") + 1]
            section = (f"Build: {name}", "the checkout without the change measured here")
        return against(sys.argv[i + 1], reps, section)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "kmod"), str(ROOT / "tasks.py")],
                   check=True, env=ENV, stdout=subprocess.DEVNULL)
    pin = pins.get("bookworm-6.1")
    arm = arch.get("arm64")
    work = Path(tempfile.mkdtemp(prefix="kmod-bench-"))
    (work / "kmod.toml").write_text(SPEC)
    kmod(work, "--arch", "arm64", "--kernel", pin.name)  # warm: image built, sources rendered
    src = work / "dist/clone_probe/src"
    image = images.tag(pin)

    def raw():
        b = Path(tempfile.mkdtemp(dir=work))
        shutil.copytree(src, b, dirs_exist_ok=True)
        run(["docker", "run", "--rm", "--network", "none", "-u", f"{os.getuid()}:{os.getgid()}",
             "-v", f"{b}:/kmod/build", image, "make", "-C", pin.kdir(arm), "M=/kmod/build",
             *arm.make_vars(images.build_arch()), "modules"])
        shutil.rmtree(b)

    def ours():
        fresh(work)
        kmod(work, "--arch", "arm64", "--kernel", pin.name)

    raw_wall, our_wall = wall(raw, 5), wall(ours, 5)

    # What users type most: `invoke build --arch arm64`, lint on (every pin's arm64 cell), fresh dist/
    def default(lint: bool):
        fresh(work)
        run([*KMOD, "build", "--arch", "arm64", *([] if lint else ["--no-lint"])], cwd=work, env=ENV)

    default(True)   # warm: every pin's image, lint target and probe map made once, outside the timing
    lint_wall, nolint_wall = wall(lambda: default(True), 3), wall(lambda: default(False), 3)

    # Cache hit: the engine is unreachable on purpose, so success proves no container started.
    dead = {**ENV, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    hit_wall = wall(lambda: kmod(work, "--arch", "arm64", "--kernel", pin.name, env=dead), 5)
    floor_wall = wall(lambda: run([sys.executable, "-c", "import invoke"], env=ENV), 5)

    cells = [c for c in support.cells(list(pins.all_pins().values())) if c.state == support.LOCKED]
    # every image first, outside the timing (the matrix's own cost is the builds)
    kmod(work, "--arch", "all", "--kernel", "all", "--flavour", "all")
    sequential = 0.0
    for c in cells:
        fresh(work)
        t = time.perf_counter()
        kmod(work, "--arch", c.arch.name, "--kernel", c.pin.name, "--flavour", c.flavour.name)
        sequential += time.perf_counter() - t
    fresh(work)
    t = time.perf_counter()
    proc = subprocess.Popen([*KMOD, "build", "--no-lint", "--arch", "all", "--kernel", "all", "--flavour", "all"],
                            cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    parallel = time.perf_counter() - t
    assert status == 0, "the matrix build failed"
    peak_mib = usage.ru_maxrss / 1024
    load = os.getloadavg()[0]
    shutil.rmtree(work, ignore_errors=True)

    body = f"""Measured {time.strftime('%Y-%m-%d')} on {machine()} with `python bench/bench_build.py`.

| measure | value | target |
|---|---|---|
| one module, arm64, warm image: `invoke build` / raw `docker run make` | {our_wall:.2f} s / {raw_wall:.2f} s = **{our_wall / raw_wall:.2f}x** | <= 1.3x |
| the default command, `invoke build --arch arm64` (3 cells, lint on) / the same with `--no-lint` | {lint_wall:.2f} s / {nolint_wall:.2f} s = **{lint_wall / nolint_wall:.2f}x** | |
| no-change rebuild (cache hit, engine unreachable: no container) | **{hit_wall:.2f} s** (bare `import invoke`: {floor_wall:.2f} s) | <= 0.3 s |
| full matrix ({len(cells)} cells: every pin x flavour x arch), {os.cpu_count()} cores: parallel / sum of sequential | {parallel:.1f} s / {sequential:.1f} s = **{parallel / sequential:.2f}x** | <= 0.55x |
| peak RSS of the tool's process, full matrix | **{peak_mib:.0f} MiB** | < 200 MiB |

Load average at the end: {load:.1f} (a shared machine: the ratios hold, the seconds do not).

A cache hit starts no container and never imports the docker SDK; most of its wall is the interpreter
and `import invoke` (the figure in brackets). A real build adds the docker SDK's import (requests,
about 0.2 s); the container part itself matches the raw `docker run`.
"""
    update_section("Build", body)
    print(body)


if __name__ == "__main__":
    main()
