"""The manifest under concurrent runs, damaged files and dead runs; atomic writes and the umask."""
import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kmod import atomic, manifest
from kmod import run as runmod
from kmod.errors import UserError
from tests.conftest import ROOT


def _writer(path: str, worker: int, cells: int) -> None:
    m = manifest.Manifest(path)
    m.start_run(f"writer {worker}")
    for i in range(cells):
        m.set_cell(f"m{worker}/pin/c{i}", {"result": "ok", "worker": worker})
        m.save()
    m.finish_run("ok")


def test_concurrent_processes_lose_no_record(tmp_path):
    path = tmp_path / "dist" / "manifest.json"
    ctx = multiprocessing.get_context("spawn")  # fresh processes: each its own run id and liveness lock
    procs = [ctx.Process(target=_writer, args=(str(path), w, 15)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    assert len(data["cells"]) == 6 * 15
    assert {r["command"] for r in data["runs"]} == {f"writer {w}" for w in range(6)}
    assert all(r["status"] == "ok" for r in data["runs"])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_update_only_when_the_record_still_matches(tmp_path):
    a = manifest.Manifest(tmp_path / "manifest.json")
    a.set_cell("c", {"result": "ok", "ko_sha256": "old"})
    a.save()
    b = manifest.Manifest(tmp_path / "manifest.json")  # a boot-test that read the old build
    a.set_cell("c", {"result": "ok", "ko_sha256": "new"})  # meanwhile, a rebuild
    a.save()
    b.update_cell("c", when={"ko_sha256": "old"}, boot={"verdict": "pass"})
    b.save()
    rec = json.loads((tmp_path / "manifest.json").read_text())["cells"]["c"]
    assert rec == {"result": "ok", "ko_sha256": "new"}  # a verdict about other bytes is not attached


@pytest.mark.parametrize("content,why", [
    ("[1, 2]", "a JSON list, not an object"),
    ('"text"', "a JSON str"),
    ('{"format": 1, "cells": []}', "`cells` is not an object"),
    ('{"format": 1, "cells": {"a": 5}}', "`cells` is not an object of records"),
    ('{"format": 1, "cells": {}, "runs": {}}', "`runs` is not a list"),
    ('{"format": 99, "cells": {}}', "format 99"),
    ("{not json", "not JSON"),
])
def test_damaged_manifest_is_one_line_and_left_alone(tmp_path, content, why):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(UserError, match="is not a kmod manifest") as e:
        manifest.Manifest(path)
    assert why in e.value.message and "delete it" in e.value.hint
    assert path.read_text() == content  # never replaced by a guess


def test_a_dead_run_is_reaped_as_interrupted(tmp_path):
    """A run SIGKILLed mid-build left `running` records; the next run marks them interrupted."""
    dist = tmp_path / "dist"
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from kmod import manifest, run\n"
            "m = manifest.Manifest(sys.argv[1]); m.start_run('doomed')\n"
            "m.update_cell('a/p/x', result='running', run=run.ID)\n"
            "m.update_cell('b/p/x', result='ok', boot={'verdict': 'running', 'run': run.ID})\n"
            "m.save(); (os.makedirs(run.work_dir(sys.argv[3]), exist_ok=True)); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code, str(dist / "manifest.json"), str(ROOT), str(dist)], check=False)
    assert (dist / ".work").is_dir()
    m = manifest.Manifest(dist / "manifest.json")
    assert m.data["runs"][-1]["status"] == "running"
    m.start_run("next")
    assert runmod.reap_work_dirs(dist)
    data = json.loads((dist / "manifest.json").read_text())
    doomed = next(r for r in data["runs"] if r["command"] == "doomed")
    assert doomed["status"] == "interrupted" and "killed" in doomed["reason"]
    assert data["cells"]["a/p/x"]["result"] == "interrupted"
    assert data["cells"]["b/p/x"]["boot"]["verdict"] == "interrupted"
    assert not [d for d in (dist / ".work").iterdir() if d.name != runmod.ID]


def test_a_live_run_is_not_reaped(tmp_path):
    m = manifest.Manifest(tmp_path / "manifest.json")
    m.start_run("me")
    other = manifest.Manifest(tmp_path / "manifest.json")
    other.start_run("me again")  # the same live process: its lock is held
    runs = json.loads((tmp_path / "manifest.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["running"]  # one run id per process: one entry
    assert runmod.alive(runmod.lock_path())


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    code = ("import os, sys; os.umask(int(sys.argv[1], 8)); sys.path.insert(0, sys.argv[3])\n"
            "from kmod import atomic; from pathlib import Path\n"
            "atomic.write_json(Path(sys.argv[2]) / 'm.json', {}); atomic.copy_file(Path(sys.argv[2]) / 'm.json',"
            " Path(sys.argv[2]) / 'copy')\n")
    subprocess.run([sys.executable, "-c", code, oct(umask), str(tmp_path), str(ROOT)], check=True)
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "copy").st_mode) == mode
    assert atomic.UMASK == os.umask(atomic.UMASK)  # read without changing it


def test_atomic_write_failure_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_text("old")

    def boom(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic.write_json(target, {"new": 1})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_scratch_folders_of_a_dead_run_are_reaped(tmp_path, monkeypatch):
    """Scratch folders outside dist/ (a signing key's in /dev/shm, rpm's and lintian's in /tmp, image
    staging in the cache) carry their run's id; a later run removes those whose run is dead (SIGKILL),
    keeps a live run's and its own, and never touches a kmod-* folder it did not name."""
    import subprocess
    import sys
    import tempfile
    from kmod import run as runmod
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)
    make = ("import sys; from kmod import run; d = run.scratch_dir('rpm'); print(d, flush=True); "
            "sys.stdin.read() if len(sys.argv) > 1 else None")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dead = Path(subprocess.run([sys.executable, "-c", make], capture_output=True, text=True, env=env,
                               check=True).stdout.strip())        # its run exited without removing it
    live_proc = subprocess.Popen([sys.executable, "-c", make, "wait"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
    live = Path(live_proc.stdout.readline().strip())
    mine = runmod.scratch_dir("sign")
    foreign = tmp_path / "tmp" / "kmod-notes.keep.this"
    foreign.mkdir()
    try:
        assert dead.parent == tmp_path / "tmp" and dead.is_dir() and live.is_dir()
        assert runmod.reap_scratch_dirs(grace=0) == [str(dead)]
        assert not dead.exists() and live.is_dir() and mine.is_dir() and foreign.is_dir()
    finally:
        live_proc.communicate("")
