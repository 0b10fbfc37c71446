"""Unwritable, read-only and full places, and engines that cannot be reached: one line each, exit 1,
nothing half-written. Real mounts (a tmpfs of a few KB, a read-only tmpfs): needs root, as CI has."""
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, need
from tests.conftest import run_program as kmod

FAKE_KDIR = ROOT / "tests" / "fixtures" / "fake_kdir"
SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'


def one_line(proc, text):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error", "environment error"))]
    assert len(errors) == 1 and text in errors[0], proc.stderr


def no_temp_files(root):
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder; unmounted afterwards."""
    need(os.geteuid() == 0, "root (to mount a small tmpfs)")
    made = []

    def make(options: str):
        d = tmp_path / f"mnt{len(made)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], check=True)
        made.append(d)
        return d
    yield make
    for d in reversed(made):
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_disk(mount):
    root = mount("size=64k")
    (root / "kmod.toml").write_text(SPEC)
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - 600)  # a few hundred bytes left: less than any run needs
    for args in (["render"], ["build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--arch", "x86_64",
                              "--no-lint"], ["package", "--format", "tarball", "--force"]):
        proc = kmod(*args, cwd=root, env={"KMOD_CACHE": str(root / "cache")})
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1, proc.stderr
        assert "No space left on device" in proc.stderr, proc.stderr
        no_temp_files(root)
        if (root / "dist" / "manifest.json").exists():
            json.loads((root / "dist" / "manifest.json").read_text())  # never half a manifest
        assert not list((root / "dist" / "packages").glob("*")) if (root / "dist" / "packages").exists() else True


@pytest.mark.parametrize("where", ["dist", "cache"])
def test_read_only_places(mount, tmp_path, where):
    ro = mount("size=64k,ro")
    project = tmp_path / "p"
    project.mkdir()
    (project / "kmod.toml").write_text(SPEC)
    env = {"KMOD_CACHE": str(ro / "cache") if where == "cache" else str(tmp_path / "cache")}
    if where == "dist":
        (project / "dist").symlink_to(ro)  # dist/ lives on a read-only file system
    proc = kmod("build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--no-lint", cwd=project, env=env)
    one_line(proc, "cannot write the output folder" if where == "dist" else "cannot write the cache folder")
    assert "Read-only file system" in proc.stderr or "No such file" in proc.stderr or "permission" in proc.stderr


def test_dist_is_a_file(tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    (tmp_path / "dist").write_text("not a folder")
    for args in (["render"], ["build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--no-lint"],
                 ["package", "--format", "tarball"], ["boot-test"]):
        proc = kmod(*args, cwd=tmp_path)
        one_line(proc, "cannot write the output folder")
    assert (tmp_path / "dist").read_text() == "not a folder"


def test_manifest_and_lock_of_the_wrong_shape(tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "manifest.json").write_text("[]")
    one_line(kmod("build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--no-lint", cwd=tmp_path),
             "is not a kmod manifest: a JSON list")
    one_line(kmod("package", "--format", "tarball", cwd=tmp_path), "is not a kmod manifest")
    one_line(kmod("boot-test", cwd=tmp_path), "is not a kmod manifest")
    assert (tmp_path / "dist" / "manifest.json").read_text() == "[]"


@pytest.mark.parametrize("runs,text", [
    ('[{"id": "r1", "status": "running", "lock": 5}]', "runs[0].lock is 5, not a path"),
    ('[{"id": "r1", "started": "x"}, {"id": "r2", "started": 1}]', 'runs[0].started is "x", not a time'),
    ('[{"id": 7, "status": "running"}]', "runs[0].id is 7, not a string"),
    ('[{"id": "r1", "status": true}]', "runs[0].status is true, not a string"),
])
def test_runs_of_the_wrong_shape(tmp_path, runs, text):
    """A run record is read back by every later run (to reap a dead one): its fields are checked too."""
    (tmp_path / "kmod.toml").write_text(SPEC)
    (tmp_path / "dist").mkdir()
    manifest = f'{{"format": 1, "cells": {{}}, "runs": {runs}}}'
    (tmp_path / "dist" / "manifest.json").write_text(manifest)
    for args in (["build", "--runtime", "host", "--kdir", str(FAKE_KDIR), "--no-lint"],
                 ["package", "--format", "tarball"], ["boot-test"], ["status"]):
        one_line(kmod(*args, cwd=tmp_path), text)
    assert (tmp_path / "dist" / "manifest.json").read_text() == manifest


def _fifo(path):
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _zero(path):
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize("make,kind", [(_fifo, "is a FIFO, not a file"),
                                       (_zero, "is a character device, not a file")])
def test_inputs_that_are_not_files(tmp_path, make, kind):
    """A FIFO would block forever, /dev/zero would be read until memory runs out: every file kmod is
    handed, or keeps where others can write, is a regular file or one line."""
    (tmp_path / "kmod.toml").write_text(SPEC)
    (tmp_path / "dist").mkdir()
    odd = tmp_path / "odd"
    make(odd)
    cases = [(["render", "--spec", str(odd)], "spec"),
             (["lint", str(tmp_path / "kmod.toml"), "--cert", str(odd)], "--cert"),
             (["build", "--sign-key", str(odd), "--sign-cert", str(odd)], "--sign-key"),
             (["preflight", "--hosts", str(odd)], "--hosts")]
    for args, what in cases:
        one_line(kmod(*args, cwd=tmp_path, timeout=30), f"{what} {odd} {kind}")
    make(tmp_path / "dist" / "manifest.json")
    for args in (["status"], ["boot-test"], ["package", "--format", "tarball"]):
        one_line(kmod(*args, cwd=tmp_path, timeout=30), f"the manifest {tmp_path / 'dist' / 'manifest.json'} {kind}")
    # a kmod.toml that is no file is that spec's problem, not "no kmod.toml here"
    make(tmp_path / "kmod.toml")
    one_line(kmod("render", cwd=tmp_path, timeout=30), f"spec {tmp_path / 'kmod.toml'} {kind}")


def test_a_spec_far_larger_than_any_spec_is_refused_unread(tmp_path):
    big = tmp_path / "kmod.toml"
    with open(big, "wb") as f:
        f.truncate(64 << 20)                  # sparse: nothing is written, the size says it all
    one_line(kmod("render", cwd=tmp_path, timeout=30), "is 64 MiB, more than the 4 MiB it can be")


@pytest.mark.parametrize("lock,text", [
    ('["not", "a", "table"]', "no table of pins"),
    ('{"pins": {"bookworm-6.1": {"abi": 5}}}', "is not a table with an abi"),
    ('{"pins": {"bookworm-6.1": {"abi": "6.1.0-56", "packages": [{"name": 1}]}}}', "package 1: name must be a string"),
    ('{"pins": {"bookworm-6.1": {"abi": "6.1.0-56", "packages": [{"name": "x", "version": "1", "arch": "all", '
     '"role": "kbuild", "filename": "x.deb", "archive": "main", "sha256": "00", "size": "big"}]}}}',
     "size must be an integer"),
])
def test_lock_of_the_wrong_shape(tmp_path, lock, text):
    """A copy of the data folders with a damaged lock (the checkout's own lock is never touched)."""
    import shutil
    data = tmp_path / "kmodcopy"
    shutil.copytree(ROOT / "kmod", data / "kmod", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("toolchains", "templates", "rules"):
        shutil.copytree(ROOT / folder, data / folder)
    (data / "toolchains" / "kernels.lock").write_text(lock)
    (tmp_path / "kmod.toml").write_text(SPEC)
    proc = subprocess.run([sys.executable, "-m", "kmod", "build", "--no-lint"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(data)}, timeout=120)
    one_line(proc, text)
    assert "kernels.lock" in proc.stderr and "toolchains --update" in proc.stderr


def test_engine_that_refuses_connections(tmp_path):
    """A socket file with nobody listening (a dead dockerd): the reason in full, and how to start one."""
    sock_path = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))  # bound, never listening: connect() is refused
    try:
        (tmp_path / "kmod.toml").write_text(SPEC)
        proc = kmod("build", "--arch", "x86_64", "--kernel", "bookworm-6.1", cwd=tmp_path,
                    env={"DOCKER_HOST": f"unix://{sock_path}"})
    finally:
        s.close()
    one_line(proc, f"no Docker engine answers at unix://{sock_path}: Connection refused")
    assert "dockerd" in proc.stderr
