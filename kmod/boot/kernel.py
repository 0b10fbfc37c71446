"""The pinned kernel image and busybox of one pin and arch, fetched once (sha256 from the lock) and
unpacked into the cache. Only the few files a boot needs are kept: the kernel, System.map, config, busybox."""
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import filelock, paths
from ..archive import fetch, unpacked
from ..arch import Arch
from ..errors import InfraError
from ..flavour import GENERIC
from ..pins import Package, Pin, require_locked

@dataclass(frozen=True)
class Kernel:
    pin: Pin
    arch: Arch
    release: str
    image: Path        # what QEMU's -kernel gets
    system_map: Path
    config: Path
    flavour: str = GENERIC   # its flavour's data name (an auto-pin's too): what qemu.boot(flavour=) takes


def _extract(pkg: Package, members: dict[str, str], dest: Path, finish=None) -> None:
    """Unpack `members` (path in the .deb -> name in dest) of a locked package into `dest`, atomically;
    `finish(folder)` adds what is made of them before the folder is in place. Each use checks the files
    against the manifest written then (kmod.archive.unpacked); files that differ are unpacked again from
    the verified .deb, with a one-line note. One unpacker at a time, threads and processes alike."""
    present = lambda: all((dest / name).is_file() for name in members.values())
    if present() and not unpacked.check(dest):
        return
    with filelock.locked(dest.with_name(dest.name + ".lock")):
        why = unpacked.check(dest) if present() else None
        if why == "":
            return
        if why:
            unpacked.note(pkg.basename, why)
        deb = fetch.fetch(pkg)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            # dpkg-deb -x would unpack thousands of in-tree modules we never use: take the members only.
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            res = subprocess.run(["tar", "-x", "-C", str(staging), "--wildcards", *members],
                                 stdin=tar.stdout, capture_output=True, text=True)
            tar.stdout.close()
            if tar.wait() != 0 or res.returncode != 0:
                raise InfraError(f"cannot unpack {pkg.basename}: {res.stderr.strip()[:300]}",
                                 "delete it from the cache to download it again")
            for member, name in members.items():
                found = sorted(f for f in staging.rglob(Path(member).name) if f.is_file())
                if not found:
                    raise InfraError(f"{pkg.basename} has no {member}")
                shutil.move(str(found[0]), staging / name)
            for child in list(staging.iterdir()):
                if child.name not in members.values():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            if finish:
                finish(staging)
            unpacked.replace(staging, dest)
        except FileNotFoundError as e:
            raise InfraError(f"cannot unpack {pkg.basename}: {e.filename} is missing",
                             "install dpkg and tar") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# bzImage payload compressions Debian uses: magic -> how to decompress (stdin to stdout)
PAYLOADS = {b"\xfd7zXZ\x00": ["xz", "-dc"], b"\x28\xb5\x2f\xfd": ["zstd", "-dcq"], b"\x1f\x8b": ["gzip", "-dc"]}


def bzimage_payload(bzimage: bytes) -> bytes | None:
    """The compressed kernel inside an x86 bzImage (boot protocol >= 2.08: payload_offset/length)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset = int.from_bytes(bzimage[0x248:0x24C], "little")
    length = int.from_bytes(bzimage[0x24C:0x250], "little")
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start:start + length] or None


def _uncompressed(image: Path, dest: Path) -> Path:
    """The ELF vmlinux of a bzImage, made once: QEMU boots it through its PVH entry point, which skips
    the in-guest decompression (seconds under TCG). The bzImage itself when that is not possible."""
    out = dest / "vmlinux"
    if out.is_file():
        return out
    payload = bzimage_payload(image.read_bytes())
    cmd = next((c for magic, c in PAYLOADS.items() if payload and payload.startswith(magic)), None)
    if not cmd or not shutil.which(cmd[0]):
        return image
    res = subprocess.run(cmd, input=payload, capture_output=True)
    # trailing bytes after the stream (the size word) make some decompressors complain: judge the output
    if not res.stdout.startswith(b"\x7fELF"):
        return image
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(res.stdout)
    tmp.rename(out)
    return out


def kernel(pin: Pin, arch: Arch, flavour: str = GENERIC) -> Kernel:
    require_locked(pin)
    pkg = pin.package("image", arch, flavour)
    release = pin.release(arch, flavour)
    dest = paths.cache_dir() / "boot" / "kernels" / f"{pkg.sha256[:16]}_{release}"
    # the vmlinux QEMU boots is made while unpacking, so that the manifest covers it from the start
    uncompressed = arch.qemu.get("boot_uncompressed")
    _extract(pkg, {f"./boot/{arch.image_file}-{release}": arch.image_file,
                   f"./boot/System.map-{release}": "System.map",
                   f"./boot/config-{release}": "config"}, dest,
             finish=(lambda d: _uncompressed(d / arch.image_file, d)) if uncompressed else None)
    image = dest / arch.image_file
    if uncompressed and (dest / "vmlinux").is_file():
        image = dest / "vmlinux"
    return Kernel(pin, arch, release, image, dest / "System.map", dest / "config", pin.flavour_of(arch, flavour).name)


def busybox(pin: Pin, arch: Arch) -> Path:
    """The static busybox of the guest arch, as locked for this pin."""
    require_locked(pin)
    pkg = pin.package("busybox", arch)
    dest = paths.cache_dir() / "boot" / "busybox" / f"{pkg.sha256[:16]}_{arch.debian_arch}"
    # ./bin/busybox before trixie, ./usr/bin/busybox since (merged /usr)
    _extract(pkg, {"./*bin/busybox": "busybox"}, dest)
    return dest / "busybox"


def system_map(pin: Pin, arch: Arch, flavour: str = GENERIC) -> Path | None:
    """System.map of a pinned kernel, or None: Debian ships a one-line stub in the image package ("The
    real System.map is in the linux-image-<version>-dbg package"). The probe map (probemap.py) has the
    running kernel's /proc/kallsyms, in the same format."""
    path = kernel(pin, arch, flavour).system_map
    return path if path.stat().st_size > 4096 else None
