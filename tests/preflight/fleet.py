"""Many SSH endpoints at once for the scale test and the benchmark: dropbear in Debian containers, one
per loopback port (in the host's network namespace, listening on 127.0.0.1 only). They share this machine's kernel, so they test fan-out (connections, parallelism,
timeouts, the summary), not modules. The image is derived from kmod's bookworm base image by one
networked container run, tagged by a hash of its recipe; every container carries the label
LABEL=<run id> and is removed by the run that started it, and only those."""
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kmod import pins
from kmod.archive import mirror as mirrormod
from kmod.build import images

REPO = "kmod-preflight-sshd"
PIN = "bookworm-6.1"      # whose locked base system the image starts from
LABEL = "kmod.test.preflight-fleet"
RECIPE = """set -eu
export DEBIAN_FRONTEND=noninteractive
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
cat > /etc/apt/sources.list.d/debian.sources <<'SOURCES'
{sources}SOURCES
apt-get update -q
apt-get install -y -q --no-install-recommends dropbear-bin openssh-sftp-server kmod procps
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p /root/.ssh /etc/dropbear
chmod 700 /root/.ssh
"""


def recipe() -> str:
    return RECIPE.format(sources=mirrormod.configured().sources_deb822(pins.get(PIN).suite))


def image(client, log=lambda s: None) -> str:
    base = images.base_image(client, pins.get(PIN), log)
    digest = hashlib.sha256((recipe() + client.images.get(base).id).encode()).hexdigest()[:12]
    name = f"{REPO}:{digest}"
    if images.find(client, name):
        return name
    c = client.containers.create(base, ["sh", "-c", recipe()], network_mode="bridge")
    try:
        c.start()
        rc = c.wait(timeout=900).get("StatusCode", 1)
        if rc != 0:
            raise RuntimeError(f"building {name} failed: {c.logs().decode(errors='replace')[-500:]}")
        repo, _, tag = name.partition(":")
        c.commit(repository=repo, tag=tag, conf={"Cmd": ["/usr/sbin/dropbear", "-F", "-E", "-R", "-s", "-p", "22"]})
        return name
    finally:
        c.remove(force=True)


def client_key(folder: Path) -> tuple[Path, Path]:
    """An ed25519 key pair: (private key file, authorized_keys file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    private = folder / "id_ed25519"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    auth = folder / "authorized_keys"
    auth.write_text(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH).decode() + "\n")
    auth.chmod(0o600)
    return private, auth


@dataclass
class Fleet:
    folder: Path
    key: Path
    ports: list[int] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    containers: list = field(default_factory=list)

    def ssh_config(self, prefix: str = "node") -> Path:
        """One Host entry per container: node01..nodeNN."""
        path = self.folder / "fleet.ssh_config"
        path.write_text("".join(f"Host {prefix}{i:02d}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
                                f"  IdentityFile {self.key}\n" for i, port in enumerate(self.ports, 1)))
        return path

    def stop(self) -> None:
        for c in self.containers:
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.containers.clear()


def start(client, n: int, folder: Path, timeout: float = 120.0) -> Fleet:
    """n containers, each with dropbear on its own 127.0.0.1 port; returns when all answer SSH."""
    from tests.preflight.vm import free_port, ssh_banner
    name = image(client)
    key, auth = client_key(folder)
    fleet = Fleet(folder, key)
    try:
        for i in range(n):
            # The host's network, dropbear on its own loopback port: no docker-proxy between the client
            # and each server, which on 2 cores costs more than the SSH itself.
            port = free_port()
            c = client.containers.run(
                name, ["/usr/sbin/dropbear", "-F", "-E", "-R", "-s", "-p", f"127.0.0.1:{port}"], detach=True,
                name=f"kmod-preflight-{fleet.run_id}-{i:02d}", labels={LABEL: fleet.run_id}, network_mode="host",
                volumes={str(auth): {"bind": "/root/.ssh/authorized_keys", "mode": "ro"}})
            fleet.containers.append(c)
            fleet.ports.append(port)
        deadline = time.monotonic() + timeout
        pending = list(fleet.ports)
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if not ssh_banner(p, 1.0).startswith(b"SSH-")]
            if pending:
                time.sleep(0.2)
        if pending:
            raise RuntimeError(f"{len(pending)} of {n} containers did not answer SSH within {timeout:.0f}s")
        return fleet
    except BaseException:
        fleet.stop()
        raise
