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
        assert re.match(pin.abi_regex, result["bookworm-6.1"])
        entry = locked["bookworm-6.1"]
        roles = sorted((p["role"], p["for_arch"]) for p in entry["packages"])
        assert ("headers", "arm64") in roles and ("image", "x86_64") in roles and ("kbuild", "") in roles
        assert set(locked) == {"bullseye-5.10", "bookworm-6.1", "trixie-6.12"}  # other pins kept as they were
    finally:
        pins.all_pins.cache_clear()


def test_toolchains_lists_pins_and_image_state(docker_client):
    proc = run_cli("toolchains", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["kernel"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(pins.names())
    for r in rows.values():
        assert r["image_built"] is True and r["image"].startswith("kmod-toolchain:")
