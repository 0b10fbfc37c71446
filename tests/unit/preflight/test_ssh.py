"""Every way a connection fails is that host's one-line HostError (real paramiko, on loopback)."""
import socket
import threading

import pytest

from kmod.preflight import hosts, ssh


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(reply: bytes | None):
    """A loopback listener that answers each connection with `reply` (None: says nothing)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if reply is not None:
                conn.sendall(reply)
                conn.close()
            else:
                threading.Timer(5, conn.close).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv


def session(port: int, **kw):
    opts = ssh.Options(ssh_config=None, connect_timeout=2, timeout=10, **kw)
    return ssh.Session(hosts.parse(f"nobody@127.0.0.1:{port}"), opts)


def test_connection_refused():
    with pytest.raises(ssh.HostError, match=r"connection refused by 127\.0\.0\.1:\d+"):
        session(closed_port()).open()


def test_not_an_ssh_server():
    srv = server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        with pytest.raises(ssh.HostError, match=r"no SSH server answered on 127\.0\.0\.1:\d+"):
            session(srv.getsockname()[1]).open()
    finally:
        srv.close()


def test_silent_server_times_out():
    srv = server(None)
    try:
        with pytest.raises(ssh.HostError, match=r"no SSH server answered on 127\.0\.0\.1:\d+ \(no SSH banner within 2s\)"):
            session(srv.getsockname()[1]).open()
    finally:
        srv.close()


def test_per_host_deadline():
    s = session(closed_port())
    s.deadline = 0.0001
    with pytest.raises(ssh.HostError, match="per-host timeout"):
        s.remaining()
