"""Which hosts to preflight: `--host a,b`, `--hosts FILE` (one `[user@]host[:port]` a line, `#` comments),
or an ssh_config file given as --hosts (its concrete `Host` names). Names that an ssh_config defines are
resolved by Fabric from that file (HostName, User, Port, IdentityFile, ProxyJump...), as ssh would."""
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import inputs
from ..errors import UserError

# RFC 1123 labels (underscores too: ssh_config aliases use them), IPv4, or [IPv6].
NAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
SHAPE = "[user@]host[:port]"
DEFAULT_SSH_CONFIG = "~/.ssh/config"


@dataclass(frozen=True)
class Host:
    name: str             # what the user wrote (an alias or an address); the row label in reports
    address: str          # host name or IP to connect to (an ssh_config alias is resolved by Fabric)
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return self.name


def parse(text: str, where: str = "--host") -> Host:
    """One `[user@]host[:port]`; IPv6 as `[addr]` or `[addr]:port`."""
    raw = text.strip()
    user, sep, rest = raw.rpartition("@")
    if not sep:
        user, rest = None, raw
    elif not USER_RE.fullmatch(user):
        raise UserError(f"{where}: {raw!r} has an invalid user name {user!r}", f"write {SHAPE}")
    port = None
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", rest)
    if m:
        address, port_s = m.group(1), m.group(2)
        if not IPV6_RE.fullmatch(address):
            raise UserError(f"{where}: {raw!r} is not {SHAPE}", "IPv6 addresses go in brackets: [::1]:2222")
    else:
        address, colon, port_s = rest.partition(":")
        if not colon:
            port_s = None
        if not NAME_RE.fullmatch(address or "-"):
            raise UserError(f"{where}: {raw!r} is not {SHAPE}",
                            "a host is a name, an IPv4 address or [IPv6]; one host per entry")
    if port_s is not None:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise UserError(f"{where}: {raw!r} has an invalid port", "a port is 1-65535")
        port = int(port_s)
    return Host(raw, address, user or None, port)


def is_ssh_config(text: str) -> bool:
    """An ssh_config has a `Host` or `Match` block somewhere (global options may come first); a host list
    cannot: "Host NAME" is no [user@]host[:port]."""
    return any(re.match(r"(?i)^\s*(host|match)\s+\S", line) for line in text.splitlines())


def ssh_config_hosts(text: str) -> list[str]:
    """The concrete names of `Host` lines (no wildcards, no negations), in order, once each."""
    names: list[str] = []
    for line in text.splitlines():
        m = re.match(r"(?i)^\s*host\s+(.+?)\s*$", line)
        if not m:
            continue
        for word in m.group(1).split():
            if not any(c in word for c in "*?!") and word not in names:
                names.append(word)
    return names


def _read(path: Path) -> str:
    try:
        return inputs.read(path, "--hosts", 16 * inputs.MIB, "give a file of [user@]host[:port] lines or an ssh_config").decode()
    except FileNotFoundError:
        raise UserError(f"--hosts {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--hosts {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None


def from_file(path: Path) -> tuple[list[Host], Path | None]:
    """The hosts of a --hosts file; the second value is the file itself when it is an ssh_config (its
    aliases then resolve through it)."""
    path = Path(path).expanduser()
    text = _read(path)
    if is_ssh_config(text):
        names = ssh_config_hosts(text)
        if not names:
            raise UserError(f"--hosts {path}: this ssh_config names no concrete Host", "add `Host NAME` blocks")
        return [Host(n, n) for n in names], path
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(parse(line, f"{path}:{no}"))
    if not out:
        raise UserError(f"--hosts {path}: no hosts in it", f"write one {SHAPE} per line")
    return out, None


def select(host: str = "", hosts_file: str = "") -> tuple[list[Host], Path | None]:
    """--host and --hosts together, each host once (first mention wins)."""
    found: list[Host] = []
    config = None
    for part in (host or "").split(","):
        if part.strip():
            found.append(parse(part))
    if hosts_file:
        more, config = from_file(Path(hosts_file))
        found += more
    if not found:
        raise UserError("no host to preflight", "give --host HOST[,HOST...] or --hosts FILE (or ~/.ssh/config)")
    seen, unique = set(), []
    for h in found:
        if h.name not in seen:
            seen.add(h.name)
            unique.append(h)
    return unique, config


def ssh_config_path(explicit: str = "", from_hosts: Path | None = None) -> Path | None:
    """--ssh-config, else the --hosts file when it is one, else ~/.ssh/config when it exists."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise UserError(f"--ssh-config {explicit}: no such file")
        return p
    if from_hosts is not None:
        return from_hosts
    default = Path(os.path.expanduser(DEFAULT_SSH_CONFIG))
    return default if default.is_file() else None
