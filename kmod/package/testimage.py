"""Debian containers with dkms, for proving the packages the way a user's VM would install them.

Derived FROM a toolchain image (the pinned headers are already in it) by one networked container
run that installs dkms from the suite's archives, then committed and tagged by a hash of its inputs
so later runs reuse it. `packages` adds Debian packages (rpm, to install the .rpm's scriptlets for real); `extra_headers` adds a second kernel series from the same suite (e.g. the
6.12 backport on bookworm) to prove one package builds for two kernels."""
import hashlib
import json
import re

from .. import pins
from .. import run as runmod
from ..archive import mirror as mirrormod
from ..build import images
from ..errors import InfraError

REPO = "kmod-dkms"
RECIPE_VERSION = "1"

SCRIPT = r"""set -eu
export DEBIAN_FRONTEND=noninteractive
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
cat > /etc/apt/sources.list.d/debian.sources <<'SOURCES'
{sources}SOURCES
apt-get update -q
apt-get install -y -q --no-install-recommends dkms kmod{packages}
extra="{extra}"
if [ -n "$extra" ]; then
    pkg=$(apt-cache search --names-only "$extra" | cut -d' ' -f1 | sort -V | tail -n 1)
    test -n "$pkg"
    apt-get install -y -q --no-install-recommends "$pkg"
    echo "KMOD-EXTRA: $pkg"
fi
apt-get clean
rm -rf /var/lib/apt/lists/*
dkms --version
"""


def script(pin: pins.Pin, extra_headers: str = "", packages: tuple[str, ...] = ()) -> str:
    for p in packages:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p):
            raise ValueError(f"not a Debian package name: {p!r}")
    return SCRIPT.format(sources=mirrormod.configured().sources_deb822(pin.suite), extra=extra_headers,
                         packages="".join(" " + p for p in packages))


def tag(pin: pins.Pin, extra_headers: str = "", packages: tuple[str, ...] = ()) -> str:
    base = images.tag(pin)
    doc = {"recipe": RECIPE_VERSION, "base": base, "script": script(pin, extra_headers, packages)}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
    return f"{REPO}:{pin.name}-{digest}"


def ensure(pin: pins.Pin, extra_headers: str = "", packages: tuple[str, ...] = (), client=None,
           log=lambda s: None) -> str:
    from ..build.runtime import docker as rtdocker
    client = client or rtdocker.client()
    name = tag(pin, extra_headers, packages)
    if images.find(client, name):
        return name
    base = images.ensure(pins.require_locked(pin), log=log, client=client)
    container = client.containers.create(base, ["sh", "-c", script(pin, extra_headers, packages)], detach=True,
                                         network_mode="bridge", **runmod.container("dkms-image"))
    rtdocker.track(container)
    try:
        container.start()
        rc = container.wait(timeout=1200).get("StatusCode", 1)
        output = container.logs().decode("utf-8", "replace").strip().splitlines()
        if rc != 0:
            raise InfraError(f"building dkms image {name} failed (exit {rc}): {' | '.join(output[-3:])}",
                             "check the mirror (the host's apt configuration) and retry")
        extra = next((ln.split(": ", 1)[1] for ln in output if ln.startswith("KMOD-EXTRA: ")), "")
        repo, _, t = name.partition(":")
        container.commit(repository=repo, tag=t, conf={"Labels": {"kmod.pin": pin.name, "kmod.extra": extra},
                                                       "Cmd": ["/bin/sh"], "WorkingDir": "/"})
        log(f"built {name}")
        return name
    finally:
        rtdocker.remove(container)
