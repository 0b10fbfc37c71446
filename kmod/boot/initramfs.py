"""The boot-test initramfs: busybox-static of the guest arch, the module under test and a rendered
/init, written as an uncompressed cpio (newc) archive by this code alone: no root, no mknod, no cpio
tool, same bytes for the same inputs (mtime 0, uid 0)."""
import io
import re
import stat
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


from .. import nofollow, paths, render

# Steps the /init reports, in the order it runs them. The verdict parser attributes a console line
# to the step in progress when it appeared, so this order is part of the contract with init.sh.j2.
STEPS = ("init", "mount", "insmod", "kprobes", "count", "trigger", "hits", "rmmod", "taint", "done")
MARKER = "KMODBOOT"
MODULE_DIR = "/kmod"
APPLET_RE = re.compile(rb"[a-z0-9][a-z0-9_.-]*|\[\[?")


@cache
def trigger_table() -> dict:
    """templates/boot/triggers.toml: symbol -> shell command that makes it run."""
    return tomllib.loads((paths.templates() / "boot" / "triggers.toml").read_text())


def default_trigger(symbols: list[str]) -> str:
    """The workload that runs every probed symbol the tool knows, or the generic one for the rest."""
    table = trigger_table()
    known, commands = table["symbols"], []
    for sym in symbols:
        base = sym.split(".", 1)[0]  # kernel_clone.cold -> kernel_clone
        cmd = known.get(sym) or known.get(base) or table["generic"]
        if cmd not in commands:
            commands.append(cmd)
    return "; ".join(commands or [table["generic"]])


@dataclass(frozen=True)
class InitSpec:
    """What /init does; rendered by templates/boot/init.sh.j2."""
    module: str = ""                # module name (/kmod/NAME.ko unless `kos`); "" boots without one
    trigger: str = ""
    probes: tuple[str, ...] = ()    # for the reader of the console only; the host checks them
    dumps: tuple[tuple[str, str], ...] = field(default=())  # (name, guest path) to print gzip+base64
    kos: tuple[str, ...] = ()       # the .ko files below /kmod, in load order (dependencies first)
    hits: bool = True               # read /sys/module/NAME/parameters/hits (kmod's rendered modules)
    count: bool = False             # count hits itself: a tracefs kprobe event on each probe registered

    @property
    def files(self) -> tuple[str, ...]:
        return self.kos or ((f"{self.module}.ko",) if self.module else ())

    @property
    def unload(self) -> tuple[str, ...]:
        """Kernel names (- is _ to the kernel), last loaded first."""
        return tuple(f[:-3].replace("-", "_") for f in reversed(self.files))

    @property
    def hits_name(self) -> str:
        return self.module.replace("-", "_")


def render_init(spec: InitSpec) -> str:
    return render.render_text("boot/init.sh.j2", s=spec, module_dir=MODULE_DIR, marker=MARKER)


class Cpio:
    """A newc archive being written. Device nodes and modes are written as data: no privileges needed."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink=1):
        name = name.lstrip("/") or "."
        self.names.add(name)
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.buf.write(hdr + b"\0" * (-len(hdr) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str, mode=0o755):
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode=0o600):
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        data = self.buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


FSTAB = """devtmpfs /dev devtmpfs defaults 0 0
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
debugfs /sys/kernel/debug debugfs defaults 0 0
"""


def applets(binary: bytes) -> list[str]:
    """The applet names of a busybox binary, read from its name table ("[\\0[[\\0acpid\\0..."): the
    guest binary cannot run here to say `--list`. [] when the table is not found (then /init links)."""
    start = binary.find(b"[\0[[\0")
    if start < 0:
        return []
    names, pos = [], start
    while True:
        end = binary.index(b"\0", pos)
        name = binary[pos:end]
        if not name or not APPLET_RE.fullmatch(name):
            break
        names.append(name.decode())
        pos = end + 1
    return names if len(names) > 20 and "sh" in names and "mount" in names else []


def build(busybox: Path, init_script: str, ko: Path | bytes | None = None, module: str = "",
          kos: tuple[tuple[str, Path | bytes], ...] = ()) -> bytes:
    """The whole initramfs as bytes: busybox with its applet links, etc/fstab, /init, the module (`ko`
    as NAME.ko) or modules (`kos`: file name, path or the bytes already read)."""
    c = Cpio()
    for d in ("/", "/bin", "/sbin", "/dev", "/etc", "/proc", "/sys", "/tmp", "/root", MODULE_DIR):
        c.dir(d)
    # The kernel opens /dev/console before /init runs, before devtmpfs is mounted.
    c.chardev("/dev/console", 5, 1)
    # Read through no link (kmod.nofollow): a planted link in the cache or dist/ cannot pull a host file in.
    binary = nofollow.read_path(busybox, "busybox")
    c.file("/bin/busybox", binary, 0o755)
    for name in sorted(set(applets(binary)) | {"sh"}):
        if name != "busybox":
            c.symlink(f"/bin/{name}", "busybox")
    c.file("/etc/fstab", FSTAB.encode())
    c.file("/init", init_script.encode(), 0o755)
    if ko:
        c.file(f"{MODULE_DIR}/{module}.ko", ko if isinstance(ko, bytes) else nofollow.read_path(ko, "module"))
    for name, data in kos:
        c.file(f"{MODULE_DIR}/{name}", data if isinstance(data, bytes) else nofollow.read_path(data, "module"))
    return c.finish()


def listing(data: bytes) -> list[tuple[str, int, int]]:
    """(name, mode, size) of each entry: the inverse of build(), for tests and for reading a log."""
    out, pos = [], 0
    while pos < len(data):
        hdr = data[pos:pos + 110]
        if hdr[:6] != b"070701":
            break
        f = [int(hdr[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            break
        out.append((name, mode, size))
        pos = data_start + size + (-size % 4)
    return out
