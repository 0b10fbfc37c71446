"""Host lists: --host, --hosts FILE and ssh_config files, every bad line refused with one clear line."""
import re

import pytest

from kmod.errors import UserError
from kmod.preflight import hosts


@pytest.mark.parametrize("text,address,user,port", [
    ("vm1", "vm1", None, None),
    ("root@10.0.0.5", "10.0.0.5", "root", None),
    ("deploy@web-01.example.org:2222", "web-01.example.org", "deploy", 2222),
    ("[::1]:2200", "::1", None, 2200),
    ("admin@[fe80::1]", "fe80::1", "admin", None),
    ("my_alias", "my_alias", None, None),
])
def test_parse(text, address, user, port):
    h = hosts.parse(text)
    assert (h.address, h.user, h.port, h.name) == (address, user, port, text)


@pytest.mark.parametrize("text,what", [
    ("vm1:0", "invalid port"), ("vm1:70000", "invalid port"), ("vm1:ssh", "invalid port"),
    ("bad user@vm1", "invalid user"), ("vm 1", re.escape("is not [user@]host[:port]")), ("-oProxyCommand=x", "is not"),
    ("vm1;reboot", "is not"), ("[zz]:22", "is not"), ("", "is not"),
])
def test_parse_refuses(text, what):
    with pytest.raises(UserError, match=what):
        hosts.parse(text)


def test_hosts_file_with_comments_and_line_numbers(tmp_path):
    f = tmp_path / "fleet.txt"
    f.write_text("# the fleet\nweb1\n\nroot@db1:2222  # primary\n")
    found, config = hosts.from_file(f)
    assert [h.name for h in found] == ["web1", "root@db1:2222"] and config is None
    f.write_text("web1\nweb 2\n")
    with pytest.raises(UserError, match=r"fleet.txt:2: 'web 2'"):
        hosts.from_file(f)


def test_ssh_config_file_gives_its_concrete_hosts(tmp_path):
    f = tmp_path / "config"
    f.write_text("# mine\nServerAliveInterval 30\nHost *\n  User root\nHost web1 web2 !bad *.lab\n  Port 2222\n\n"
                 "host db1\n  HostName 10.1.1.1\n")
    found, config = hosts.from_file(f)
    assert [h.name for h in found] == ["web1", "web2", "db1"] and config == f


def test_select_merges_and_dedups(tmp_path):
    f = tmp_path / "h"
    f.write_text("b\nc\n")
    found, _ = hosts.select("a,b", str(f))
    assert [h.name for h in found] == ["a", "b", "c"]
    with pytest.raises(UserError, match="no host to preflight"):
        hosts.select("", "")
    with pytest.raises(UserError, match="no such file"):
        hosts.select("", str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(UserError, match="no hosts in it"):
        hosts.select("", str(tmp_path / "empty"))
