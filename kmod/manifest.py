"""One manifest of what was built (dist/manifest.json): inputs, hashes, toolchain, results per cell.
The stages hand over through it (build -> lint -> package -> boot-test). Written atomically, early and
at the end, so a killed run still leaves a record.

Several runs may share a project at once (two terminals, a CI matrix): each keeps the changes it made
as a list of operations and, under the project lock (dist/.manifest.lock, flock), re-reads the file,
applies its operations to what is there and writes the result. Records of other runs are never lost;
a change made for a given build of a cell (a boot verdict for one .ko) is dropped when another run has
replaced that build meanwhile.
"""
import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import atomic, inputs
from . import run as runmod
from .errors import InfraError, UserError

FORMAT = 1
KEEP_RUNS = 20
# Cell results: ok, failed, pending (queued or building), interrupted (a signal or a dead run stopped it;
# not a failure: it blocks nothing), excluded (not built for this kernel, on purpose).
UNFINISHED = ("pending", "running")


def _empty() -> dict:
    return {"format": FORMAT, "cells": {}, "runs": []}


# The fields of a run's record that kmod reads back (a later run reaps a dead one by them), with their
# types; null where a run may not know one yet.
_RUN_FIELDS = {"id": (str,), "command": (str,), "status": (str,), "reason": (str,), "pid": (int, type(None)),
               "lock": (str, type(None)), "started": (int, float), "finished": (int, float, type(None))}
_RUN_FIELD_WORDS = {"id": "a string", "command": "a string", "status": "a string", "reason": "a string",
                    "pid": "a number", "lock": "a path", "started": "a time", "finished": "a time"}


def _shape_error(data) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if data.get("format") != FORMAT:
        return f"format {data.get('format')!r}, this kmod reads format {FORMAT}"
    if not isinstance(data.get("cells"), dict) or not all(isinstance(v, dict) for v in data["cells"].values()):
        return "`cells` is not an object of records"
    if not isinstance(data.get("runs", []), list) or not all(isinstance(r, dict) for r in data.get("runs", [])):
        return "`runs` is not a list of records"
    for i, r in enumerate(data.get("runs", [])):
        for k, types in _RUN_FIELDS.items():
            if k in r and not isinstance(r[k], types) or isinstance(r.get(k), bool):
                return f"runs[{i}].{k} is {json.dumps(r[k])[:40]}, not {_RUN_FIELD_WORDS[k]}"
    if not isinstance(data.get("packages", {}), dict):
        return "`packages` is not an object"
    if not isinstance(data.get("preflight", {}), dict):
        return "`preflight` is not an object"
    return None


@contextmanager
def project_lock(dist: Path):
    """Held while one run reads, merges and writes the manifest (short: no build happens under it)."""
    dist.mkdir(parents=True, exist_ok=True)
    fd = os.open(dist / ".manifest.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def cell_lock(dist: Path, cell_id: str, stop: threading.Event | None = None, on_wait=None, poll: float = 0.2):
    """Held while one run builds (or boot-tests) a cell, so that two runs never do the same cell at once.
    Polled rather than blocking, so that a Ctrl-C (`stop`) ends the wait."""
    folder = Path(dist) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / (cell_id.replace("/", "+") + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait:
                    on_wait()
                waited = True
                if stop is not None and stop.wait(poll) or stop is None and time.sleep(poll):
                    raise runmod.Interrupted()
        yield waited
    finally:
        os.close(fd)


class Manifest:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._ops: list[tuple] = []   # not yet in the file: (kind, name, fields, when) / ("run", entry)
        self._run: dict | None = None
        self.data = self._read()

    def _read(self) -> dict:
        try:
            raw = inputs.read(self.path, "the manifest", 1 << 30, "move it away or delete it (every cell then builds again)")
        except FileNotFoundError:
            return _empty()
        except IsADirectoryError:
            raise UserError(f"{self.path} is a folder", "move it away; kmod writes its manifest there") from None
        except OSError as e:
            raise InfraError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            data = json.loads(raw)
        except ValueError as e:
            why = f"not JSON ({e})"
        else:
            why = _shape_error(data)
            if why is None:
                data.setdefault("runs", [])
                return data
        raise UserError(f"{self.path} is not a kmod manifest: {why}",
                        "move it away or delete it (every cell then builds again)")

    @property
    def cells(self) -> dict:
        return self.data["cells"]

    def cell(self, key: str) -> dict | None:
        return self.cells.get(key)

    def update_cell(self, cell_id: str, /, when=None, **fields) -> None:
        """Change some fields of a cell's record. `when`: only if the record still has these values
        (e.g. the ko_sha256 a boot verdict is about)."""
        self._apply(("update", cell_id, fields, when))

    def set_cell(self, cell_id: str, record: dict) -> None:
        """Replace a cell's record: results of later stages (lint, boot) for older bytes go with it."""
        self._apply(("set", cell_id, dict(record), None))

    @property
    def packages(self) -> dict:
        """module -> what its last `package` run made (version, result, a file per format)."""
        return self.data.setdefault("packages", {})

    def set_package(self, module: str, record: dict) -> None:
        self._apply(("package", module, dict(record), None))

    @property
    def preflight(self) -> dict:
        """host -> what its last preflight said (kernel, verdict per module, error)."""
        return self.data.setdefault("preflight", {})

    def set_preflight(self, host: str, record: dict) -> None:
        self._apply(("preflight", host, dict(record), None))

    def _apply(self, op: tuple) -> None:
        with self._lock:
            _apply(self.data, op)
            self._ops.append(op)

    # --- runs ---------------------------------------------------------------------------------------

    def start_run(self, command: str) -> str:
        """Record this run (and reap what dead runs left: `running` runs, their unfinished cells)."""
        entry = {"id": runmod.ID, "command": command, "started": time.time(), "status": "running",
                 "pid": os.getpid(), "lock": runmod.lock_path()}
        with self._lock:
            self._run = entry
            self._ops.append(("run", dict(entry)))
        self.save(reap=True)
        return runmod.ID

    def finish_run(self, status: str, **fields) -> None:
        with self._lock:
            if self._run is None:
                return
            self._run.update(status=status, finished=time.time(), **fields)
            self._ops.append(("run", dict(self._run)))
        self.save()

    def interrupt_unfinished(self, cell_ids, reason: str) -> None:
        """Cells of this run that had not finished when it stopped: `interrupted`, not failed."""
        for cid in cell_ids:
            self.update_cell(cid, when={"run": runmod.ID, "result": UNFINISHED}, result="interrupted",
                             reason=reason)

    # --- the file -----------------------------------------------------------------------------------

    def sync(self) -> None:
        """See what other runs wrote meanwhile (our unsaved changes stay on top)."""
        self.save(write=False)

    def save(self, write: bool = True, reap: bool = False) -> None:
        with self._lock, project_lock(self.path.parent):
            disk = self._read()
            if reap:
                _reap_dead_runs(disk)
                runmod.reap_scratch_dirs()
                runmod.reap_lock_files()
                write = True
            for op in self._ops:
                _apply(disk, op)
            if write:
                disk["runs"] = sorted(disk["runs"], key=lambda r: r.get("started") or 0)[-KEEP_RUNS:]
                atomic.write_json(self.path, disk)
                self._ops.clear()
            self.data = disk


def _matches(rec: dict | None, when) -> bool:
    """`when`: None, a predicate of the record, or fields it must have (a tuple: one of these values)."""
    if not when:
        return True
    if rec is None:
        return False
    if callable(when):
        return when(rec)
    for k, v in when.items():
        if isinstance(v, tuple) and rec.get(k) not in v or not isinstance(v, tuple) and rec.get(k) != v:
            return False
    return True


def _apply(data: dict, op: tuple) -> None:
    if op[0] == "run":
        entry = op[1]
        data["runs"] = [r for r in data["runs"] if r.get("id") != entry["id"]] + [dict(entry)]
        return
    kind, cid, fields, when = op
    if kind in ("package", "preflight"):
        data.setdefault("packages" if kind == "package" else "preflight", {})[cid] = dict(fields)
    elif kind == "set":
        data["cells"][cid] = dict(fields)
    elif _matches(data["cells"].get(cid), when):
        data["cells"].setdefault(cid, {}).update(fields)


def as_seen(data: dict) -> dict:
    """The manifest as a reader should show it: the cells and VMs of runs whose process is gone are
    `interrupted`, not `running` (what the next run that writes will record). A copy: nothing is written."""
    import copy
    seen = copy.deepcopy(data)
    _reap_dead_runs(seen)
    return seen


def _reap_dead_runs(data: dict) -> None:
    """Runs still `running` whose process is gone (SIGKILL, a power cut): interrupted, with their cells
    and VMs."""
    dead = set()
    for r in data["runs"]:
        if r.get("status") == "running" and isinstance(r.get("id"), str) and r.get("id") != runmod.ID \
                and not runmod.alive(r.get("lock")):
            r.update(status="interrupted", finished=r.get("finished") or time.time(),
                     reason="the process ended without finishing (killed?); reaped by a later run")
            dead.add(r.get("id"))
    if not dead:
        return
    for rec in data["cells"].values():
        if rec.get("run") in dead and rec.get("result") in UNFINISHED:
            rec.update(result="interrupted", reason="its run was killed")
        boot = rec.get("boot")
        if isinstance(boot, dict) and boot.get("run") in dead and boot.get("verdict") == "running":
            boot.update(verdict="interrupted", reason="its run was killed")
