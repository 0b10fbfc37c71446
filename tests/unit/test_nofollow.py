"""Reading what untrusted code could have replaced: never through a link, only regular files (issue 8, item 1)."""
import os
import socket

import pytest

from kmod import nofollow
from kmod.boot import initramfs
from kmod.build.runtime.host import HostRuntime
from kmod.package import dkms

SECRET = b"host secret that must never be read"


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "secret").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "ok.ko").write_bytes(b"module")
    (root / "sub" / "x.c").write_bytes(b"code")
    os.symlink(tmp_path / "secret", root / "link.ko")
    os.symlink(tmp_path, root / "dirlink")
    os.link(tmp_path / "secret", root / "hard.ko")
    os.mkfifo(root / "fifo.ko")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock.ko"))
    s.close()
    return root


def test_regular_files_are_read(tree):
    assert nofollow.read_bytes(tree, "ok.ko") == b"module"
    assert nofollow.read_bytes(tree, "sub/x.c") == b"code"


@pytest.mark.parametrize("name, kind", [("link.ko", "a symbolic link"), ("hard.ko", "a hard link"),
                                        ("fifo.ko", "a FIFO"), ("sock.ko", "a socket"),
                                        ("dirlink/secret", "a symbolic link"), ("sub", "a folder")])
def test_links_and_special_files_are_refused(tree, name, kind):
    with pytest.raises(nofollow.UnsafeFile) as e:
        nofollow.read_bytes(tree, name, "artifact")
    assert kind in e.value.message and "refused" in e.value.message
    assert "\n" not in e.value.line()


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "a//b", "."])
def test_paths_that_leave_the_root_are_refused(tree, name):
    with pytest.raises(nofollow.UnsafeFile):
        nofollow.read_bytes(tree, name)


def test_collect_copies_regular_artifacts_and_refuses_links(tree, tmp_path):
    rt = HostRuntime()
    ws = rt.prepare(tree / "sub", ["x.c"], tmp_path / "work")
    assert (ws.dir / "x.c").read_bytes() == b"code" and not (ws.dir / "x.c").is_symlink()
    (ws.dir / "m.ko").write_bytes(b"built")
    os.symlink(tree.parent / "secret", ws.dir / "evil.ko")
    out = tmp_path / "out"
    assert set(rt.collect(ws, ["m.ko", "missing.ko"], out)) == {"m.ko"}
    with pytest.raises(nofollow.UnsafeFile, match="evil.ko is a symbolic link"):
        rt.collect(ws, ["evil.ko"], out)
    assert not (out / "evil.ko").exists()
    rt.cleanup(ws)
    assert not ws.dir.exists()


def test_prepare_refuses_a_linked_source(tree, tmp_path):
    with pytest.raises(nofollow.UnsafeFile, match="source file link.ko is a symbolic link"):
        HostRuntime().prepare(tree, ["ok.ko", "link.ko"], tmp_path / "work")


def test_package_sources_are_read_through_no_link(tree):
    assert dkms.read_sources(tree, ["ok.ko"]) == {"ok.ko": b"module"}
    with pytest.raises(nofollow.UnsafeFile):
        dkms.read_sources(tree, ["ok.ko", "link.ko"])


def test_initramfs_takes_no_linked_module(tree, tmp_path):
    (tmp_path / "busybox").write_bytes(b"\x7fELF not really")
    with pytest.raises(nofollow.UnsafeFile, match="module link.ko is a symbolic link"):
        initramfs.build(tmp_path / "busybox", "#!/bin/sh\n", tree / "link.ko", "link")
    with pytest.raises(nofollow.UnsafeFile, match="busybox link.ko is a symbolic link"):
        initramfs.build(tree / "link.ko", "#!/bin/sh\n")
    data = initramfs.build(tmp_path / "busybox", "#!/bin/sh\n", tree / "ok.ko", "ok")
    assert b"module" in data and SECRET not in data
