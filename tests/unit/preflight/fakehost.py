"""An SSH server in this process, on loopback (paramiko's server side), that lets any key in and then
misbehaves on purpose: it never answers the login, never opens the channel, or runs the facts script
only to hang in the middle of it. For the per-host timeout's tests; no container, no VM."""
import socket
import threading
import time

import paramiko

MARKER = "@@KMOD-PREFLIGHT@@"


class _Server(paramiko.ServerInterface):
    def __init__(self, hang: str, hold: float):
        self.hang, self.hold = hang, hold

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if self.hang == "login":
            time.sleep(self.hold)
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        if self.hang == "channel":
            time.sleep(self.hold)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        def answer():
            # the first sections of the facts script's answer, then nothing: no end mark, no exit status
            channel.sendall(f"{MARKER} lockdown\n\n{MARKER} uname\n6.1.0-56-amd64\nx86_64\n".encode())
            time.sleep(self.hold)
            channel.close()
        threading.Thread(target=answer, daemon=True).start()
        return True


class FakeHost:
    """`hang`: "login", "channel" or "script"; each wait lasts `hold` seconds."""

    def __init__(self, hang: str, hold: float = 30.0):
        self.key = paramiko.ECDSAKey.generate()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.hang, self.hold = hang, hold
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.key)
            self.transports.append(t)
            try:
                t.start_server(server=_Server(self.hang, self.hold))
            except Exception:  # noqa: BLE001 - the client went away
                continue

    def close(self):
        self.listener.close()
        for t in self.transports:
            t.close()


def client_key(folder) -> str:
    """A private key file for the client (the fake host takes any)."""
    key = paramiko.ECDSAKey.generate()
    path = folder / "id_ecdsa"
    key.write_private_key_file(str(path))
    return str(path)
