"""Lint many files: expand the paths, answer from the cache what it knows, lint the rest in a process
pool (forked after the target is loaded, so workers share it), remember the new results.

Cache key: sha256 of the file, the target, the rule data and the linter's code, and the probe list.
A stat index (path, size, mtime, inode -> sha256) spares rereading unchanged files, which is what
makes a rerun over thousands of modules take a fraction of a second.
"""
import hashlib
import json
import multiprocessing
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .. import atomic, paths
from ..errors import KmodError
from . import engine, files, ruledata
from ..progress import Counter
from .findings import Finding, ModuleResult, Report
from .target import TargetSpec

INDEX_FORMAT = 1
RACY_SECONDS = 2.0
_state: dict = {}   # what forked workers inherit: the target and the probe list


def cache_root() -> Path:
    return paths.cache_dir() / "lint"


def _index_path() -> Path:
    return cache_root() / "stat-index.pickle"


def _load_index() -> dict:
    try:
        data = pickle.loads(_index_path().read_bytes())
        return data["files"] if data.get("format") == INDEX_FORMAT else {}
    except Exception:
        return {}


def _stat_key(st) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


_results_dir: str | None = None


def _result_path(key: str) -> str:
    return os.path.join(_results_dir, key[:2], key + ".json")


def _key(sha: str, context: str) -> str:
    return hashlib.sha256(f"{sha}|{context}".encode()).hexdigest()


def _to_json(r: ModuleResult) -> dict:
    return {"arch": r.arch, "findings": [f.to_dict() for f in r.findings]}


def _from_json(path: str, d: dict) -> ModuleResult:
    return ModuleResult(path, d["arch"], [Finding.from_dict(f) for f in d["findings"]])


def lint_file(path: Path, target: TargetSpec | None = None, probes: list[str] | None = None,
              strict: bool = False, raw: bytes | None = None) -> ModuleResult:
    """Lint one file in this process, no cache."""
    try:
        data = files.read_module(Path(path), raw)
    except files.Unreadable as e:
        return engine.invalid(str(path), str(e))
    return engine.lint_bytes(data, str(path), target, probes, strict=strict)


def _work(item: tuple[str, str | None]) -> tuple[str, dict, str | None, bool]:
    """(path, result, sha256 when this worker computed it, served from the cache?)"""
    path, key = item
    sha = None
    raw = None
    if key == "":
        # the parent did not know the content: hash it here, where the file is read anyway, so the
        # hashing runs in parallel and each file is read once
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            raw = None
        if raw is not None:
            sha = hashlib.sha256(raw).hexdigest()
            key = _key(sha, _state["context"])
            try:
                with open(_result_path(key), "rb") as f:
                    return path, json.loads(f.read()), sha, True
            except (OSError, ValueError):
                pass
    r = lint_file(Path(path), _state.get("target"), _state.get("probes"), raw=raw)
    d = _to_json(r)
    if key:
        try:
            atomic.write_text(Path(_result_path(key)), json.dumps(d))
        except OSError:
            pass    # a read-only cache costs speed, never results
    return path, d, sha, False


def _work_safely(item: tuple[str, str | None]) -> tuple[str, dict, str | None, bool]:
    try:
        return _work(item)
    except KmodError:
        raise
    except Exception as e:  # noqa: BLE001 - one file must not take the run down
        r = ModuleResult(item[0], None, [Finding("lint-internal-error", "warning",
                                                 f"linting this file failed ({type(e).__name__}: {e})")])
        return item[0], _to_json(r), None, False


def _work_many(items: list) -> list:
    return [_work_safely(i) for i in items]


def _chunks(items: list, workers: int) -> list[list]:
    """Biggest files one by one (so no worker gets two giants), then the many small ones in batches
    (so the pool's per-task overhead stays small)."""
    head = min(len(items), workers * 16)
    out = [[i] for i in items[:head]]
    rest = items[head:]
    size = max(1, min(32, len(rest) // (workers * 4) or 1))
    out += [rest[i:i + size] for i in range(0, len(rest), size)]
    return out


def lint_paths(paths_in: list, target: str | None = None, jobs: int | None = None,
               probes: list[str] | None = None, use_cache: bool = True, progress: bool = False) -> Report:
    global _results_dir
    _results_dir = str(cache_root() / "results")   # once per run: cache_dir() creates folders
    targets = files.expand(paths_in)
    spec = TargetSpec(target) if target else None
    probe_key = ",".join(probes) if probes is not None else "-"
    context = "|".join([spec.key if spec else "-", ruledata.fingerprint(), probe_key])

    index = _load_index() if use_cache else {}
    new_index = {}
    stats: dict[str, os.stat_result] = {}
    results: dict[str, ModuleResult] = {}
    todo: list[tuple[str, str | None, int]] = []
    now = time.time()
    for p in targets:
        sp = str(p)
        try:
            st = os.stat(sp)
        except OSError as e:
            results[sp] = engine.invalid(sp, f"cannot read: {e.strerror}")
            continue
        key = None
        if use_cache:
            stats[sp] = st
            ent = index.get(sp)
            if ent and ent[0] == _stat_key(st):
                if now - st.st_mtime > RACY_SECONDS:
                    new_index[sp] = ent
                key = _key(ent[1], context)
                try:
                    with open(_result_path(key), "rb") as f:
                        results[sp] = _from_json(sp, json.loads(f.read()))
                    continue
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            else:
                key = ""    # unknown content: the worker hashes it (see _work)
        todo.append((sp, key, st.st_size))
    cached = len(results)

    if todo:
        if spec is not None:
            spec.prepare(_arches_of([Path(t[0]) for t in todo]) or spec.arches())   # once, before forking
        _state.update(target=spec, probes=probes, context=context)
        todo.sort(key=lambda t: -t[2])     # biggest first: the pool ends together
        items = [(sp, key) for sp, key, _ in todo]
        workers = min(jobs or _cpus(), len(items))


        counter = Counter("lint", len(items), min_total=50 if progress else len(items) + 1)

        def collect(done):
            nonlocal cached
            done = list(done)
            counter.advance(len(done))
            for sp, d, sha, hit in done:
                results[sp] = _from_json(sp, d)
                cached += hit
                st = stats.get(sp)
                if sha and st is not None and now - st.st_mtime > RACY_SECONDS:
                    # a file written in the last moments may change again within the same timestamp
                    # tick (git's "racy" problem): trust its stat only once it is old enough
                    new_index[sp] = (_stat_key(st), sha)

        with counter:
            _run_pool(items, workers, collect)
    if use_cache and new_index != index:
        merged = {**index, **new_index}
        try:
            atomic.write_bytes(_index_path(), pickle.dumps({"format": INDEX_FORMAT, "files": merged}))
        except OSError:
            pass
    report = Report([results[str(p)] for p in targets if str(p) in results], target=target, cached=cached)
    return report


def _run_pool(items: list, workers: int, collect) -> None:
    """Lint `items` in this process (one worker) or a fork pool, handing each finished batch to `collect`."""
    if workers <= 1:
        for item in items:
            collect([_work_safely(item)])
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_work_many, chunk): chunk for chunk in _chunks(items, workers)}
        for fut in as_completed(futures):
            try:
                done = fut.result()
            except KmodError:
                raise
            except Exception:   # a worker died (BrokenProcessPool): redo its files here
                done = [_work_safely(i) for i in futures[fut]]
            collect(done)


def _arches_of(paths_: list[Path]) -> set[str]:
    """The arches of these files from their ELF headers (compressed ones: every arch), so a target
    loads only what the run needs."""
    from .. import arch as archmod
    out: set[str] = set()
    for p in paths_:
        if not p.name.endswith(".ko") and not p.suffix == ".o":
            return set()
        try:
            with open(p, "rb") as f:
                head = f.read(20)
        except OSError:
            continue
        if len(head) == 20 and head[:4] == b"\x7fELF":
            a = archmod.by_elf_machine(int.from_bytes(head[18:20], "big" if head[5] == 2 else "little"))
            if a is not None:
                out.add(a.name)
    return out


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
