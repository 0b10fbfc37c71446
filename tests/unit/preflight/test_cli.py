"""`kmod preflight` with wrong input: one line, exit 1, no traceback, no host contacted, nothing written."""
import pytest

from tests.unit.test_cli import kmod, one_line_error

SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n'


@pytest.fixture
def project(tmp_path):
    (tmp_path / "kmod.toml").write_text(SPEC)
    return tmp_path


@pytest.mark.parametrize("args,text", [
    (["preflight"], "no host to preflight"),
    (["preflight", "--host", "vm1;reboot"], "is not [user@]host[:port]"),
    (["preflight", "--host", "vm1:99999"], "has an invalid port"),
    (["preflight", "--host", "vm1", "--format", "xml"], "unknown format 'xml'"),
    (["preflight", "--host", "vm1", "--fail-on", "info"], "unknown --fail-on 'info'"),
    (["preflight", "--host", "vm1", "--keep"], "--keep goes with --install"),
    (["preflight", "--hosts", "/nonexistent/fleet.txt"], "no such file"),
    (["preflight", "--host", "vm1", "--ssh-config", "/nonexistent/config"], "no such file"),
    (["preflight", "--host", "vm1", "--module", "nope"], "unknown module 'nope'"),
    (["preflight", "--host", "vm1", "--identity", "/nonexistent/id_ed25519"], "no such file"),
])
def test_bad_input(project, args, text):
    proc = kmod(*args, cwd=project)
    one_line_error(proc, 1, text)
    assert not (project / "dist").exists()


def test_an_unwritable_dist_is_one_line(project):
    (project / "dist").write_text("a file where the folder should be")
    proc = kmod("preflight", "--host", "root@127.0.0.1:1", "--timeout", "5", cwd=project)
    one_line_error(proc, 1, "cannot write")
