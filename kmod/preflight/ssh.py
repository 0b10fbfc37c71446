"""One SSH session per host, through Fabric: keys from the agent, ~/.ssh or the ssh_config's IdentityFile
(or --identity), never a password; known_hosts checked (a changed key is refused; an unknown one is
accepted and noted, or refused with --strict-host-keys). Every failure of the transport becomes a
HostError: one line about that host, never the run's crash."""
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InfraError
from .hosts import Host

# paramiko's transport thread logs every failed connection with its traceback (a banner that never came,
# a socket cut on Ctrl-C); with no handler, Python's last-resort handler printed those to the user's
# terminal. Each failure is already that host's one line (Session._error).
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class HostError(InfraError):
    """This host could not be read (unreachable, login refused, timed out): its row says why."""
    kind = "host error"


@dataclass(frozen=True)
class Options:
    ssh_config: Path | None = None     # None: Fabric's defaults (~/.ssh/config, /etc/ssh/ssh_config)
    identity: str = ""                 # a private key file, like ssh -i
    strict_host_keys: bool = False
    connect_timeout: float = 15.0
    timeout: float = 120.0             # everything on one host (read-only preflight), seconds


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _accept_and_note(notes: list[str]):
    """A missing-host-key policy that accepts (in memory only) and says so in the host's notes."""
    import paramiko

    class AcceptAndNote(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            client.get_host_keys().add(hostname, key.get_name(), key)
            notes.append(f"host key {key.get_name()} {key.get_fingerprint().hex()[:16]}... is not in known_hosts: "
                         f"accepted for this run (--strict-host-keys refuses unknown hosts)")
    return AcceptAndNote()


@dataclass(eq=False)   # one per connection, kept in sets
class Session:
    host: Host
    options: Options
    deadline: float = 0.0
    notes: list[str] = field(default_factory=list)
    _conn: object = None
    _sock: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    closed: bool = False
    expired: bool = False              # the watchdog cut the connection at the deadline

    def __post_init__(self):
        if not self.deadline:
            self.deadline = time.monotonic() + self.options.timeout

    @property
    def label(self) -> str:
        c = self._conn
        return f"{c.user}@{c.host}:{c.port}" if c is not None else self.host.name

    def timed_out(self) -> HostError:
        return HostError(f"no answer within the per-host timeout of {self.options.timeout:.0f}s",
                         "raise --timeout for slow hosts")

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired:
            raise self.timed_out()
        return left

    def _watch(self) -> None:
        """The per-host timeout as a hard limit: at the deadline the connection is cut, whatever paramiko
        waits for (a banner, an answer to the login, a channel the server never opens: that one waits an
        hour by default, a command that never ends). The deadline may move (cleanup gets its own)."""
        while not self._stop.wait(max(0.0, min(self.deadline - time.monotonic(), 5.0))):
            if time.monotonic() < self.deadline:
                continue
            with self._lock:
                if self.closed:
                    return
                self.expired = True
            self._cut()
            return

    def _cut(self) -> None:
        """End every wait on this connection now: a shut-down socket wakes paramiko's reader at once
        (closing it from another thread could hand its number to someone else meanwhile)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a half-open connection may fail to close; it is cut anyway
                pass

    def open(self) -> "Session":
        from fabric import Config, Connection
        overrides = {"load_ssh_configs": True, "run": {"hide": True, "warn": True, "in_stream": False}}
        config = (Config(runtime_ssh_path=str(self.options.ssh_config), overrides=overrides)
                  if self.options.ssh_config else Config(overrides=overrides))
        # every wait of the login ends by the per-host deadline too (the watchdog below is the backstop)
        wait = max(0.1, min(self.options.connect_timeout, self.remaining()))
        kwargs = {"allow_agent": True, "look_for_keys": True, "banner_timeout": wait, "auth_timeout": wait}
        if self.options.identity:
            kwargs["key_filename"] = [os.path.expanduser(self.options.identity)]
        conn = Connection(self.host.address, user=self.host.user, port=self.host.port, config=config,
                          connect_timeout=max(1, round(min(self.options.connect_timeout, self.remaining()))),
                          connect_kwargs=kwargs)
        self._conn = conn
        strict = self.options.strict_host_keys or conn.ssh_config.get("stricthostkeychecking", "").lower() == "yes"
        self._load_known_hosts(conn)
        if strict:
            import paramiko
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            conn.client.set_missing_host_key_policy(_accept_and_note(self.notes))
        with self._lock:
            if self.closed:
                raise HostError(f"interrupted")
        threading.Thread(target=self._watch, name=f"deadline {self.host.name}", daemon=True).start()
        try:
            if not conn.gateway:   # a ProxyJump/ProxyCommand brings its own channel
                self._sock = self._socket(conn)
                conn.connect_kwargs["sock"] = self._sock
            conn.open()
        except Exception as e:  # noqa: BLE001 - every way a connection fails is this host's error
            if self.expired:
                raise self.timed_out() from None
            raise self._error(e, strict) from None
        if self.expired:
            raise self.timed_out()
        return self

    def _socket(self, conn) -> socket.socket:
        """The TCP connection, with Nagle off as OpenSSH has it for sessions: paramiko leaves it on, and
        each small SSH message that waits for the peer's delayed ACK costs 40 ms (a channel open, an
        exit status): most of a host's wall on a fast network."""
        timeout = max(0.1, min(self.options.connect_timeout, self.remaining()))
        sock = socket.create_connection((conn.host, conn.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _load_known_hosts(self, conn) -> None:
        keys = conn.client.get_host_keys()
        files = conn.ssh_config.get("userknownhostsfile") or ["~/.ssh/known_hosts"]
        if isinstance(files, str):
            files = files.split()
        for f in files:
            path = os.path.expanduser(f)
            if os.path.isfile(path):
                try:
                    keys.load(path)
                except Exception as e:  # noqa: BLE001 - a broken known_hosts is worth a note, not a crash
                    self.notes.append(f"cannot read {path}: {e}")

    def _error(self, e: Exception, strict: bool) -> HostError:
        import paramiko
        from paramiko.ssh_exception import NoValidConnectionsError
        c = self._conn
        where = f"{c.user}@{c.host}:{c.port}" if c is not None else self.host.name
        if isinstance(e, paramiko.BadHostKeyException):
            return HostError(f"the host key of {c.host}:{c.port} differs from known_hosts: refused",
                             "if the host was reinstalled, remove its old line from known_hosts")
        if isinstance(e, paramiko.PasswordRequiredException):
            return HostError(f"the private key needs a passphrase", "load it into ssh-agent (ssh-add)")
        if isinstance(e, paramiko.AuthenticationException) or "No authentication methods" in str(e):
            return HostError(f"login refused for {where}",
                             "no key from ssh-agent, ~/.ssh or IdentityFile was accepted; preflight never uses passwords")
        if isinstance(e, NoValidConnectionsError) or isinstance(e, ConnectionRefusedError):
            return HostError(f"connection refused by {c.host}:{c.port}", "is an SSH server listening there?")
        if isinstance(e, socket.gaierror):
            return HostError(f"cannot resolve {c.host}", "check the name or its ssh_config HostName")
        silent = isinstance(e, paramiko.SSHException) and any(
            t in str(e) for t in ("Error reading SSH protocol banner", "No existing session"))
        if isinstance(e, (socket.timeout, TimeoutError)) or silent:
            return HostError(f"no SSH server answered on {c.host}:{c.port} (no SSH banner within "
                             f"{self.options.connect_timeout:.0f}s)", "is the host up, the port right, the server SSH?")
        if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e) and strict:
            return HostError(f"its host key is not in known_hosts and host keys are strict",
                             "add it to known_hosts (ssh-keyscan, after checking it) or drop --strict-host-keys")
        if isinstance(e, (paramiko.SSHException, EOFError)):
            return HostError(f"SSH failed with {where}: {e or type(e).__name__}")
        if isinstance(e, OSError):
            return HostError(f"cannot connect to {where}: {e.strerror or e}")
        return HostError(f"{type(e).__name__}: {e}")

    def run(self, command: str, timeout: float | None = None) -> Result:
        """Run a command (through the login shell); a non-zero exit is a Result, not an exception."""
        from invoke.exceptions import CommandTimedOut
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        try:
            r = self._conn.run(command, timeout=max(1, int(limit + 0.999)))
        except CommandTimedOut:
            if self.expired:
                raise self.timed_out() from None
            raise HostError(f"a command got no answer within {limit:.0f}s",
                            "raise --timeout for slow hosts") from None
        except Exception as e:  # noqa: BLE001
            if self.expired:
                raise self.timed_out() from None
            if self.closed:
                raise HostError(f"interrupted") from None
            raise self._error(e, False) from None
        if self.expired:   # cut mid-command: what it printed is not the whole answer
            raise self.timed_out()
        return Result(r.exited if r.exited is not None else 255, r.stdout, r.stderr)

    def put(self, local: Path, remote: str) -> None:
        try:
            self._conn.put(str(local), remote)
        except Exception as e:  # noqa: BLE001
            if self.expired:
                raise self.timed_out() from None
            if self.closed:
                raise HostError(f"interrupted") from None
            raise HostError(f"cannot copy {Path(local).name} to {remote}: {e or type(e).__name__}",
                            "the SSH server must offer SFTP (an sftp-server)") from None

    def close(self) -> None:
        """Also from another thread (Ctrl-C while only reading): the socket is shut down first, so that a
        wait for the server's banner or login ends now, not at its timeout."""
        with self._lock:
            self.closed = True
        self._stop.set()
        self._cut()
