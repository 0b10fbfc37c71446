"""A closed terminal (SIGHUP through a real pty, not a pipe): writes to it fail with EIO from then on, so
the run must still clean up, record `interrupted` and exit 129, with nothing left running."""
import json
import os
import pty
import select
import sys
import time

from tests.conftest import ROOT

FAKE_KDIR = ROOT / "tests" / "fixtures" / "fake_kdir"
SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n'


def test_a_closed_terminal_ends_the_run_with_129(tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    pid, fd = pty.fork()
    if pid == 0:  # the child: kmod on the pty, a build that takes a minute
        os.chdir(tmp_path)
        os.environ.update(PYTHONPATH=str(ROOT), SLEEP="60", TERM="xterm")
        os.execv(sys.executable, [sys.executable, "-m", "kmod", "build", "--runtime", "host",
                                  "--kdir", str(FAKE_KDIR), "--no-lint"])
    seen, deadline = b"", time.monotonic() + 60
    while b"running" not in seen and time.monotonic() < deadline:   # the build has started
        if select.select([fd], [], [], 1)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    assert b"running" in seen, seen
    closed = time.monotonic()
    os.close(fd)                        # the terminal goes away: the kernel sends SIGHUP
    _, status = os.waitpid(pid, 0)
    took = time.monotonic() - closed
    assert os.waitstatus_to_exitcode(status) == 129
    assert took < 20, f"{took:.1f}s to end after the hang-up"
    m = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert m["runs"][-1]["status"] == "interrupted"
    assert {c["result"] for c in m["cells"].values()} == {"interrupted"}
    work = tmp_path / "dist" / ".work"
    assert not work.exists() or not list(work.iterdir())
