"""The per-host timeout is a hard limit: a host that hangs anywhere (before its banner, at the login,
when a channel is asked for, in the middle of the facts script) ends as that host's timeout error
within --timeout, whatever the connect timeout (15 s) or paramiko's own waits (a channel: an hour)."""
import threading
import time

import pytest

from kmod import preflight
from kmod.preflight import hosts, ssh
from tests.unit.preflight.fakehost import FakeHost, client_key

TIMEOUT = 3.0
SLACK = 2.0     # thread start, the key exchange, a loaded machine


@pytest.fixture
def options(tmp_path):
    config = tmp_path / "ssh_config"      # nothing from ~/.ssh/config or /etc/ssh
    config.write_text("")
    return ssh.Options(ssh_config=config, identity=client_key(tmp_path), timeout=TIMEOUT)


def bounded(fn, limit: float):
    """fn() in a thread: (its exception or result, seconds); fails (rather than hangs) past `limit`."""
    out = {}

    def go():
        started = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["value"] = e
        out["seconds"] = time.monotonic() - started
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(limit + 30)
    assert "seconds" in out, f"still waiting {limit + 30:.0f}s later"
    return out["value"], out["seconds"]


def test_a_silent_server_is_cut_at_the_per_host_timeout(options):
    """No SSH banner: the banner wait is the connect timeout (15 s), clamped to what is left of the host's."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)     # the kernel accepts the connection; nobody ever says a word on it
    try:
        s = ssh.Session(hosts.parse(f"root@127.0.0.1:{srv.getsockname()[1]}"), options)
        err, seconds = bounded(s.open, TIMEOUT)
    finally:
        srv.close()
    assert isinstance(err, ssh.HostError), err
    assert seconds <= TIMEOUT + SLACK, seconds


@pytest.mark.parametrize("hang", ["login", "channel", "script"])
def test_a_host_that_hangs_is_that_hosts_timeout_error(options, tmp_path, hang):
    """The whole read of one host (read_host: connect, the facts script, the verdicts) against a fake
    host that hangs at one step: that host's row says it timed out, within the bound."""
    from kmod import spec as specmod
    fake = FakeHost(hang)
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
    project = specmod.load(tmp_path / "kmod.toml")
    run = preflight.Run(project, [], preflight.Options(ssh=options, quiet=True))
    try:
        r, seconds = bounded(lambda: preflight.read_host(run, hosts.parse(f"root@127.0.0.1:{fake.port}"),
                                                         preflight.facts_script([])), TIMEOUT)
    finally:
        fake.close()
    assert r.error.startswith(f"no answer within the per-host timeout of {TIMEOUT:.0f}s"), r.error
    assert seconds <= TIMEOUT + SLACK, seconds
    assert r.seconds <= TIMEOUT + SLACK


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_while_a_login_waits_ends_the_run_at_once(tmp_path, signame, code):
    """Ctrl-C, SIGTERM or SIGHUP while a server keeps the login waiting (no banner yet): the session is
    cut from the main thread, so the run ends now, not when the banner wait (up to 15 s) runs out."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "kmod", "preflight", "--host",
                             f"root@127.0.0.1:{srv.getsockname()[1]}", "--timeout", "60"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        conn, _ = srv.accept()       # kmod connected; its login now waits for a banner
        time.sleep(0.5)
        proc.send_signal(getattr(signal, signame))
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
        conn.close()
    finally:
        srv.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"interrupted ({signame})" and "Traceback" not in err, err
    assert took < 3, f"{took:.1f}s after {signame}"
