"""Which cells a boot test takes from the manifest, and the task's wiring."""
import json
from pathlib import Path

from kmod import arch as archmod
from kmod import boot
from kmod import pins as pinsmod
from kmod import spec as specmod
from kmod.manifest import Manifest

SPEC = """
default = ["a"]
[[module]]
name = "a"
symbols = ["kernel_clone"]
[[module]]
name = "b"
symbols = ["do_sys_openat2"]
trigger = "cat /proc/version"
"""


def project(tmp_path: Path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    proj = specmod.load(tmp_path / "kmod.toml")
    cells = {}
    for mod in ("a", "b"):
        for kernel in ("bookworm-6.1", "trixie-6.12"):
            for arch in ("x86_64", "arm64"):
                ko = f"{mod}/{kernel}/{arch}/{mod}.ko"
                ok = not (mod == "b" and arch == "arm64")
                if ok:
                    (proj.dist / ko).parent.mkdir(parents=True, exist_ok=True)
                    (proj.dist / ko).write_bytes(b"ko")
                cells[f"{mod}/{kernel}/{arch}"] = {"module": mod, "kernel": kernel, "arch": arch,
                                                   "result": "ok" if ok else "failed", "ko": ko if ok else None}
    (proj.dist / "manifest.json").write_text(json.dumps({"format": 1, "cells": cells, "runs": []}))
    return proj


def test_only_built_cells_of_the_selection(tmp_path):
    proj = project(tmp_path)
    m = Manifest(proj.dist / "manifest.json")
    got = boot.targets_from_manifest(proj, m, archmod.select("all"), pinsmod.select("all"), proj.select("all"))
    assert sorted(t.id for t in got) == ["a/bookworm-6.1/arm64", "a/bookworm-6.1/x86_64", "a/trixie-6.12/arm64",
                                         "a/trixie-6.12/x86_64", "b/bookworm-6.1/x86_64", "b/trixie-6.12/x86_64"]
    got = boot.targets_from_manifest(proj, m, archmod.select("arm64"), pinsmod.select("6.1"), proj.select(None))
    assert [t.id for t in got] == ["a/bookworm-6.1/arm64"]
    (proj.dist / "a/bookworm-6.1/arm64/a.ko").unlink()
    assert boot.targets_from_manifest(proj, m, archmod.select("arm64"), pinsmod.select("6.1"),
                                      proj.select(None)) == []


def test_trigger_from_spec_or_data(tmp_path):
    proj = project(tmp_path)
    m = Manifest(proj.dist / "manifest.json")
    by_id = {t.id: t for t in boot.targets_from_manifest(proj, m, archmod.select("all"), pinsmod.select("all"),
                                                          proj.select("all"))}
    assert by_id["b/trixie-6.12/x86_64"].trigger == "cat /proc/version"
    assert by_id["a/trixie-6.12/x86_64"].trigger == "/bin/true"
    assert by_id["a/trixie-6.12/x86_64"].probes == [("kernel_clone", 0)]


def test_nothing_to_boot_is_a_usage_error(tmp_path):
    import pytest

    from kmod.errors import UserError
    with pytest.raises(UserError, match="nothing to boot-test"):
        boot.boot_all([], tmp_path)


def test_tasks_are_registered():
    from kmod.tasks import ns
    assert {"boot-test", "probe-map"} <= set(ns.task_names)
    opts = {a.name for a in ns["boot-test"].get_arguments()}
    assert {"arch", "kernel", "module", "spec", "timeout", "jobs"} <= opts


def test_infrastructure_error_of_one_cell_is_recorded(tmp_path, monkeypatch):
    from kmod.boot import qemu
    from kmod.errors import InfraError
    proj = project(tmp_path)
    m = Manifest(proj.dist / "manifest.json")
    tgts = boot.targets_from_manifest(proj, m, archmod.select("arm64"), pinsmod.select("6.1"), proj.select(None))

    def broken(*a, **k):
        raise InfraError("cannot download the kernel")
    monkeypatch.setattr(boot, "boot_one", broken)
    monkeypatch.setattr(qemu, "require_binary", lambda a: "/bin/true")
    out = boot.boot_all(tgts, proj.dist, quiet=True, manifest=m, junit_path=proj.dist / "j.xml")
    assert out.exit_code == 1 and list(out.errors) == ["a/bookworm-6.1/arm64"]
    assert m.cell("a/bookworm-6.1/arm64")["boot"]["verdict"] == "error"
    assert 'errors="1"' in (proj.dist / "j.xml").read_text()
