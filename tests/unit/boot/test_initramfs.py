"""/init rendering (golden files) and the cpio writer, without QEMU."""
import os
import stat
from pathlib import Path

import pytest

from kmod.boot import initramfs
from tests.conftest import need_tool

GOLDEN = Path(__file__).parent / "golden"
RENDER = os.environ.get("KMOD_GOLDEN_RENDER") == "1"  # regenerate, then review the diff

CASES = {
    "init-clone_probe.sh": initramfs.InitSpec(module="clone_probe", trigger="/bin/true",
                                              probes=("kernel_clone+0x0",)),
    "init-quoted-trigger.sh": initramfs.InitSpec(module="m2", trigger="echo 'a b' >/tmp/x; sh -c \"exit 0\"",
                                                 probes=("vfs_write+0x0", "do_sys_openat2+0x4")),
    "init-probemap.sh": initramfs.InitSpec(dumps=(("kallsyms", "/proc/kallsyms"),
                                                  ("blacklist", "/sys/kernel/debug/kprobes/blacklist"))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_init_matches_golden(name):
    text = initramfs.render_init(CASES[name])
    path = GOLDEN / name
    if RENDER:
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed: rerun with KMOD_GOLDEN_RENDER=1 and review the diff"


def test_init_runs_the_steps_in_the_verdicts_order():
    text = initramfs.render_init(CASES["init-clone_probe.sh"])
    # taint and done are in finish(); count only when kmod counts hits itself
    positions = [text.index(f"step={s} ") for s in initramfs.STEPS if s not in ("taint", "done", "count")]
    assert positions == sorted(positions)
    assert text.startswith("#!/bin/sh\n") and "poweroff -f" in text
    assert "for ko in /kmod/clone_probe.ko ;" in text and "for name in clone_probe ;" in text
    assert "/sys/module/clone_probe/parameters/hits" in text


def test_trigger_is_one_shell_word():
    """A trigger with quotes and ; reaches eval intact, in a subshell: it cannot break out of /init."""
    text = initramfs.render_init(CASES["init-quoted-trigger.sh"])
    line = next(ln for ln in text.splitlines() if ln.startswith("(eval "))
    import shlex
    assert line.endswith(") </dev/null")
    assert shlex.split(line[len("(eval "):-len(") </dev/null")]) == ["echo 'a b' >/tmp/x; sh -c \"exit 0\""]


def test_probe_map_init_has_no_module_steps():
    text = initramfs.render_init(CASES["init-probemap.sh"])
    assert "insmod" not in text and "KMODBOOT-BEGIN kallsyms" in text and "gzip -c /proc/kallsyms | uuencode -m kallsyms" in text


def test_default_triggers_come_from_the_data_file():
    assert initramfs.default_trigger(["kernel_clone"]) == "/bin/true"
    assert "cat /proc/version" in initramfs.default_trigger(["do_sys_openat2"])
    assert initramfs.default_trigger(["kernel_clone.cold"]) == "/bin/true"
    assert initramfs.default_trigger(["no_such_fn"]) == initramfs.trigger_table()["generic"]
    both = initramfs.default_trigger(["kernel_clone", "do_exit", "vfs_write"])
    assert both.count("/bin/true") == 1 and "echo x" in both


def test_cpio_holds_what_the_guest_needs(tmp_path):
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF" + b"x" * 1001)
    ko = tmp_path / "m.ko"
    ko.write_bytes(b"ko" * 33)
    data = initramfs.build(bb, "#!/bin/sh\n", ko, "m")
    entries = {name: (mode, size) for name, mode, size in initramfs.listing(data)}
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert entries["init"] == (stat.S_IFREG | 0o755, len("#!/bin/sh\n"))
    assert entries["bin/busybox"] == (stat.S_IFREG | 0o755, 1005)
    assert entries["kmod/m.ko"][1] == 66
    assert stat.S_ISLNK(entries["bin/sh"][0])
    assert "debugfs /sys/kernel/debug debugfs" in initramfs.FSTAB and "etc/fstab" in entries
    assert len(data) % 512 == 0
    assert data == initramfs.build(bb, "#!/bin/sh\n", ko, "m"), "same inputs, same bytes"
    # the device node's numbers are 5:1 (rdevmajor/rdevminor fields of the newc header)
    pos = data.index(b"dev/console") - 110
    assert int(data[pos + 78:pos + 86], 16) == 5 and int(data[pos + 86:pos + 94], 16) == 1


def test_cpio_is_readable_by_gnu_cpio(tmp_path):
    import subprocess
    need_tool("cpio")
    bb = tmp_path / "busybox"
    bb.write_bytes(b"bb")
    (tmp_path / "a.cpio").write_bytes(initramfs.build(bb, "#!/bin/sh\necho hi\n"))
    out = subprocess.run(["cpio", "-t", "-F", str(tmp_path / "a.cpio")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {"init", "bin/busybox", "dev/console", "kmod"} <= set(out.stdout.split())


def test_applet_links_come_from_the_busybox_name_table(tmp_path):
    names = ["[", "[[", "acpid", "cat", "insmod", "ls", "mount", "poweroff", "rmmod", "sh", "sync", "true"] + \
        [f"applet{i}" for i in range(20)]
    binary = b"\x7fELF junk\0\x01\x02" + b"\0".join(n.encode() for n in names) + b"\0\0\xff more"
    assert initramfs.applets(binary) == names
    assert initramfs.applets(b"\x7fELF no table") == []
    bb = tmp_path / "busybox"
    bb.write_bytes(binary)
    entries = {name: mode for name, mode, _ in initramfs.listing(initramfs.build(bb, "#!/bin/sh\n"))}
    assert stat.S_ISLNK(entries["bin/insmod"]) and stat.S_ISLNK(entries["bin/["])


def test_hand_written_init_loads_in_order_counts_and_unloads_in_reverse():
    spec = initramfs.InitSpec(module="ddcci", trigger="true", kos=("ddcci.ko", "ddcci-backlight.ko"),
                              hits=False, count=True)
    text = initramfs.render_init(spec)
    assert "for ko in /kmod/ddcci.ko /kmod/ddcci-backlight.ko ;" in text
    assert "for name in ddcci_backlight ddcci ;" in text
    assert "/parameters/hits" not in text
    assert text.index("step=count status=armed") < text.index("step=trigger status=start")
    assert text.index("done <$T/kprobe_profile") > text.index("step=trigger status=start")
