"""`invoke toolchains --update` against the real mirror, into a scratch copy of toolchains/."""
import json
import re
import shutil

import pytest

from kmod import paths, pins
from kmod.archive import resolve
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration


def test_update_resolves_a_downloadable_abi(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "toolchains", tmp_path / "toolchains")
    monkeypatch.setattr(paths, "toolchains", lambda: tmp_path / "toolchains")
    pins.all_pins.cache_clear()
    try:
        pin = pins.get("bookworm-6.1")
        result = resolve.update([pin], log=lambda s: None)
        locked = json.loads((tmp_path / "toolchains/kernels.lock").read_text())["pins"]
        entry = locked["bookworm-6.1"]
        assert result["bookworm-6.1"] == entry["kernels"]
        for a, f in pin.planned():
            if f.is_generic:
                assert re.match(pin.abi_regex, entry["kernels"][a.name]["generic"]), a.name
        roles = sorted((p["role"], p["for_arch"]) for p in entry["packages"])
        assert ("headers", "arm64") in roles and ("image", "x86_64") in roles and ("kbuild", "") in roles
        assert set(locked) == {"bullseye-5.10", "bookworm-6.1", "trixie-6.12"}  # other pins kept as they were
    finally:
        pins.all_pins.cache_clear()


def test_toolchains_lists_every_cell_and_image_state(docker_client):
    proc = run_cli("toolchains", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    cells = {(r["kernel"], r["flavour"], r["arch"]): r for r in rows}
    assert len(cells) == len(rows) == sum(len(p.planned()) for p in pins.all_pins().values())
    for r in rows:
        if r["state"] == "locked":
            assert r["image_built"] is True and r["image"].startswith("kmod-toolchain:")
            assert r["release"].startswith(r["abi"])
