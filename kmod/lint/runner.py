"""Lint many files: expand the paths, answer from the cache what it knows, lint the rest in a process
pool (forked after the target is loaded, so workers share it), remember the new results.

Cache key: sha256 of the file, the target, the rule data and the linter's code, and the probe list.
A stat index (path, size, mtime, inode -> sha256) spares rereading unchanged files, which is what
makes a rerun over thousands of modules take a fraction of a second. Everything cached is JSON (data,
never code: a planted cache entry cannot run anything) and is checked for shape when read.

Nothing of a run lives in module globals: build threads lint their cells at the same time, each with
its own target. A run's context (`Run`) is passed to every call; pool workers get it once, at fork.
"""
import gc
import hashlib
import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .. import atomic, paths
from .. import run as runmod
from ..errors import KmodError
from . import deps, engine, files, ruledata, signature
from ..progress import Counter
from .findings import RANK, Finding, ModuleResult, Report
from .target import TargetSpec

INDEX_FORMAT = 2
# A pool pays for itself only with enough to do: its workers start in 30 ms and then run slower than one
# process does (they copy the parent's pages as they touch them). Measured in new processes on 2 cores,
# against the pin: one process was faster up to 11 MiB (drivers/media/usb: 0.19 s against 0.24 s with
# two workers), two workers from 16 MiB on (0.38 s against 0.48 s).
POOL_BYTES_PER_WORKER = 8 << 20
RACY_SECONDS = 2.0


@dataclass(frozen=True)
class Run:
    """What every file of one lint run is linted with."""
    target: TargetSpec | None
    probes: list[str] | None
    cert: signature.Cert | None
    context: str           # the cache key's part that is not the file: target, rule data, probes
    results_dir: str

    def result_path(self, key: str) -> str:
        return os.path.join(self.results_dir, key[:2], key + ".json")


def cache_root() -> Path:
    return paths.cache_dir() / "lint"


def _index_path() -> Path:
    return cache_root() / "stat-index.json"


def _load_index() -> dict:
    """path -> (stat key, sha256); entries of the wrong shape are dropped, never trusted."""
    try:
        data = json.loads(_index_path().read_bytes())
        if data.get("format") != INDEX_FORMAT:
            return {}
        out = {}
        for path, ent in data["files"].items():
            if (isinstance(ent, list) and len(ent) == 2 and isinstance(ent[1], str) and
                    isinstance(ent[0], list) and len(ent[0]) == 4 and all(isinstance(x, int) for x in ent[0])):
                out[path] = (tuple(ent[0]), ent[1])
        return out
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _stat_key(st) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _key(sha: str, context: str) -> str:
    return hashlib.sha256(f"{sha}|{context}".encode()).hexdigest()


def _to_json(r: ModuleResult) -> dict:
    return {"arch": r.arch, "findings": [f.to_dict() for f in r.findings], "facts": r.facts}


def _from_json(path: str, d: dict) -> ModuleResult:
    facts = d.get("facts")
    if facts is not None and not (isinstance(facts, dict) and isinstance(facts.get("exports"), dict)
                                  and isinstance(facts.get("needs"), list)
                                  and isinstance(facts.get("import_ns"), list)
                                  and all(isinstance(facts.get(k, {}), dict) and all(
                                      isinstance(v, int) for v in facts.get(k, {}).values())
                                      for k in ("versions", "crcs"))):
        raise ValueError("damaged facts")
    return ModuleResult(path, d["arch"], [Finding.from_dict(f) for f in d["findings"]], facts)


def _cached_result(run: Run, key: str) -> dict | None:
    """A cached result, or None when there is none or it is not of the shape we write."""
    try:
        with open(run.result_path(key), "rb") as f:
            d = json.loads(f.read())
        _from_json("", d)
        return d
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def lint_file(path: Path, target: TargetSpec | None = None, probes: list[str] | None = None,
              strict: bool = False, raw: bytes | None = None, cert: signature.Cert | None = None) -> ModuleResult:
    """Lint one file in this process, no cache (its symbols resolved against the target alone)."""
    r = _lint_one(Path(path), target, probes, strict, raw, cert)
    resolve_set([r], target)
    return r


def _lint_one(path: Path, target, probes, strict: bool = False, raw: bytes | None = None,
              cert: signature.Cert | None = None) -> ModuleResult:
    try:
        data = files.read_module(Path(path), raw)
    except files.Unreadable as e:
        return engine.invalid(str(path), str(e))
    return engine.lint_bytes(data, str(path), target, probes, strict=strict, cert=cert)


SIBLINGS_MAX = 64   # modules beside a named file that may provide its symbols (a package's folder tree)
SIBLINGS_UP = 3     # folders above a named file's own that may be its package's root
SIBLINGS_DEPTH = 4  # folders below that root searched for the package's other modules
ROOT_MARKS = ("dkms.conf", "modules.order")     # a package's root (dkms), an M= build's root (kbuild)
BUILD_MARKS = ("Kbuild", "Makefile")            # a folder of a build: its root may be further up


def _names(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def package_root(d: Path) -> Path:
    """The folder a module in `d` was built as part of: the nearest folder at most SIBLINGS_UP above with a
    dkms.conf or modules.order, reached through folders of the build (a Kbuild or Makefile each), e.g.
    ddcci-backlight/ below the dkms.conf that also builds ddcci/. A folder that is not part of a build
    (a dist/ or install folder) is its own root: a file there sees only the modules beside it."""
    top = cur = d
    for _ in range(SIBLINGS_UP + 1):
        names = set(_names(cur))
        if names.intersection(ROOT_MARKS):
            return cur
        if not names.intersection(BUILD_MARKS):
            break
        top = cur
        if cur.parent == cur:
            break
        cur = cur.parent
    return top


def _package_modules(root: Path) -> list[str]:
    """The .ko files of a package root: those its modules.order lists (kbuild writes NAME.o or NAME.ko,
    relative to the root), then those found below it, SIBLINGS_DEPTH folders deep at most."""
    out: list[str] = []
    try:
        order = (root / "modules.order").read_text(errors="replace").splitlines()[:SIBLINGS_MAX * 4]
    except OSError:
        order = []
    for line in order:
        line = line.strip()
        if line.endswith(".o"):
            line = line[:-2] + ".ko"
        if line.endswith(files.SUFFIXES) and not line.startswith("/") and ".." not in line.split("/"):
            out.append(os.path.normpath(root / line))     # never a file outside the root
    base = len(root.parts)
    for dirpath, dirs, names in os.walk(root):       # links to folders are not followed
        deep = len(Path(dirpath).parts) - base >= SIBLINGS_DEPTH
        dirs[:] = [] if deep else sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(files.SUFFIXES)]
        if len(out) > SIBLINGS_MAX * 4:
            break
    return out


def siblings(named: list[Path], linted: set[str]) -> list[str]:
    """Module files that may provide the symbols of files named one by one (not found by walking a folder,
    whose modules are all in the run already): those beside each file, then the rest of its package
    (package_root), as the kernel would find their exports too once they are loaded."""
    out: dict[str, None] = {}
    folders = list(dict.fromkeys(p.parent for p in named))
    roots = [r for r in dict.fromkeys(package_root(d) for d in folders)
             if r not in folders or set(_names(r)).intersection(ROOT_MARKS + BUILD_MARKS)]
    candidates = [str(d / n) for d in folders for n in sorted(_names(d))] + \
        [p for r in roots for p in _package_modules(r)]
    for p in candidates:
        if len(out) >= SIBLINGS_MAX:
            break
        if p.endswith(files.SUFFIXES) and p not in linted and p not in out and os.path.isfile(p):
            out[p] = None
    return list(out)


def resolve_set(results: list[ModuleResult], spec: TargetSpec | None, extra: list[str] = ()) -> list[str]:
    """Resolve every module's undefined symbols over the set (the results, plus `extra` modules that only
    provide), adding the findings for what nobody provides; returns the load order of the results."""
    modules, arch_of = {}, {}
    for r in results:
        if r.facts is not None:
            modules[r.path], arch_of[r.path] = r.facts, r.arch
    if extra:
        more, more_arch = deps._read(extra)
        modules.update(more)
        arch_of.update(more_arch)

    def target_for(arch):
        t = spec.for_arch(arch) if spec is not None else None
        return t if t is not None and (not t.arch or t.arch == arch) else None

    res = deps.resolve(modules, arch_of, target_for if spec is not None else None)
    for r in results:
        got = res.get(r.path)
        if got is None:
            continue
        r.findings += got.findings
        r.findings.sort(key=lambda f: (-RANK[f.severity], f.rule, f.function or "", f.address or 0))
        r.provided = {s: p for s, p in got.provided.items() if p != deps.VMLINUX}
        r.depends = got.depends
    return deps.order_of(res, [r.path for r in results if r.path in res])


def _work(run: Run, item: tuple[str, str | None]) -> tuple[str, dict, str | None, bool]:
    """(path, result, sha256 when this worker computed it, served from the cache?)"""
    path, key = item
    sha = None
    try:
        raw = files.read_raw(path)
    except files.Unreadable as e:
        return path, _to_json(engine.invalid(path, str(e))), None, False
    if key == "":
        # the parent did not know the content: hash it here, where the file is read anyway, so the
        # hashing runs in parallel and each file is read once
        sha = hashlib.sha256(raw).hexdigest()
        key = _key(sha, run.context)
        hit = _cached_result(run, key)
        if hit is not None:
            return path, hit, sha, True
    r = _lint_one(Path(path), run.target, run.probes, raw=raw, cert=run.cert)
    d = _to_json(r)
    if key:
        try:
            atomic.write_text(Path(run.result_path(key)), json.dumps(d))
        except OSError:
            pass    # a read-only cache costs speed, never results
    return path, d, sha, False


def _work_safely(run: Run, item: tuple[str, str | None]) -> tuple[str, dict, str | None, bool]:
    try:
        return _work(run, item)
    except KmodError:
        raise
    except Exception as e:  # noqa: BLE001 - one file must not take the run down
        r = ModuleResult(item[0], None, [Finding("lint-internal-error", "warning",
                                                 f"linting this file failed ({type(e).__name__}: {e})")])
        return item[0], _to_json(r), None, False


# A pool worker serves exactly one run (its pool is made for it and forked with it), so this is the
# worker process's own copy, set once by the pool's initializer: never shared between runs or threads.
_worker_run: Run | None = None


def _worker_init(run: Run) -> None:
    global _worker_run
    _worker_run = run
    # Ctrl-C (or a SIGTERM/SIGHUP to the group) reaches every process: the parent decides and stops the
    # workers itself
    for s in runmod.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _work_many(items: list) -> list:
    return [_work_safely(_worker_run, i) for i in items]


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
               probes: list[str] | None = None, use_cache: bool = True, progress: bool = False,
               cert: str | None = None) -> Report:
    """Lint files and folders; `cert`: the X.509 certificate (PEM or DER) their signatures must verify against."""
    crt = signature.Cert.load(cert) if cert else None     # a bad certificate stops the run before any work
    targets = files.expand(paths_in)
    spec = TargetSpec(target) if target else None
    probe_key = ",".join(probes) if probes is not None else "-"
    context = "|".join([spec.key if spec else "-", ruledata.fingerprint(), probe_key, crt.sha256 if crt else "-"])
    run = Run(spec, probes, crt, context, str(cache_root() / "results"))   # cache_dir() once: it makes folders

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
        why = files.not_regular(st)
        if why:
            results[sp] = engine.invalid(sp, why)   # a FIFO would block, a device never end
            continue
        key = None
        if use_cache:
            stats[sp] = st
            ent = index.get(sp)
            if ent and ent[0] == _stat_key(st):
                if now - st.st_mtime > RACY_SECONDS:
                    new_index[sp] = ent
                key = _key(ent[1], context)
                hit = _cached_result(run, key)
                if hit is not None:
                    results[sp] = _from_json(sp, hit)
                    continue
            else:
                key = ""    # unknown content: the worker hashes it (see _work)
        todo.append((sp, key, st.st_size))
    cached = len(results)

    if todo:
        if spec is not None:
            spec.prepare(_arches_of([Path(t[0]) for t in todo]) or spec.arches())   # once, before forking
        todo.sort(key=lambda t: -t[2])     # biggest first: the pool ends together
        items = [(sp, key) for sp, key, _ in todo]
        # a process pool pays for itself only with enough to do (see POOL_BYTES_PER_WORKER): one small
        # module, what a build cell adds, is linted here
        size = sum(t[2] for t in todo)
        workers = min(jobs or _cpus(), len(items), max(1, size // POOL_BYTES_PER_WORKER))
        if workers > 1:
            engine.warm(_arches_of([Path(t[0]) for t in todo]) or _all_arch_names())   # before forking

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
            _run_pool(run, items, workers, collect)
    if use_cache and new_index != index:
        merged = {**index, **new_index}
        try:
            atomic.write_text(_index_path(), json.dumps({"format": INDEX_FORMAT, "files": merged},
                                                        separators=(",", ":")))
        except OSError:
            pass
    linted = [results[str(p)] for p in targets if str(p) in results]
    named = [Path(os.path.abspath(p)) for p in paths_in if not os.path.isdir(p)]
    extra = siblings(named, {r.path for r in linted}) if named else []
    order = resolve_set(linted, spec, extra)
    return Report(linted, target=target, cached=cached, order=order, cert=cert)


def _run_pool(run: Run, items: list, workers: int, collect) -> None:
    """Lint `items` in this process (one worker) or a fork pool, handing each finished batch to `collect`.
    On Ctrl-C (or any error) the workers are killed at once instead of finishing their queue."""
    if workers <= 1:
        for item in items:
            collect([_work_safely(run, item)])
        return
    ctx = multiprocessing.get_context("fork")
    # The workers share the parent's memory (the target's tables, the rule data) until they write to it,
    # and a garbage collection in a worker writes to every object it visits: each worker then copied
    # the parent's pages one by one and did its half of drivers/media/usb in 0.24 s, twice the whole
    # set's time in one process. Frozen objects are left alone by the collector (gc.freeze).
    gc.freeze()
    # a signal only takes note while the pool's locks are in play, from its first submit (which forks the
    # workers) on: an exception landing inside them would leave one held and hang the exit, as a Ctrl-C
    # right after the first progress line sometimes did; it is raised here, between waits
    try:
        with runmod.deferred_signals() as signals:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                       initargs=(run,))
            try:
                futures = {pool.submit(_work_many, chunk): chunk for chunk in _chunks(items, workers)}
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    signals.check()
                    for fut in finished:
                        try:
                            done = fut.result()
                        except KmodError:
                            raise
                        except Exception:   # a worker died (BrokenProcessPool): redo its files here
                            done = [_work_safely(run, i) for i in futures[fut]]
                        collect(done)
            except BaseException:
                _kill_workers(pool)
                # wait for the pool's own thread to see its workers gone: one still closing its pipe as the
                # interpreter exits prints "Exception ignored ... Bad file descriptor" after our one line
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        gc.unfreeze()
    pool.shutdown()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    kill = getattr(pool, "kill_workers", None)     # Python 3.14
    if kill is not None:
        kill()
        return
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.kill()
        except (OSError, ValueError, AttributeError):
            pass
    # A worker killed while it wrote a result leaves half a message in the result pipe, and the pool's
    # thread waited for the rest for ever (this process holds the pipe's write end too), so shutdown()
    # never returned: Ctrl-C hung about one run in forty. With this process's copy closed, the dead
    # workers' ends were the last: the thread reads end-of-file, takes the pool as broken and stops.
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        try:
            writer.close()
        except OSError:
            pass


def _arches_of(paths_: list[Path]) -> set[str]:
    """The arches of these files from their ELF headers (compressed ones: every arch), so a target
    loads only what the run needs."""
    from .. import arch as archmod
    out: set[str] = set()
    for p in paths_:
        if not p.name.endswith(".ko") and not p.suffix == ".o":
            return set()
        try:
            head = files.read_head(p, 20)
        except files.Unreadable:
            continue
        if len(head) == 20 and head[:4] == b"\x7fELF":
            a = archmod.by_elf_machine(int.from_bytes(head[18:20], "big" if head[5] == 2 else "little"))
            if a is not None:
                out.add(a.name)
    return out


def _all_arch_names() -> list[str]:
    from .. import arch as archmod
    return archmod.names()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
