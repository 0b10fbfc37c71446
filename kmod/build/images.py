"""Toolchain images: one per pinned kernel, tagged by a hash of everything that goes into it.

Every package in an image is locked (toolchains/kernels.lock: the kernel packages, and the base system
and compilers, roles "base" and "toolchain"): the base is debootstrapped from its locked .debs and
`docker import`ed, the toolchain installed by apt from a local archive of its locked .debs with the
network off, and the image is refused unless dpkg lists exactly the locked set. Each .deb is
sha256-checked against the lock whenever it is used (kmod.archive.fetch).
"""
import hashlib
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from .. import arch as archmod
from .. import atomic, paths, render
from .. import run as runmod
from ..archive import fetch
from ..errors import InfraError, UserError
from ..pins import Pin, require_locked
from .runtime import Mount

REPO = "kmod-toolchain"
BASE_REPO = "kmod-base"
RECIPE_VERSION = "2"  # bump when the way images are made changes in a way the inputs do not show
# (2: no VOLUME in the image config, which gave every build container an anonymous volume)


def build_arch() -> str:
    return archmod.host_debian_arch()


def locked_kernels(pin: Pin) -> list[tuple[archmod.Arch, str]]:
    """(arch, flavour) of every kernel the lock has for `pin`: the image holds the headers of each."""
    return [(archmod.get(a), f) for a, flavours in pin.kernels.items() for f in flavours]


def install_script(pin: Pin) -> str:
    install = [f"{p.name}={p.version}" for p in image_debs(pin) if p.role != "headers" or p.arch == build_arch()]
    foreign = [p.basename for p in image_debs(pin) if p.role == "headers" and p.arch != build_arch()]
    return render.render_text("toolchain/install.sh.j2", pin=pin, install=install, foreign_debs=foreign,
                              kdirs=[pin.kdir(a, f) for a, f in locked_kernels(pin)])


IMAGE_ROLES = ("headers-common", "kbuild", "headers")  # the locked kernel packages an image is made of
TOOL_ROLES = ("base", "toolchain")                    # and the locked system and compilers it runs them with


def image_debs(pin: Pin):
    """The locked packages installed in the image, each file once (the arches and flavours of one ABI share
    its kbuild and common headers)."""
    return list({p.sha256: p for p in pin.packages if p.role in IMAGE_ROLES + ("toolchain",)}.values())


def base_debs(pin: Pin):
    return [p for p in pin.packages if p.role == "base"]


def installed(pin: Pin) -> list[str]:
    """`name:arch=version` of every package dpkg must list in the pin's image, sorted: the base, the
    toolchain and the natively installed kernel packages, exactly as locked."""
    return sorted({f"{p.name}:{p.arch}={p.version}" for p in pin.packages
                   if p.role in TOOL_ROLES or (p.role in IMAGE_ROLES and p.arch in (build_arch(), "all"))})


def require_tools_locked(pin: Pin) -> None:
    if not base_debs(pin) or not any(p.role == "toolchain" for p in pin.packages):
        raise UserError(f"the lock has no toolchain packages for {pin.name} (written by an older kmod)",
                        "run `invoke toolchains --update` and review the diff")


def inputs_hash(pin: Pin) -> str:
    """Everything that decides the image's content; the tag carries it, so a change means a new image."""
    doc = {"recipe": RECIPE_VERSION, "pin": pin.name, "suite": pin.suite, "kernels": pin.kernels,
           "debs": sorted(p.sha256 for p in image_debs(pin)), "base": base_hash(pin),
           "script": install_script(pin), "build_arch": build_arch()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def base_hash(pin: Pin) -> str:
    return hashlib.sha256(json.dumps({"recipe": RECIPE_VERSION, "suite": pin.suite,
                                      "debs": sorted(p.sha256 for p in base_debs(pin))}).encode()).hexdigest()


def tag(pin: Pin) -> str:
    require_locked(pin)
    return f"{REPO}:{pin.name}-{inputs_hash(pin)[:12]}"


def find(client, name: str):
    import docker.errors
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def fetch_all(pkgs, dest: Path, log) -> None:
    """The locked .debs into `dest`/pool, each sha256-checked (kmod.archive.fetch), a few at a time."""
    from concurrent.futures import ThreadPoolExecutor
    (dest / "pool").mkdir(parents=True, exist_ok=True)
    log(f"fetching {len(pkgs)} locked packages")

    def one(p):
        shutil.copyfile(fetch.fetch(p), dest / "pool" / p.basename)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, pkgs))


def local_archive(pkgs, root: Path, suite: str, priority: str = "") -> None:
    """Make `root` an archive of exactly `pkgs` (fetched into root/pool): Packages from each .deb's own
    control file, a Release with their hashes. Unsigned: every .deb was checked against the lock, which
    was made from signed indexes. debootstrap and apt read it with network off. `priority` overrides
    every package's (for the base: debootstrap then installs exactly the locked set, all of it first)."""
    from debian.debfile import DebFile
    stanzas = []
    for p in sorted(pkgs, key=lambda p: p.name):
        control = DebFile(str(root / "pool" / p.basename)).debcontrol()
        control["Filename"], control["Size"], control["SHA256"] = f"pool/{p.basename}", str(p.size), p.sha256
        if priority:
            control["Priority"] = priority
        stanzas.append(control.dump())
    text = "".join(s.rstrip("\n") + "\n\n" for s in stanzas).encode()
    index = f"main/binary-{build_arch()}/Packages"
    atomic.write_bytes(root / "dists" / suite / index, text)
    atomic.write_text(root / "dists" / suite / "Release",
                      f"Suite: {suite}\nCodename: {suite}\nArchitectures: {build_arch()} all\nComponents: main\n"
                      f"SHA256:\n {hashlib.sha256(text).hexdigest()} {len(text)} {index}\n")


def base_image(client, pin: Pin, log) -> str:
    """The pin's base system, debootstrapped from its locked .debs alone (never a registry's image, which
    no lock covers), tagged by their hashes."""
    name = f"{BASE_REPO}:{pin.suite}-{base_hash(pin)[:12]}"
    if find(client, name):
        return name
    if not shutil.which("debootstrap"):
        raise InfraError(f"cannot make a {pin.suite} base image: debootstrap is missing", "apt-get install debootstrap")
    if os.geteuid() != 0:
        raise InfraError(f"cannot make a {pin.suite} base image: debootstrap needs root",
                         "run `sudo invoke toolchains --build` once")
    work = runmod.scratch_dir(f"bootstrap-{pin.suite}", paths.cache_dir())
    try:
        archive = work / "archive"
        fetch_all(base_debs(pin), archive, log)
        local_archive(base_debs(pin), archive, pin.suite, priority="required")
        root = work / "root"
        log(f"bootstrapping {pin.suite} from {len(base_debs(pin))} locked packages")
        proc = subprocess.run(["debootstrap", "--variant=minbase", "--no-check-gpg", pin.suite, str(root),
                               f"file://{archive}"], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise InfraError(f"debootstrap {pin.suite} from the locked packages failed: {' | '.join(tail)}",
                             "run `invoke toolchains --update` (the base set may be incomplete)")
        (root / "etc/apt/sources.list").unlink(missing_ok=True)  # it named the local archive
        tarball = work / "root.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repo, _, t = name.partition(":")
        client.api.import_image_from_file(str(tarball), repository=repo, tag=t)
        log(f"imported {name}")
        return name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure(pin: Pin, log=lambda s: None, client=None) -> str:
    """The toolchain image tag for `pin`, built if missing from the locked .debs alone, network off."""
    from .runtime import docker as rtdocker
    client = client or rtdocker.client()
    name = tag(pin)
    if find(client, name):
        return name
    require_tools_locked(pin)
    base = base_image(client, pin, log)
    staging = runmod.scratch_dir(f"image-{pin.name}", paths.cache_dir())
    os.chmod(staging, 0o755)
    container = None
    try:
        fetch_all(image_debs(pin), staging, log)
        local_archive([p for p in image_debs(pin) if p.arch in (build_arch(), "all")], staging, pin.suite)
        (staging / "install.sh").write_text(install_script(pin))
        container = client.containers.create(base, ["sh", "/kmod/debs/install.sh"], detach=True,
                                             network_mode="none",
                                             mounts=rtdocker.bind_mounts([Mount(staging, "/kmod/debs")]),
                                             **runmod.container("image"))
        rtdocker.track(container)
        container.start()
        compiler, lines, got = "", [], []
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode("utf-8", "replace").splitlines():
                lines.append(line)
                if line.startswith("KMOD-COMPILER: "):
                    compiler = line.split(": ", 1)[1]
                elif line.startswith("KMOD-PACKAGE: "):
                    got.append(line.split(": ", 1)[1])
                    continue
                log(line)
        rc = container.wait().get("StatusCode", 1)
        if rc != 0:
            raise InfraError(f"building toolchain image {name} failed (exit {rc}): {' | '.join(lines[-3:])}",
                             "check the lock, then run `invoke toolchains --build` again")
        differ = tools_differ(pin, got)
        if differ:
            raise InfraError(f"toolchain image {name} does not hold exactly the locked packages ({differ})",
                             "run `invoke toolchains --update` and review the diff")
        repo, _, t = name.partition(":")
        container.commit(repository=repo, tag=t, conf={
            "Labels": {"kmod.pin": pin.name, "kmod.abi": ",".join(pin.abis), "kmod.inputs": inputs_hash(pin),
                       "kmod.compiler": compiler},
            "Cmd": ["/bin/sh"], "WorkingDir": "/"})
        log(f"built {name}")
        return name
    finally:
        if container is not None:
            rtdocker.remove(container)
        shutil.rmtree(staging, ignore_errors=True)


CHECK_EXIT = 97  # templates/build/check-image.sh: the image does not hold the locked packages


@cache
def check_script() -> str:
    return (paths.templates() / "build" / "check-image.sh").read_text()


def refused_image(pin: Pin, image: str, exit_code: int, output: str) -> str:
    """The one line that refuses `image` when the build's first step found it differs from the lock."""
    if exit_code != CHECK_EXIT:
        return ""
    got = [ln.split(": ", 1)[1] for ln in output.splitlines() if ln.startswith("KMOD-INSTALLED: ")]
    differ = tools_differ(pin, got) if got else ""
    return f"refusing image {image}: its packages differ from the lock ({differ})" if differ else ""


def tool_versions(pin: Pin, arch) -> dict[str, str]:
    """The locked version of each tool a cell of `arch` builds with (recorded per cell in the manifest;
    the build's first step proved the image holds exactly these)."""
    from ..archive import toolchain
    names = [*toolchain.tool_names(pin, build_arch(), arch), *(p.name for p in pin.packages if p.role == "kbuild")]
    locked = {p.name: p.version for p in pin.packages if p.role in TOOL_ROLES + ("kbuild",)}
    return {n: locked[n] for n in names if n in locked}


def tools_differ(pin: Pin, got: list[str]) -> str:
    """'' when `got` (name:arch=version lines) is exactly the locked set, else what differs, briefly."""
    want, have = set(installed(pin)), set(got)
    if want == have:
        return ""
    locked = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in want}
    present = {h.split("=", 1)[0]: h.split("=", 1)[1] for h in have}
    diffs = [f"{n} is {present.get(n, 'missing')}, locked {locked[n]}" for n in sorted(locked) if present.get(n) != locked[n]]
    diffs += [f"{n} {present[n]} is not locked" for n in sorted(set(present) - set(locked))]
    return "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")


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
