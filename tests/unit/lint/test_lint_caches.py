"""The lint's caches hold data, not code, and one run's context never leaks into another's: a planted
pickle in KMOD_CACHE runs nothing, threads linting against different kernels each get their own, and
Ctrl-C stops a pooled run at once."""
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kmod import arch as archmod
from kmod import pins
from kmod.lint import lint_paths, runner, target

from .conftest import kernel_tree, rules_of

CLEAN = """
    static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
    static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
    int init_module(void) { return register_kprobe(&kp); }
    void cleanup_module(void) { unregister_kprobe(&kp); }
"""


class Planted:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_planted_pickles_in_the_lint_cache_run_nothing(build, cache, tmp_path):
    ko = build("x86_64", CLEAN)
    os.utime(ko, (time.time() - 60, time.time() - 60))   # old enough for the stat index
    first = lint_paths([ko], jobs=1)
    root = runner.cache_root()
    results = list((root / "results").rglob("*.json"))
    assert results and (root / "stat-index.json").is_file()
    marker = tmp_path / "ran"
    payload = pickle.dumps(Planted(marker))
    for p in [*results, root / "stat-index.json", root / "stat-index.pickle"]:
        p.write_bytes(payload)
    again = lint_paths([ko], jobs=1)
    assert not marker.exists()
    assert rules_of(again.modules[0]) == rules_of(first.modules[0]) == []
    # a cache entry that is JSON of the wrong shape is ignored too, never a traceback
    for p in results:
        p.write_text(json.dumps({"arch": 5, "findings": "x"}))
    (root / "stat-index.json").write_text(json.dumps({"format": runner.INDEX_FORMAT, "files": {str(ko): 7}}))
    assert rules_of(lint_paths([ko], jobs=1).modules[0]) == []


def test_planted_pickle_as_a_target_cache_runs_nothing(cache, tmp_path, monkeypatch):
    """load_pin() reads its cached target as JSON: a pickle planted there is rebuilt from the packages
    (faked here at the seam: the headers' Module.symvers and .config, the image's System.map)."""
    pin, arch = pins.get("bookworm-6.1"), archmod.get("x86_64")
    tree = tmp_path / "image"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "System.map-6.1.0-56-amd64").write_text("ffffffff81000000 T _stext\n")
    monkeypatch.setattr(target, "headers_files", lambda p, a, *flavour: (
        "0x11111111\tregister_kprobe\tvmlinux\tEXPORT_SYMBOL_GPL\t\n",
        "CONFIG_X86_64=y\nCONFIG_SMP=y\nCONFIG_MODVERSIONS=y\n"))
    monkeypatch.setattr(target, "image_tree", lambda p, a, *flavour: tree)
    built = target.load_pin(pin, arch)
    files = sorted((cache / "lint" / "targets").glob("*.json"))
    assert len(files) == 2      # the exports and vermagic; the symbols, read only when probes need them
    assert target.load_pin(pin, arch, symbols=True) == built
    marker = tmp_path / "ran"
    for f in files:
        f.write_bytes(pickle.dumps(Planted(marker)))
    again = target.load_pin(pin, arch, symbols=True)
    assert not marker.exists()
    assert again == built and again.exports == {"register_kprobe": (0x11111111, True, "", "vmlinux")}


def _tree(root: Path, release: str) -> Path:
    return kernel_tree(root, release, "0x11111111\tregister_kprobe\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
                                      "0x22222222\tunregister_kprobe\tvmlinux\tEXPORT_SYMBOL_GPL\t\n")


def test_threads_linting_against_different_kernels_never_mix_them(build, cache, tmp_path):
    """What `invoke build` does: one thread per cell, each linting its .ko against its own kernel."""
    releases = ["6.1.0-55-amd64", "6.1.0-56-amd64", "6.1.0-57-amd64"]
    cells = []
    for rel in releases:
        ko = build("x86_64", f'MODINFO(vermagic, "vermagic={rel} SMP preempt mod_unload modversions ");' + CLEAN,
                   vermagic=False, name=rel.replace(".", "_").replace("-", "_"))
        cells.append((ko, str(_tree(tmp_path, rel))))
    failures = []

    def worker(n):
        for i in range(12):
            ko, tree = cells[(n + i) % len(cells)]
            r = lint_paths([ko], target=tree, jobs=1, use_cache=(i % 2 == 0)).modules[0]
            wrong = [f for f in r.findings if f.severity != "info"]   # no System.map: info only
            if wrong:
                failures.append((ko.name, tree, wrong))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    # and the check is live: a module against another cell's kernel is a mismatch
    assert ("vermagic-mismatch", "error") in rules_of(lint_paths([cells[0][0]], target=cells[1][1], jobs=1).modules[0])


FP_MODULE = "\n".join(
    [f'__attribute__((noinline)) void f{i}(void) {{ asm volatile("pxor %xmm0, %xmm0"); }}' for i in range(3000)]
    + ["int init_module(void) { " + " ".join(f"f{i}();" for i in range(3000)) + " return 0; }"])


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("front", ["python -m kmod.lint", "invoke lint"])
def test_a_signal_stops_a_pooled_lint_within_a_second(build, tmp_path, signum, code, front):
    """SIGINT (a terminal's Ctrl-C), SIGTERM (a CI timeout, `docker stop`) or SIGHUP (a closed terminal) to
    the process group: the run ends in a second with one line and the signal's exit code, as a build
    does, and no worker survives it."""
    from tests.conftest import ROOT
    ko = build("x86_64", FP_MODULE)
    folder = tmp_path / "many"
    folder.mkdir()
    data = ko.read_bytes()
    for i in range(120):       # distinct bytes: nothing is served from a cache
        (folder / f"m{i}.ko").write_bytes(data + i.to_bytes(4, "little"))
    argv = ["-m", "kmod.lint", str(folder)] if front.startswith("python") else \
        ["-m", "invoke", "--search-root", str(ROOT), "lint", str(folder)]
    proc = subprocess.Popen([sys.executable, *argv, "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=tmp_path,
                            env={**os.environ, "KMOD_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stderr.readline()      # the first progress line: the pool is at work
        assert line.startswith(b"lint: "), line
        workers = [c for t in Path(f"/proc/{proc.pid}/task").glob("*/children") for c in t.read_text().split()]
        assert len(workers) >= 2, "the lint did not run a pool"
        os.killpg(proc.pid, signum)
        sent = time.monotonic()
        _out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:        # never leave this run's processes behind, whatever failed
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    name = signal.Signals(signum).name
    assert proc.returncode == code and err.decode().strip().splitlines()[-1] == f"interrupted ({name})", err
    assert b"Traceback" not in err, err
    assert took < 1.0, f"{took:.2f} s after {name}"
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)     # no worker of that run is left


_POOL = None


def _write_half_a_result():
    """In a worker: half of a result message in the pool's result pipe, then nothing (killed there)."""
    import struct
    os.write(_POOL._result_queue._writer.fileno(), struct.pack("!i", 1 << 16) + b"x")
    time.sleep(60)


def test_killing_workers_mid_result_never_hangs_the_shutdown():
    """A worker killed while it wrote its result left half a message in the pipe; the pool's thread waited
    for the rest for ever and Ctrl-C hung the lint at exit, about one run in forty."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    global _POOL
    _POOL = pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    pool.submit(_write_half_a_result)
    time.sleep(1.0)              # the pool's thread is now waiting for the rest of the message
    runner._kill_workers(pool)
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(wait=True, cancel_futures=True), done.set()), daemon=True).start()
    assert done.wait(10), "shutdown hung after the workers were killed"
