"""The kernel probe map: a pinned kernel booted with no module dumps /proc/kallsyms and
/sys/kernel/debug/kprobes/blacklist, cached per pin and arch. It is the kernel's own truth: it knows the
symbols of built-in code the way the running kernel names them and what kprobes refuses, which
System.map cannot show. The lint's probe-target rules read it through load() when it is there."""
import base64
import gzip
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .. import atomic, paths
from ..arch import Arch
from ..errors import InfraError
from ..flavour import GENERIC
from ..pins import Pin, require_locked
from ..progress import Progress
from . import initramfs, kernel, qemu

DUMPS = (("kallsyms", "/proc/kallsyms"), ("blacklist", "/sys/kernel/debug/kprobes/blacklist"))
FUNCTION_TYPES = set("tTwW")
FORMAT = 1


def cache_path(pin: Pin, arch: Arch, flavour: str = GENERIC) -> Path:
    require_locked(pin)
    pkg = pin.package("image", arch, flavour)
    return paths.probe_map_dir(pkg.sha256, pin.release(arch, flavour))


@dataclass
class ProbeMap:
    dir: Path

    @property
    def kallsyms_path(self) -> Path:
        """/proc/kallsyms of the booted kernel: "ADDRESS TYPE NAME" lines, the System.map format."""
        return self.dir / "kallsyms"

    @property
    def blacklist_path(self) -> Path:
        """/sys/kernel/debug/kprobes/blacklist: "0xSTART-0xEND<TAB>NAME" lines, same boot's addresses."""
        return self.dir / "blacklist"

    def blacklist_ranges(self) -> list[tuple[int, int, str]]:
        return parse_blacklist(self.blacklist_path.read_text(errors="replace"))

    @cached_property
    def symbols(self) -> dict[str, str]:
        """name -> kallsyms type letter (first one seen; built-in code only, modules are not loaded)."""
        out: dict[str, str] = {}
        for line in (self.dir / "kallsyms").read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3:  # built-in symbols have no [module] column
                out.setdefault(parts[2], parts[1])
        return out

    @cached_property
    def functions(self) -> set[str]:
        return {name for name, t in self.symbols.items() if t in FUNCTION_TYPES}

    @cached_property
    def blacklist(self) -> set[str]:
        """Symbols whose range kprobes refuses ("0xSTART-0xEND\tsymbol" lines)."""
        return {name for _, _, name in parse_blacklist(self.blacklist_path.read_text(errors="replace"))}

    def has(self, symbol: str) -> bool:
        return symbol in self.symbols

    def is_function(self, symbol: str) -> bool:
        return symbol in self.functions

    def blacklisted(self, symbol: str) -> bool:
        return symbol in self.blacklist

    def describe(self, symbol: str) -> str:
        if self.blacklisted(symbol):
            return "in the kprobe blacklist: cannot be probed"
        if not self.has(symbol):
            clones = sorted(s for s in self.functions if s.startswith(symbol + "."))
            return "not in kallsyms" + (f" (compiled as {', '.join(clones[:4])})" if clones else "")
        return f"function (type {self.symbols[symbol]})" if self.is_function(symbol) else \
            f"not a function (type {self.symbols[symbol]})"


def parse_blacklist(text: str) -> list[tuple[int, int, str]]:
    """/sys/kernel/debug/kprobes/blacklist: (start, end, symbol) of each "0xSTART-0xEND<TAB>NAME" line
    (addresses read 0 to whoever may not see kernel pointers; the names are still right)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "-" in parts[0]:
            start, _, end = parts[0].partition("-")
            try:
                out.append((int(start, 16), int(end, 16), parts[1]))
            except ValueError:
                continue
    return out


def load(pin: Pin, arch: Arch, flavour: str = GENERIC) -> ProbeMap | None:
    """The cached map of a pinned kernel, or None when `invoke probe-map` has not made it yet."""
    d = cache_path(pin, arch, flavour)
    return ProbeMap(d) if (d / "meta.json").is_file() else None


def extract_dumps(lines: list[str]) -> dict[str, bytes]:
    """The gzip+base64 blocks (uuencode -m) between KMODBOOT-BEGIN NAME and KMODBOOT-END NAME, decoded."""
    out, current, chunks = {}, None, []
    begin, end = f"{initramfs.MARKER}-BEGIN ", f"{initramfs.MARKER}-END "
    for line in lines:
        if current is None:
            if line.startswith(begin):
                current, chunks = line[len(begin):].strip(), []
        elif line.startswith("begin-base64") or line.strip() == "====":
            continue  # uuencode -m framing
        elif line.startswith(end):
            try:
                out[current] = gzip.decompress(base64.b64decode("".join(chunks)))
            except (ValueError, OSError, EOFError) as e:
                raise InfraError(f"the {current} dump on the console is damaged ({e})") from None
            current = None
        else:
            chunks.append(line.strip())
    return out


def make(pin: Pin, arch: Arch, timeout: float = qemu.DEFAULT_TIMEOUT, flavour: str = GENERIC) -> ProbeMap:
    qemu.require_binary(arch)
    k = kernel.kernel(pin, arch, flavour)
    bb = kernel.busybox(pin, arch)
    dest = cache_path(pin, arch, flavour)
    work = dest.with_name(dest.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    initrd = work / "initramfs.cpio"
    atomic.write_bytes(initrd, initramfs.build(bb, initramfs.render_init(initramfs.InitSpec(dumps=DUMPS))))
    started = time.monotonic()
    run, _accel = qemu.boot(arch, k.image, initrd, (), timeout, log=work / "console.log", flavour=k.flavour)
    dumps = extract_dumps(run.lines)
    missing = [name for name, _ in DUMPS if name not in dumps]
    if missing:
        why = "timed out" if run.timed_out else f"qemu exit code {run.exit_code}"
        raise InfraError(f"probe map of {pin.label(flavour)}/{arch.name}: no {', '.join(missing)} on the console ({why})",
                         f"see {work / 'console.log'}")
    for name, data in dumps.items():
        atomic.write_bytes(work / name, data)
    atomic.write_json(work / "meta.json", {"format": FORMAT, "kernel": pin.name, "flavour": flavour, "arch": arch.name,
                                           "release": pin.release(arch, flavour),
                                           "image_sha256": pin.package("image", arch, flavour).sha256,
                                           "seconds": round(time.monotonic() - started, 3), "at": time.time()})
    initrd.unlink()
    (work / "console.log").unlink()  # megabytes of base64, decoded above
    atomic.replace_dir(work, dest)
    return ProbeMap(dest)


def ensure(kernels: list[tuple], refresh: bool = False, timeout: float | None = None,
           jobs: int | None = None, quiet: bool = False) -> list[ProbeMap]:
    """The maps of `kernels` ((pin, arch) or (pin, arch, flavour)), booting the kernels whose map is not
    cached (in parallel)."""
    timeout = timeout or qemu.DEFAULT_TIMEOUT
    triples = [(k[0], k[1], k[2] if len(k) > 2 else GENERIC) for k in kernels]
    key = lambda p, a, f: (p.name, a.name, f)  # noqa: E731
    found = {key(*t): (None if refresh else load(*t)) for t in triples}
    todo = [t for t in triples if found[key(*t)] is None]
    if todo:
        with Progress("probe-map", [f"{p.label(f)}/{a.name}" for p, a, f in todo], quiet) as prog:
            def one(t):
                p, a, f = t
                row = f"{p.label(f)}/{a.name}"
                prog.update(row, "running")
                m = make(p, a, timeout, f)
                found[key(*t)] = m
                prog.update(row, "ok", f"{len(m.functions)} functions, {len(m.blacklist)} blacklisted")
            import os

            from ..parallel import parallel
            qemu.allow()
            parallel(one, todo, min(jobs or os.cpu_count() or 1, len(todo)), on_abort=lambda: qemu.kill_all(stop=True))
    return [found[key(*t)] for t in triples]
