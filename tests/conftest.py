"""Shared test helpers. With CI=true a missing tool or engine FAILS a test; locally it skips."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, what: str) -> None:
    """Skip locally, fail in CI, when a real tool the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (scripts/setup --test installs it)", pytrace=False)
    pytest.skip(f"{what} not available")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"`{name}`")
    return path


@pytest.fixture(scope="session")
def docker_client():
    from kmod.errors import InfraError
    from kmod.build.runtime.docker import client
    try:
        return client()
    except InfraError as e:
        need(False, f"a Docker engine ({e.message})")


def run_cli(*args, cwd=ROOT, env=None, timeout=900):
    """Run the real `invoke` program the way a user does; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_program(*args, cwd, env=None, timeout=120):
    """Run the console program (`python -m kmod`, what the installed script runs) from this checkout."""
    return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


def containers_of(client, root, all=True) -> list:
    """The containers whose bind mounts lie below `root` (a test's own project): never anybody else's."""
    root = str(root)
    out = []
    for c in client.containers.list(all=all, filters={"label": "kmod.role"}):
        try:
            mounts = c.attrs.get("Mounts") or []
        except Exception:
            continue  # removed meanwhile
        if any((m.get("Source") or "").startswith(root) for m in mounts):
            out.append(c)
    return out


def volumes_of(containers) -> set[str]:
    """Names of the Docker volumes (not bind mounts) attached to `containers`."""
    return {m["Name"] for c in containers for m in (c.attrs.get("Mounts") or []) if m.get("Type") == "volume"}
