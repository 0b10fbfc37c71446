"""20 SSH endpoints at once (dropbear in containers on loopback ports, tests/preflight/fleet.py) plus one
dead port: every host read in parallel within the bound of --jobs, each its own row, the dead one an
error row, the summary table at the end; the containers are this run's only (by label) and removed."""
import json
import platform
import time

import pytest

from tests.preflight import fleet as fleetmod
from tests.preflight.conftest import invoke
from tests.preflight.vm import free_port

pytestmark = pytest.mark.integration
N = 20


@pytest.fixture(scope="module")
def fleet(docker_client, tmp_path_factory):
    f = fleetmod.start(docker_client, N, tmp_path_factory.mktemp("fleet"))
    yield f
    f.stop()
    assert not docker_client.containers.list(all=True, filters={"label": f"{fleetmod.LABEL}={f.run_id}"})


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet-project")
    (root / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
    return root


def test_twenty_hosts_at_once_and_a_dead_one(fleet, spec):
    config = fleet.ssh_config()
    dead = f"root@127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = invoke("preflight", "--hosts", str(config), "--host", dead, "--jobs", str(N + 1), "--format", "json",
                  "--timeout", "60", cwd=spec)
    wall = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr        # one host could not be read
    hosts = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert len(hosts) == N + 1
    assert "connection refused" in hosts[dead]["error"]
    nodes = [h for name, h in hosts.items() if name.startswith("node")]
    assert len(nodes) == N and all(not h["error"] for h in nodes)
    # all of them are this machine's kernel, seen through each container's /proc
    assert {h["facts"]["release"] for h in nodes} == {platform.release()}
    assert all(h["modules"][0]["verdict"] in ("pass", "warn", "fail") and h["modules"][0]["reason"] for h in nodes)
    assert wall < 120, f"{N} hosts took {wall:.0f}s"
    assert "21 host(s):" in proc.stderr and "1 not read" in proc.stderr


def test_jobs_bound_the_hosts_at_once(fleet, spec):
    """--jobs 4: never more than 4 sessions at the same moment (each host's row says when it ran)."""
    proc = invoke("preflight", "--hosts", str(fleet.ssh_config()), "--jobs", "4", "--format", "json", cwd=spec)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert len(hosts) == N and all(not h["error"] for h in hosts)
    spans = [(h["started"], h["started"] + h["seconds"]) for h in hosts]
    # the hosts running just after each host's start. A row's start and length are each rounded to the
    # ms, so a row's end and the start of the next host on the same worker can cross by up to about a
    # ms: a host counts as running at that instant when it is so by more than that
    eps = 0.002
    most = max(sum(1 for a, b in spans if a <= t + eps < b - eps) for t, _ in spans)
    assert 2 <= most <= 4
