"""The manifest's records -> one state per stage, the first reason and the log to open."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmod.report import cells, status
from tests import report_matrix

# What each cell of the known matrix must show (build, lint, package, boot), and where its reason and
# log come from.
EXPECTED = {
    "clone_probe/bookworm-6.1/x86_64": ("ok", "ok", "ok", "ok", "warning"),   # vm-a pass, vm-b warn
    "clone_probe/bookworm-6.1/arm64": ("ok", "warning", "ok", "failed", "failed"),
    "clone_probe/trixie-6.12/x86_64": ("failed", "-", "ok", "-", "-"),
    "clone_probe/bullseye-5.10/x86_64": ("failed", "failed", "ok", "-", "-"),
    "seed_kprobe/bookworm-6.1/x86_64": ("interrupted", "-", "failed", "-", "-"),
    "seed_kprobe/bookworm-6.1/rt/arm64": ("excluded", "-", "-", "-", "-"),
    "seed_kprobe/trixie-6.12/arm64": ("running", "-", "failed", "-", "-"),  # pending while its run is running
}


@pytest.fixture
def manifest(tmp_path):
    return json.loads(report_matrix.write(tmp_path).read_text())


def test_states_per_stage(manifest):
    rows = {r.id: r for r in cells.rows(manifest)}
    assert set(rows) == set(EXPECTED)
    for cid, states in EXPECTED.items():
        assert tuple(rows[cid].states[s] for s in cells.STAGES) == states, cid


def test_pending_is_not_running_once_the_run_ended(manifest):
    manifest["runs"][-1]["status"] = "interrupted"
    row = next(r for r in cells.rows(manifest) if r.id == "seed_kprobe/trixie-6.12/arm64")
    assert row.states["build"] == "pending"


def test_dimensions_come_from_the_records_not_the_id(manifest):
    row = next(r for r in cells.rows(manifest) if r.id == "seed_kprobe/bookworm-6.1/rt/arm64")
    assert (row.module, row.kernel, row.flavour, row.arch) == ("seed_kprobe", "bookworm-6.1", "rt", "arm64")
    manifest["cells"]["renamed"] = dict(manifest["cells"]["clone_probe/bookworm-6.1/x86_64"])
    row = next(r for r in cells.rows(manifest) if r.id == "renamed")
    assert (row.module, row.kernel, row.arch) == ("clone_probe", "bookworm-6.1", "x86_64")


def test_first_reason_and_log_to_open(manifest):
    rows = {r.id: r for r in cells.rows(manifest)}
    diag = report_matrix.CELLS["clone_probe/trixie-6.12/x86_64"][3]["diagnosis"][0]
    assert rows["clone_probe/trixie-6.12/x86_64"].reason == diag["advice"]
    assert rows["clone_probe/trixie-6.12/x86_64"].log == "clone_probe/trixie-6.12/x86_64/build.log"
    assert rows["clone_probe/bullseye-5.10/x86_64"].reason.startswith("lint fpu-unguarded: ")
    boot = rows["clone_probe/bookworm-6.1/arm64"]
    assert boot.reason == "boot hits: probe kernel_clone+0x0 never fired"
    assert boot.log == "clone_probe/bookworm-6.1/arm64/boot/console.log"
    assert rows["seed_kprobe/bookworm-6.1/rt/arm64"].reason == report_matrix.CELLS[
        "seed_kprobe/bookworm-6.1/rt/arm64"][3]["reason"]
    assert rows["seed_kprobe/trixie-6.12/arm64"].reason.startswith("package: lintian rejects")
    assert rows["clone_probe/bookworm-6.1/x86_64"].reason == "preflight vm-b: " + report_matrix.PREFLIGHT[
        "vm-b"]["modules"][0]["reason"]


def test_kernels_sort_by_series_not_by_name(manifest):
    kernels = [r.kernel for r in cells.rows(manifest) if r.module == "clone_probe"]
    assert kernels == ["bullseye-5.10", "bookworm-6.1", "bookworm-6.1", "trixie-6.12"]


def test_counts_per_stage(manifest):
    totals = cells.counts(cells.rows(manifest))
    for i, stage in enumerate(cells.STAGES):
        want = {}
        for states in EXPECTED.values():
            want[states[i]] = want.get(states[i], 0) + 1
        assert totals[stage] == want
        assert list(totals[stage]) == sorted(want, key=cells.STATES.index)  # worst first


@pytest.mark.parametrize("damage", [
    {"cells": []}, {"cells": {"a/b/c": "text"}}, {"cells": {"a/b/c": {"lint": "x", "boot": 3, "diagnosis": 5}}},
    {"cells": {}, "runs": "no"}, {"cells": {}, "packages": []},
    {"cells": {"a/b/c": {"result": 3, "boot": {"verdict": ["x"]}, "version": 1}}, "packages": {"a": {"version": 1, "result": {}}}},
])
def test_damaged_records_do_not_raise(damage):
    rows = cells.rows(damage)
    status.as_json(rows)
    from kmod.report import html
    html.page(damage, "t")


def test_json_for_scripts(manifest):
    out = json.loads(status.as_json(cells.rows(manifest)))
    by_id = {c["id"]: c for c in out["cells"]}
    for cid, states in EXPECTED.items():
        assert tuple(by_id[cid][s] for s in cells.STAGES) == states
        assert set(by_id[cid]) >= {"module", "kernel", "flavour", "arch", "reason", "log"}
    assert out["counts"]["build"]["failed"] == 2


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
KEYS = ["module", "version", "kernel", "flavour", "arch", "result", "lint", "boot", "diagnosis", "errors", "seconds",
        "log", "ko", "ko_sha256", "image", "compiler", "release", "reason", "exit_code"]
BOOT_KEYS = ["verdict", "step", "reason", "excerpt", "hits", "kprobes", "seconds", "console", "accel", "at"]


@settings(max_examples=40, deadline=None)
@given(rec=st.dictionaries(st.sampled_from(KEYS), JSON),
       boot=st.dictionaries(st.sampled_from(BOOT_KEYS), JSON),
       pkg=st.dictionaries(st.sampled_from(["version", "result", "reason", "formats", "at"]), JSON),
       runs=JSON)
def test_any_record_of_any_shape_renders(rec, boot, pkg, runs):
    """Whatever another kmod version (or a damaged file) wrote, status and the page still render."""
    from kmod.report import html
    rec = {**rec, "boot": boot} if boot else rec
    manifest = {"cells": {"m/k/a": rec}, "packages": {"m": pkg, str(rec.get("module")): pkg}, "runs": runs}
    status.as_json(cells.rows(manifest))
    html.page(manifest, "t")


def test_preflight_hosts_and_their_cells(manifest):
    hosts = {h["host"]: h for h in cells.preflight_hosts(manifest)}
    assert sorted(hosts) == sorted(report_matrix.PREFLIGHT)
    assert {h: x["state"] for h, x in hosts.items()} == {"vm-a": "ok", "vm-b": "warning", "vm-arm": "failed",
                                                        "vm-down": "error"}
    assert hosts["vm-down"]["error"].startswith("cannot connect")
    row = next(r for r in cells.rows(manifest) if r.id == "clone_probe/bookworm-6.1/x86_64")
    assert sorted(h for h, _, _ in row.preflight) == ["vm-a", "vm-b"]
    assert [h["host"] for h in cells.hosts_of(cells.preflight_hosts(manifest), ["seed-kprobe"])] == ["vm-b", "vm-down"]


@pytest.mark.parametrize("kw,want", [
    ({"modules": ["seed_kprobe"]}, {c for c in EXPECTED if c.startswith("seed_kprobe/")}),
    ({"arches": {"arm64"}}, {c for c in EXPECTED if c.endswith("/arm64")}),
    ({"kernels": ["6.1"]}, {c for c in EXPECTED if "/bookworm-6.1/" in c}),
    ({"states": [(None, "failed")]}, {c for c, s in EXPECTED.items() if "failed" in s}),
    ({"states": [("boot", "failed"), ("preflight", "warning")]},
     {c for c, s in EXPECTED.items() if s[3] == "failed" or s[4] == "warning"}),
    ({"states": [("lint", "-")], "modules": ["clone_probe"]},
     {c for c, s in EXPECTED.items() if s[1] == "-" and c.startswith("clone_probe/")}),
])
def test_select(manifest, kw, want):
    assert {r.id for r in cells.select(cells.rows(manifest), **kw)} == want


def test_state_words(manifest):
    rows = cells.rows(manifest)
    assert cells.states_filter(["failed", "boot:ok", "lint:not-run"], rows) == [
        (None, "failed"), ("boot", "ok"), ("lint", "-")]
    from kmod.errors import UserError
    for bad, text in (("nope", "no state 'nope'"), ("bot:failed", "no stage 'bot'")):
        with pytest.raises(UserError, match=text):
            cells.states_filter([bad], rows)
