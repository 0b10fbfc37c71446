"""The reaper removes the containers of dead runs and nothing else: not a container that merely
inherited run labels from the image it was made of (images committed from kmod's containers carry
their builder's labels), and not one of a live run."""
import pytest

from kmod import run as runmod
from kmod.build import images
from kmod.build.runtime import docker as rtdocker

pytestmark = pytest.mark.integration


def _dead_lock(tmp_path) -> str:
    path = tmp_path / "dead.lock"
    path.write_text("0\n")  # a liveness file nobody holds: its run is gone
    return str(path)


def test_only_a_dead_runs_own_containers_are_reaped(docker_client, tmp_path):
    # this kmod's image of a pinned kernel (not whichever kmod-toolchain image comes first: an older
    # kmod's, e.g. one a benchmark against an old checkout made, carries no run labels)
    from kmod import pins
    image = images.tag(pins.get("bookworm-6.1"))
    assert images.find(docker_client, image), f"no toolchain image {image} (scripts/setup builds them)"
    dead = {runmod.LABEL: "19700101T000000-1-dead00", runmod.LOCK_LABEL: _dead_lock(tmp_path),
            runmod.HOST_LABEL: runmod.HOST}
    made = []
    try:
        # what `docker run IMAGE` (or a test) makes of a toolchain image: the builder's labels, inherited
        inherited = docker_client.containers.create(image, ["true"], network_mode="none")
        # a container the dead run made itself: its name says so
        own = docker_client.containers.create(image, ["true"], network_mode="none", labels={"kmod.role": "build", **dead},
                                              name=f"kmod-{dead[runmod.LABEL]}-build-1")
        # one of this (live) run
        live = docker_client.containers.create(image, ["true"], network_mode="none", **runmod.container("build"))
        made = [inherited, own, live]
        assert inherited.labels.get(runmod.LOCK_LABEL), "the image no longer carries run labels: test is moot"
        rtdocker._REAPED.clear()
        gone = rtdocker.reap(docker_client)
        assert own.id in gone
        assert inherited.id not in gone and live.id not in gone
        for c in (inherited, live):
            c.reload()  # still there
    finally:
        for c in made:
            rtdocker.remove(c)
