import json
from pathlib import Path

import pytest

from kmod import spec as specmod

SPEC = """
default = ["clone_probe"]

[[module]]
name = "clone_probe"
version = "1.2.3"
symbols = ["kernel_clone"]
record_args = 1

[[module]]
name = "arm_only"
version = "0.1~rc1"
symbols = ["do_sys_openat2"]
arches = ["arm64"]
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    return specmod.load(tmp_path / "kmod.toml")


def write_manifest(project, cells: dict) -> None:
    project.dist.mkdir(parents=True, exist_ok=True)
    (project.dist / "manifest.json").write_text(json.dumps({"format": 1, "cells": cells, "runs": []}))


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
