"""Toolchain images: one per pinned kernel, tagged by a hash of everything that goes into it.

Base images come from `debian:SUITE` when a registry answers, else from debootstrap + `docker import`
(air-gapped hosts, like ours). The mirror is the host's (kmod.archive.mirror), never a hard-coded host.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import arch as archmod
from .. import paths, render
from ..archive import fetch
from ..archive import mirror as mirrormod
from ..errors import InfraError
from ..pins import Pin, require_locked

REPO = "kmod-toolchain"
BASE_REPO = "kmod-base"
RECIPE_VERSION = "1"  # bump when the way images are made changes in a way the inputs do not show


def build_arch() -> str:
    return archmod.host_debian_arch()


def install_script(pin: Pin) -> str:
    arches = [archmod.get(a) for a in pin.arches]
    native, foreign = [], []
    for p in pin.packages:
        if p.role in ("headers-common", "kbuild"):
            native.append(p.basename)
        elif p.role == "headers":
            (native if p.arch == build_arch() else foreign).append(p.basename)
    return render.render_text("toolchain/install.sh.j2", pin=pin, native_debs=native, foreign_debs=foreign,
                              cross=[a for a in arches if a.debian_arch != build_arch()],
                              kdirs=[pin.kdir(a) for a in arches])


IMAGE_ROLES = ("headers-common", "kbuild", "headers")  # the locked packages an image is made of


def image_debs(pin: Pin):
    return [p for p in pin.packages if p.role in IMAGE_ROLES]


def inputs_hash(pin: Pin) -> str:
    """Everything that decides the image's content; the tag carries it, so a change means a new image."""
    doc = {"recipe": RECIPE_VERSION, "pin": pin.name, "suite": pin.suite, "abi": pin.abi,
           "debs": sorted(p.sha256 for p in image_debs(pin)), "script": install_script(pin),
           "build_arch": build_arch()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def tag(pin: Pin) -> str:
    require_locked(pin)
    return f"{REPO}:{pin.name}-{inputs_hash(pin)[:12]}"


def find(client, name: str):
    import docker.errors
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def base_image(client, suite: str, log) -> str:
    name = f"{BASE_REPO}:{suite}"
    if find(client, name):
        return name
    import docker.errors
    try:
        log(f"pulling debian:{suite}")
        img = client.images.pull("debian", tag=suite)
        img.tag(BASE_REPO, suite)
        return name
    except docker.errors.DockerException:
        log(f"no registry answers; bootstrapping {suite} from the host's mirror")
    bootstrap(client, suite, name, log)
    return name


def bootstrap(client, suite: str, name: str, log) -> None:
    if not shutil.which("debootstrap"):
        raise InfraError(f"cannot make a {suite} base image: debootstrap is missing", "apt-get install debootstrap")
    if os.geteuid() != 0:
        raise InfraError(f"cannot make a {suite} base image: debootstrap needs root",
                         "run `sudo invoke toolchains --build` once")
    mirror = mirrormod.configured()
    work = Path(tempfile.mkdtemp(prefix=f"bootstrap-{suite}-", dir=paths.cache_dir()))
    try:
        root = work / "root"
        proc = subprocess.run(["debootstrap", "--variant=minbase", suite, str(root), mirror.main],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise InfraError(f"debootstrap {suite} failed: {' | '.join(tail)}", "check KMOD_MIRROR and the network")
        tarball = work / "root.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repo, _, t = name.partition(":")
        client.api.import_image_from_file(str(tarball), repository=repo, tag=t)
        log(f"imported {name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure(pin: Pin, log=lambda s: None, client=None) -> str:
    """The toolchain image tag for `pin`, built if missing."""
    from .runtime import docker as rtdocker
    client = client or rtdocker.client()
    name = tag(pin)
    if find(client, name):
        return name
    base = base_image(client, pin.suite, log)
    staging = Path(tempfile.mkdtemp(prefix=f"image-{pin.name}-", dir=paths.cache_dir()))
    container = None
    try:
        for p in image_debs(pin):
            log(f"fetching {p.basename}")
            shutil.copyfile(fetch.fetch(p), staging / p.basename)
        (staging / "debian.sources").write_text(mirrormod.configured().sources_deb822(pin.suite))
        (staging / "install.sh").write_text(install_script(pin))
        container = client.containers.create(base, ["sh", "/kmod/debs/install.sh"], detach=True,
                                             volumes={str(staging): {"bind": "/kmod/debs", "mode": "ro"}})
        rtdocker.track(container)
        container.start()
        compiler, lines = "", []
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode("utf-8", "replace").splitlines():
                lines.append(line)
                if line.startswith("KMOD-COMPILER: "):
                    compiler = line.split(": ", 1)[1]
                log(line)
        rc = container.wait().get("StatusCode", 1)
        if rc != 0:
            raise InfraError(f"building toolchain image {name} failed (exit {rc}): {' | '.join(lines[-3:])}",
                             "check the mirror, then run `invoke toolchains --build` again")
        repo, _, t = name.partition(":")
        container.commit(repository=repo, tag=t, conf={
            "Labels": {"kmod.pin": pin.name, "kmod.abi": pin.abi, "kmod.inputs": inputs_hash(pin),
                       "kmod.compiler": compiler},
            "Cmd": ["/bin/sh"], "WorkingDir": "/"})
        log(f"built {name}")
        return name
    finally:
        if container is not None:
            rtdocker.remove(container)
        shutil.rmtree(staging, ignore_errors=True)


def ensure_all(client, pins: list[Pin], quiet: bool = False) -> dict[str, dict]:
    """Make sure the images of `pins` exist, building the missing ones in parallel with progress;
    returns image tag -> {"id": ..., labels...}."""
    from ..parallel import parallel
    from ..progress import Progress
    needed = {p.name: p for p in pins}
    missing = [p for p in needed.values() if not find(client, tag(p))]
    if missing:
        with Progress("toolchain images", [p.name for p in missing], quiet) as prog:
            def one(p: Pin):
                prog.update(p.name, "running")
                ensure(p, log=lambda s: prog.note(p.name, s), client=client)
                prog.update(p.name, "ok", tag(p))
            parallel(one, missing, len(missing))
    out = {}
    for p in needed.values():
        img = find(client, tag(p))
        out[tag(p)] = {"id": img.id, **(img.labels or {})}
    return out
