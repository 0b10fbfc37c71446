"""The preflight tests' real hosts: a Debian bookworm VM image made here (debootstrap, dropbear with
OpenSSH's sftp-server, dkms, the pinned bookworm-6.1 kernel and its headers from the lock, and a second
kernel of the same suite: the same ABI's cloud flavour), booted in QEMU with user networking that
forwards a loopback port to its SSH server.

The image is built once per machine and cached under KMOD_CACHE by the hash of its inputs (the locked
packages, the package list, the scripts below); every boot uses -snapshot, so each test starts from the
same disk and nothing a test installs survives it. Boot to SSH: a tiny initrd (static busybox and the
virtio/ext4 modules Debian builds as modules), then /sbin/kmod-vm-init starts dropbear as PID 1."""
import fcntl
import hashlib
import json
import lzma
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kmod import arch as archmod
from kmod import pins as pinsmod
from kmod.archive import fetch
from kmod.archive import mirror as mirrormod
from kmod.boot import initramfs, kernel, qemu
from kmod.paths import cache_dir
from kmod.progress import log

HERE = Path(__file__).resolve().parent
RECIPE = "1"   # bump when the build below changes in a way its inputs do not show
PIN, ARCH = "bookworm-6.1", "x86_64"
SECOND_FLAVOUR = "cloud"   # a second kernel of the pinned suite: same ABI, another flavour (--auto-pin)
INCLUDE = ("kmod", "procps", "busybox", "iproute2", "ca-certificates", "dropbear-bin",
           "openssh-sftp-server", "gcc", "make", "libc6-dev", "xz-utils")
IMAGE_ROLES = ("headers-common", "kbuild", "headers", "image")
# Drivers the tiny initrd loads (with their dependencies) to reach the disk and the network.
DRIVERS = ("virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")
# TCG unless KMOD_TEST_VM_ACCEL=kvm: on the nested KVM of this project's machines a 6.1 guest hangs before
# its first console line (or dies on an emulation failure), while TCG is what the CI budget was measured on.
ACCEL = os.environ.get("KMOD_TEST_VM_ACCEL", "tcg")
USER = "kmod"                         # the image's unprivileged user (the same key as root)
NAME_PREFIX = "kmod-preflight-test"   # every QEMU this suite starts is named NAME_PREFIX-<unique>


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk.img"

    @property
    def key(self) -> Path:
        """The client's private key (root's authorized key in the image)."""
        return self.dir / "id_ed25519"

    @property
    def meta(self) -> dict:
        return json.loads((self.dir / "meta.json").read_text())

    @property
    def host_key(self) -> str:
        """dropbear's host public key, "ssh-ed25519 AAAA..."."""
        return self.meta["host_key"]

    @property
    def releases(self) -> list[str]:
        return self.meta["releases"]

    def kernel(self, release: str) -> tuple[Path, Path]:
        """(what QEMU's -kernel gets, the initrd) of one of the image's kernels."""
        return self.dir / self.meta["boot"][release], self.dir / release / "initrd.cpio"


def pin_and_arch():
    pin = pinsmod.require_locked(pinsmod.get(PIN))
    return pin, archmod.get(ARCH)


def second_kernel_package(pin, a) -> str:
    image = pin.package("image", a)
    return f"linux-image-{pin.abi(a)}-{SECOND_FLAVOUR}-{a.kernel_flavour}-unsigned={image.version}"


def inputs() -> dict:
    pin, a = pin_and_arch()
    return {"recipe": RECIPE, "user": USER, "suite": pin.suite, "arch": a.debian_arch, "include": INCLUDE,
            "debs": sorted(p.sha256 for role in IMAGE_ROLES for p in pin.packages_for(role, a)),
            "second": second_kernel_package(pin, a), "busybox": pin.package("busybox", a).sha256,
            "drivers": DRIVERS, "vm_init": (HERE / "vm-init.sh").read_text(),
            "initrd_init": (HERE / "initrd-init.sh").read_text()}


def image_dir() -> Path:
    digest = hashlib.sha256(json.dumps(inputs(), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "preflight" / "vm" / f"bookworm-{ARCH}-{digest}"


def ensure() -> Image:
    """The cached image, built first if missing (one builder at a time per machine)."""
    dest = image_dir()
    if (dest / "meta.json").is_file():
        return Image(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "meta.json").is_file():
            build(dest)
    return Image(dest)


def _run(argv, **kw) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(map(str, argv[:4]))}... failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def build(dest: Path) -> None:
    for tool in ("debootstrap", "chroot", "mkfs.ext4", "mount"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is missing (scripts/setup --test installs it)")
    if os.geteuid() != 0:
        raise RuntimeError("building the preflight test VM image needs root (debootstrap, chroot)")
    pin, a = pin_and_arch()
    mirror = mirrormod.configured()
    work = Path(tempfile.mkdtemp(prefix=".build.", dir=dest.parent))
    root, out = work / "root", work / "out"
    out.mkdir()
    try:
        started = time.monotonic()
        log(f"preflight test VM: debootstrap {pin.suite} (about a minute, once per machine)")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", pin.suite, str(root),
              mirror.main])
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(mirror.sources_deb822(pin.suite))
        debs = root / "tmp" / "debs"
        debs.mkdir(parents=True)
        for role in IMAGE_ROLES:
            for p in pin.packages_for(role, a):
                shutil.copyfile(fetch.fetch(p), debs / p.basename)   # sha256-checked against the lock
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        log(f"preflight test VM: installing {pin.abi(a)} ({a.kernel_flavour}, {SECOND_FLAVOUR}), headers and dkms")
        _chroot_install(root, ["./" + d.name for d in sorted(debs.iterdir())] + ["dkms", second_kernel_package(pin, a)])
        # The key dkms signs with, made here at native speed rather than by the first install under TCG;
        # the same command dkms itself runs when the key is missing. The --install tests remove it from
        # their boot (-snapshot) first: on a fresh host dkms's install makes it, and preflight must
        # remove it again (tests/preflight/test_install.py).
        (root / "var/lib/dkms").mkdir(parents=True, exist_ok=True)
        _run(["chroot", str(root), "openssl", "req", "-new", "-x509", "-nodes", "-days", "36500", "-subj",
              "/CN=DKMS module signing key", "-newkey", "rsa:2048", "-keyout", "/var/lib/dkms/mok.key",
              "-outform", "DER", "-out", "/var/lib/dkms/mok.pub"])
        shutil.rmtree(debs)
        policy.unlink()
        shutil.rmtree(root / "var/lib/apt/lists")   # the indexes: 200 MB nobody reads in a test
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        host_key = _keys(root, out)
        vm_init = root / "sbin/kmod-vm-init"
        shutil.copyfile(HERE / "vm-init.sh", vm_init)
        vm_init.chmod(0o755)
        releases = sorted(p.name for p in (root / "lib/modules").iterdir())
        busybox = kernel.busybox(pin, a)
        boot_images = {}
        for release in releases:
            kdir = out / release
            kdir.mkdir()
            vmlinuz = kdir / "vmlinuz"
            shutil.copyfile(root / "boot" / f"vmlinuz-{release}", vmlinuz)
            # QEMU boots the ELF vmlinux through PVH (no decompression in the guest) where it can be made
            boot_images[release] = str(kernel._uncompressed(vmlinuz, kdir).relative_to(out))
            (kdir / "initrd.cpio").write_bytes(_initrd(root / "lib/modules" / release, busybox))
        log("preflight test VM: mkfs.ext4 -d (the disk image)")
        used = int(_run(["du", "-sb", str(root)]).split()[0])
        size_mb = used // (1 << 20) + 2048   # room for what the tests install (in the -snapshot overlay)
        _run(["mkfs.ext4", "-q", "-F", "-L", "kmodvm", "-E", "root_owner=0:0", "-d", str(root),
              str(out / "disk.img"), f"{size_mb}M"])
        (out / "meta.json").write_text(json.dumps({"inputs": inputs(), "releases": releases, "boot": boot_images,
                                                   "host_key": host_key,
                                                   "seconds": round(time.monotonic() - started, 1)}, indent=2))
        shutil.rmtree(root)
        os.replace(out, dest)
        log(f"preflight test VM: image ready in {time.monotonic() - started:.0f}s: {dest}")
    finally:
        _umount_all(root)
        shutil.rmtree(work, ignore_errors=True)


BINDS = ("proc", "sys", "dev")


def _chroot_install(root: Path, packages: list[str]) -> None:
    try:
        for d in BINDS:
            _run(["mount", "--bind", f"/{d}", str(root / d)])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        _run(["chroot", str(root), "apt-get", "update", "-q"], env=env)
        # The VM boots its own tiny initrd: Debian's initramfs for each kernel would only cost a minute.
        _run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", "initramfs-tools"], env=env)
        _run(["chroot", str(root), "dpkg-divert", "--local", "--rename", "--add", "/usr/sbin/update-initramfs"], env=env)
        (root / "usr/sbin/update-initramfs").symlink_to("/bin/true")
        _run(["chroot", str(root), "sh", "-c", "cd /tmp/debs && exec apt-get install -y -q --no-install-recommends "
              '"$@"', "-", *packages], env=env)
        _run(["chroot", str(root), "apt-get", "clean"], env=env)
    finally:
        _umount_all(root)


def _umount_all(root: Path) -> None:
    for d in reversed(BINDS):
        target = root / d
        if target.is_dir() and os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _keys(root: Path, out: Path) -> str:
    """A client key pair (root may log in with it) and dropbear's host key; returns the host public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    (out / "id_ed25519").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()))
    (out / "id_ed25519").chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(pub + " kmod-preflight-test\n")
    (ssh / "authorized_keys").chmod(0o600)
    # an unprivileged login too (no sudo): what preflight can and cannot read without root
    _run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/sh", USER])
    _run(["chroot", str(root), "sh", "-c", f"mkdir -m 700 ~{USER}/.ssh && cp /root/.ssh/authorized_keys ~{USER}/.ssh/ "
          f"&& chown -R {USER}: ~{USER}/.ssh"])
    (root / "etc/dropbear").mkdir(parents=True, exist_ok=True)
    hk = "/etc/dropbear/dropbear_ed25519_host_key"
    (root / hk.lstrip("/")).unlink(missing_ok=True)
    _run(["chroot", str(root), "dropbearkey", "-t", "ed25519", "-f", hk])
    line = next(ln for ln in _run(["chroot", str(root), "dropbearkey", "-y", "-f", hk]).splitlines()
                if ln.startswith("ssh-ed25519 "))
    return " ".join(line.split()[:2])


def _initrd(modules: Path, busybox: Path) -> bytes:
    """busybox, DRIVERS and what they depend on (modules.dep), in load order, and the initrd /init."""
    deps: dict[str, list[str]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[Path(mod).name.split(".ko")[0].replace("-", "_")] = [mod, *rest.split()]
    by_path = {v[0]: k for k, v in deps.items()}
    order: list[str] = []

    def add(path: str):
        name = by_path[path]
        for dep in deps[name][1:]:
            add(dep)
        if path not in order:
            order.append(path)

    for d in DRIVERS:
        if d in deps:   # not in modules.dep: built in
            add(deps[d][0])
    c = initramfs.Cpio()
    for d in ("/", "/bin", "/dev", "/proc", "/sys", "/newroot", "/lib", "/lib/modules"):
        c.dir(d)
    c.chardev("/dev/console", 5, 1)
    c.file("/bin/busybox", Path(busybox).read_bytes(), 0o755)
    c.symlink("/bin/sh", "busybox")
    names = []
    for path in order:
        data = (modules / path).read_bytes()
        name = Path(path).name
        if name.endswith(".xz"):
            data, name = lzma.decompress(data), name[:-3]
        c.file(f"/lib/modules/{name}", data)
        names.append(name)
    c.file("/modules", ("\n".join(names) + "\n").encode())
    c.file("/init", (HERE / "initrd-init.sh").read_bytes(), 0o755)
    return c.finish()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_banner(port: int, timeout: float = 2.0) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64)
    except OSError:
        return b""


@dataclass
class VM:
    """One booted VM: its release, the loopback port of its SSH server, its console log."""
    image: Image
    release: str
    port: int
    name: str
    console: Path
    proc: subprocess.Popen
    append: tuple[str, ...] = ()
    seconds_to_ssh: float = 0.0
    extra: dict = field(default_factory=dict)

    def ssh_config(self, alias: str, user: str = "root") -> str:
        return (f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {user}\n"
                f"  IdentityFile {self.image.key}\n")

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.image.host_key}\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


def boot(image: Image, release: str, append: tuple[str, ...] = (), log_dir: Path | None = None,
         timeout: float = 240.0) -> VM:
    """Boot `release` from the image (-snapshot) and wait until its SSH server answers."""
    a = archmod.get(ARCH)
    q = a.qemu
    vmlinux, initrd = image.kernel(release)
    port = free_port()
    name = f"{NAME_PREFIX}-{uuid.uuid4().hex[:10]}"
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix=name + "."))
    console = log_dir / f"{name}.console.log"
    accel = ACCEL
    cmdline = [f"console={q['console']}", "root=/dev/vda", "rw", "quiet", "loglevel=4", "panic=-1", *append]
    argv = [q["binary"], "-name", name, "-machine", f"{q['machine']},accel={accel}",
            "-cpu", q.get("kvm_cpu", "host") if accel == "kvm" else q["cpu"], "-m", "1024", "-smp", "2",
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{console}",
            "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", " ".join(cmdline),
            "-drive", f"file={image.disk},if=virtio,format=raw,snapshot=on",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0"]
    started = time.monotonic()
    proc = subprocess.Popen(qemu._guarded(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log_dir / f"{name}.stderr", "w"), start_new_session=True)
    vm = VM(image, release, port, name, console, proc, tuple(append))
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            break
        if ssh_banner(port).startswith(b"SSH-"):
            vm.seconds_to_ssh = time.monotonic() - started
            return vm
        time.sleep(0.5)
    vm.stop()
    tail = console.read_text(errors="replace")[-1500:] if console.exists() else ""
    raise RuntimeError(f"VM {release} did not answer SSH within {timeout:.0f}s (qemu exit {proc.poll()}); "
                       f"console tail:\n{tail}")
