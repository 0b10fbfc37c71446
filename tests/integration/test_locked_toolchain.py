"""The compilers are locked (issue 8, item 3): an image holds exactly the locked packages, and a build
refuses an image whose tools differ from the lock, in one line."""
import json
import uuid

import pytest

from kmod import arch, pins
from kmod import spec as specmod
from kmod.build import images, matrix
from kmod.build import runtime as runtimes
from kmod.progress import Progress

pytestmark = pytest.mark.integration
PIN = "bookworm-6.1"


@pytest.fixture(scope="module")
def image(docker_client):
    pin = pins.get(PIN)
    images.ensure_all(docker_client, [pin], quiet=True)
    return pin, images.tag(pin)


def dpkg_list(docker_client, tag: str) -> list[str]:
    out = docker_client.containers.run(tag, ["sh", "-c", "dpkg-query -W -f '${db:Status-Status} ${Package}:"
                                             "${Architecture}=${Version}\\n' | sed -n 's/^installed //p'"],
                                       network_mode="none", remove=True)
    return sorted(out.decode().split())


def test_image_holds_exactly_the_locked_packages(docker_client, image):
    pin, tag = image
    assert dpkg_list(docker_client, tag) == images.installed(pin)
    gcc = next(p for p in pin.packages if p.name == pin.compiler)
    assert gcc.role == "toolchain" and f"{pin.compiler}:amd64={gcc.version}" in images.installed(pin)


def test_manifest_records_each_tool_version_per_cell(tmp_path, docker_client, image):
    pin, _ = image
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
    from tests.integration.test_build import kmod
    proc = kmod("build", "--kernel", PIN, "--arch", "arm64", "--no-lint", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cell = json.loads((tmp_path / "dist/manifest.json").read_text())["cells"][f"clone_probe/{PIN}/arm64"]
    locked = {p.name: p.version for p in pin.packages}
    for name in (pin.compiler, f"{pin.compiler}-aarch64-linux-gnu", "binutils-aarch64-linux-gnu", "make",
                 "libc6-dev"):
        assert cell["tools"][name] == locked[name]


def test_image_whose_gcc_differs_from_the_lock_is_refused(tmp_path, docker_client, image):
    pin, tag = image
    gcc = next(p for p in pin.packages if p.name == pin.compiler)
    doctored = f"kmod-test-doctored:{uuid.uuid4().hex[:12]}"
    c = docker_client.containers.run(tag, ["perl", "-0pi", "-e",
                                           rf"s/(Package: {pin.compiler}\n(?:.+\n)*?Version: )\S+/${{1}}12.2.0-99/",
                                           "/var/lib/dpkg/status"], network_mode="none", detach=True)
    try:
        assert c.wait()["StatusCode"] == 0
        c.commit(*doctored.split(":"))
        (tmp_path / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
        project = specmod.load(tmp_path / "kmod.toml")
        cell = matrix.plan(project, project.select(None), [pin], [arch.get("x86_64")])[0]
        cell.image = doctored
        rt = runtimes.get("docker")
        with Progress("test", [cell.id], quiet=True) as prog:
            rec = matrix.build_one(cell, rt, project.dist, images.build_arch(), prog)
        assert rec["result"] == "failed" and rec["ko"] is None
        assert rec["diagnosis"][0]["cause"] == "image differs from the lock"
        line = rec["errors"][0]
        assert "\n" not in line and line.startswith(f"refusing image {doctored}: its packages differ from the lock")
        assert f"{pin.compiler}:amd64 is 12.2.0-99, locked {gcc.version}" in line
        assert not (project.dist / f"clone_probe/{PIN}/x86_64/clone_probe.ko").exists()
    finally:
        c.remove(force=True)
        docker_client.images.remove(doctored, force=True)
