"""The kernel a module is checked against: its arch, vermagic, exports (Module.symvers) and symbols
(System.map).

A target is a pin name (the locked linux-headers and linux-image packages of that pin are fetched and
the few files needed are extracted into the cache), or a path: a kernel headers tree (Module.symvers,
.config, include/config/kernel.release), an unpacked image (boot/System.map-*), a System.map or a
Module.symvers file. What was read is kept as one JSON file per pin and arch (data, never code: a
planted cache cannot run anything), so later runs load it in milliseconds.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import arch as archmod
from .. import atomic, filelock, paths, pins
from ..errors import InfraError, UserError
from ..flavour import GENERIC
from . import ruledata

FORMAT = 9   # bump when the cached layout changes
CLONE_RE = re.compile(r"^(?P<base>[^.]+)\.(?:isra|constprop|part|lto_priv|llvm)(?:\.\d+)*")
TEXT_TYPES = frozenset("TtWw")


@dataclass
class KernelTarget:
    name: str                                   # what messages call it: "bookworm-6.1 (6.1.0-56-amd64)"
    arch: str | None = None
    release: str | None = None
    vermagic: str | None = None
    # name -> (crc, GPL-only?, namespace, owner: "vmlinux" or the in-tree module's path in the tree)
    exports: dict[str, tuple[int | None, bool, str, str]] | None = None
    allow_missing_namespaces: bool = False     # CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS
    entry_skip: int = 0                         # bytes a probe must skip at a function's entry (arch data)
    text: dict[str, int] | None = None          # System.map text symbols -> address
    blacklist: set[str] = field(default_factory=set)           # NOKPROBE_SYMBOL (_kbl_addr_*)
    ranges: list[tuple[int, int, str]] = field(default_factory=list)  # blacklisted text ranges
    clones: dict[str, list[str]] = field(default_factory=dict)  # base name -> its .isra/.constprop/... clones
    symbols_from: str | None = "System.map"
    probe_map_file: str | None = None          # the kallsyms this was read from, to notice a new map
    probe_map_stat: tuple | None = None
    how_to_get_symbols: str = ""
    _grams: dict | None = field(default=None, repr=False, compare=False)   # see close_names; not cached
    _gpl_only: frozenset | None = field(default=None, repr=False, compare=False)
    # why the booted kernel's symbols could not be had (QEMU missing): the check is skipped as a warning
    symbols_unavailable: str = field(default="", compare=False)
    # text, clones, blacklist and ranges not read yet (a pin's second cache file; see load_pin)
    symbols_deferred: bool = field(default=False, compare=False)

    def gpl_only(self) -> frozenset[str]:
        """The GPL-only exports; worked out once per target (every module of a run asks)."""
        if self._gpl_only is None:
            self._gpl_only = frozenset(n for n, v in (self.exports or {}).items() if v[1])
        return self._gpl_only

    def in_blacklisted_range(self, addr: int) -> str | None:
        for lo, hi, name in self.ranges:
            if lo <= addr < hi:
                return name
        return None

    def to_json(self) -> dict:
        return {"format": FORMAT, "name": self.name, "arch": self.arch, "release": self.release,
                "vermagic": self.vermagic, "allow_missing_namespaces": self.allow_missing_namespaces,
                "entry_skip": self.entry_skip,
                "exports": None if self.exports is None else {k: list(v) for k, v in self.exports.items()},
                "text": self.text, "blacklist": sorted(self.blacklist), "ranges": self.ranges,
                "clones": self.clones, "symbols_from": self.symbols_from,
                "probe_map_file": self.probe_map_file, "probe_map_stat": self.probe_map_stat,
                "how_to_get_symbols": self.how_to_get_symbols}

    @classmethod
    def from_json(cls, d, exports: dict | None = None) -> "KernelTarget":
        """The inverse of to_json; anything of the wrong shape raises ValueError (a damaged entry).
        `exports`: d's export table already made into tuples (shared, read-only: see _read_json)."""
        try:
            if d["format"] != FORMAT:
                raise ValueError("old format")
            text, clones = d["text"], d["clones"]
            if exports is None:
                exports = _exports_table(d["exports"])
            if not all(isinstance(x, (dict, type(None))) for x in (exports, text, clones)):
                raise TypeError("not a table")
            return cls(name=str(d["name"]), arch=d["arch"], release=d["release"], vermagic=d["vermagic"],
                       exports=exports,
                       allow_missing_namespaces=bool(d["allow_missing_namespaces"]),
                       entry_skip=int(d["entry_skip"]),
                       text=text, blacklist=set(d["blacklist"]),
                       ranges=[(int(a), int(b), str(n)) for a, b, n in d["ranges"]],
                       clones=clones or {}, symbols_from=d["symbols_from"],
                       probe_map_file=d["probe_map_file"],
                       probe_map_stat=tuple(d["probe_map_stat"]) if d["probe_map_stat"] else None,
                       how_to_get_symbols=str(d["how_to_get_symbols"]))
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"damaged target cache ({type(e).__name__})") from None


def _exports_table(exports):
    if not isinstance(exports, (dict, type(None))):
        raise TypeError("not a table")
    return None if exports is None else dict(zip(exports, map(tuple, exports.values())))


class TargetSpec:
    """What --target named; resolves to a KernelTarget per module arch (a pin has one per arch; PIN-FLAVOUR,
    e.g. bookworm-6.1-rt, names a flavour of it)."""

    def __init__(self, spec: str):
        self.spec = spec
        self._cache: dict[str, KernelTarget | None] = {}
        path = Path(spec).expanduser()
        if path.exists():
            self.pin = None
            self.path = path.resolve()
            self._fixed = from_path(self.path)
            st = self.path.stat()
            self.key = f"path:{self.path}:{st.st_mtime_ns}:{st.st_size}"
        else:
            self.path = None
            pin, self.flavour = pins.get_label(spec)
            self.pin = pins.require_locked(pin)
            self._fixed = None
            self._arches = [a for a in self.pin.arches if self.pin.has(archmod.get(a), self.flavour)]
            # A probe map made later changes what the probe-target rules can see: part of the key.
            maps = [_stat_of(str(paths.probe_map_dir(self.pin.package("image", archmod.get(a), self.flavour).sha256,
                                                     self.pin.release(archmod.get(a), self.flavour)) / "meta.json"))
                    for a in self._arches]
            # so is whether QEMU is there to make one (without it the check is skipped, with it not)
            qemu = [shutil.which(archmod.get(a).qemu["binary"]) is not None for a in self._arches]
            self.key = "pin:" + hashlib.sha256(repr((self.flavour, self.pin.lock_entry(), maps, qemu))
                                               .encode()).hexdigest()[:16]

    def arches(self) -> list[str]:
        if self.pin:
            return list(self._arches)
        return [self._fixed.arch] if self._fixed.arch else []

    def for_arch(self, arch_name: str | None) -> KernelTarget | None:
        """The target for a module of this arch; None when a pin has no such arch (arch-mismatch)."""
        if self._fixed is not None:
            return self._fixed
        if arch_name not in self._arches:
            return None
        if arch_name not in self._cache:
            self._cache[arch_name] = load_pin(self.pin, archmod.get(arch_name), self.flavour)
        return self._cache[arch_name]

    def with_symbols(self, arch_name: str) -> KernelTarget | None:  # noqa: C901
        """The target of this arch with the booted kernel's symbols. A pin without a cached probe map
        gets one now: one short boot per pin and arch, under a lock (parallel lints and build cells boot
        it once), cached for every later run. Only when QEMU is not installed is it skipped, and the
        target then says why (probe-targets-unchecked becomes a warning)."""
        t = self.for_arch(arch_name)
        if self.pin is None or t is None:
            return t
        a = archmod.get(arch_name)
        if t.symbols_deferred and not load_symbols(self.pin, a, t, self.flavour):
            t = self._cache[arch_name] = load_pin(self.pin, a, self.flavour, symbols=True)
        if t.text is not None:
            return t
        from ..boot import probemap, qemu
        from ..progress import log
        import time
        try:
            qemu.require_binary(a)
        except InfraError:
            t.symbols_unavailable = (f"{a.qemu['binary']} is not installed, so kmod could not boot "
                                     f"{self.pin.label(self.flavour)} once to read its symbols and kprobe blacklist; "
                                     f"install {a.qemu['package']} for the check")
            return t
        f, label = self.flavour, self.pin.label(self.flavour)
        dest = probemap.cache_path(self.pin, a, f)
        with filelock.locked(dest.with_name(dest.name + ".lock")):
            if probemap.load(self.pin, a, f) is None:
                log(f"lint: booting {label}/{a.name} once to read its symbols and kprobe blacklist "
                    f"(the probe map; cached for later runs)")
                started = time.monotonic()
                m = probemap.make(self.pin, a, flavour=f)
                log(f"lint: probe map of {label}/{a.name}: {len(m.functions)} functions, "
                    f"{len(m.blacklist)} blacklisted ({time.monotonic() - started:.1f}s)")
        self._cache[arch_name] = load_pin(self.pin, a, f, symbols=True)
        return self._cache[arch_name]

    def prepare(self, arch_names) -> None:
        """Load (download, extract) everything before worker processes fork, so they share it (the
        GPL-only table too, which every module's license rule asks for)."""
        for a in arch_names:
            if a:
                t = self.for_arch(a)
                if t is not None:
                    t.gpl_only()


# ----------------------------------------------------------------------------------------------------
# parsing

def parse_symvers(text: str) -> dict[str, tuple[int | None, bool, str, str]]:
    """Module.symvers: CRC, symbol, owner (vmlinux or the in-tree module), export kind, namespace."""
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        try:
            crc = int(parts[0], 16)
        except ValueError:
            crc = None
        out[parts[1]] = (crc, parts[3].endswith("_GPL"), parts[4].strip() if len(parts) > 4 else "", parts[2])
    return out


def parse_system_map(text: str, target: KernelTarget) -> None:
    data = ruledata.load("kprobes")
    prefix = data["blacklist_prefix"]
    marks = {}
    wanted = {s for pair in data["blacklist_ranges"] for s in pair[:2]}
    textsyms: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        addr_s, typ, name = parts[0], parts[1], parts[2]
        if name in wanted:
            marks[name] = int(addr_s, 16)
        if name.startswith(prefix):
            target.blacklist.add(name[len(prefix):])
        if typ in TEXT_TYPES:
            try:
                textsyms.setdefault(name, int(addr_s, 16))
            except ValueError:
                continue
    target.text = textsyms
    for start, end, label in data["blacklist_ranges"]:
        if start in marks and end in marks:
            target.ranges.append((marks[start], marks[end], label))
    for name in textsyms:
        m = CLONE_RE.match(name)
        if m:
            target.clones.setdefault(m.group("base"), []).append(name)


def _config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip('"')
    return out


def vermagic_from_config(release: str, config: dict[str, str]) -> str:
    """include/linux/vermagic.h, from the config of the kernel."""
    words = [release]
    if config.get("CONFIG_SMP") == "y":
        words.append("SMP")
    # include/linux/vermagic.h tests PREEMPT_BUILD (PREEMPT before 5.14) first: an rt kernel that also
    # sets it (6.12) says "preempt", one that does not (5.10, 6.1) "preempt_rt"
    if config.get("CONFIG_PREEMPT_BUILD") == "y" or config.get("CONFIG_PREEMPT") == "y":
        words.append("preempt")
    elif config.get("CONFIG_PREEMPT_RT") == "y":
        words.append("preempt_rt")
    if config.get("CONFIG_MODULE_UNLOAD") == "y":
        words.append("mod_unload")
    if config.get("CONFIG_MODVERSIONS") == "y":
        words.append("modversions")
    arch = archmod.by_config(config)
    if arch is not None:
        words += arch.vermagic_suffix(config)   # MODULE_ARCH_VERMAGIC, from the arch's data
    return " ".join(words)


def _entry_skip(config: dict[str, str]) -> int:
    """Bytes a kprobe must skip at a function's entry on this kernel (an ftrace site it cannot probe)."""
    arch = archmod.by_config(config)
    return arch.ftrace_entry_offset(config) if arch else 0


def _arch_from_config(config: dict[str, str]) -> str | None:
    arch = archmod.by_config(config)
    return arch.name if arch else None


def from_path(path: Path) -> KernelTarget:
    t = KernelTarget(name=str(path))
    found = False
    if path.is_file():
        text = path.read_text(errors="replace")
        if "\tEXPORT_SYMBOL" in text[:4096]:
            t.exports = parse_symvers(text)
        else:
            parse_system_map(text, t)
            if not t.text:
                raise UserError(f"{path} is neither a System.map nor a Module.symvers",
                                "give a pin name, a kernel headers tree, a System.map or a Module.symvers")
        return t
    if (path / "Module.symvers").is_file():
        t.exports = parse_symvers((path / "Module.symvers").read_text(errors="replace"))
        found = True
    maps = [path / "System.map", *sorted(path.glob("System.map-*")), *sorted((path / "boot").glob("System.map-*"))]
    for m in maps:
        if m.is_file():
            parse_system_map(m.read_text(errors="replace"), t)
            found = True
            break
    config = {}
    for c in [path / ".config", *sorted((path / "boot").glob("config-*"))]:
        if c.is_file():
            config = _config(c.read_text(errors="replace"))
            break
    release_file = path / "include/config/kernel.release"
    if release_file.is_file():
        t.release = release_file.read_text().strip()
    elif maps and maps[-1].name.startswith("System.map-"):
        t.release = maps[-1].name[len("System.map-"):]
    t.arch = _arch_from_config(config)
    t.entry_skip = _entry_skip(config)
    t.allow_missing_namespaces = config.get("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS") == "y"
    if t.release and config:
        t.vermagic = vermagic_from_config(t.release, config)
    if not found:
        raise UserError(f"{path} has no Module.symvers or System.map",
                        "give a pin name, a kernel headers tree (/usr/src/linux-headers-*), or a System.map")
    if t.release:
        t.name = f"{path} ({t.release})"
    return t


# ----------------------------------------------------------------------------------------------------
# pins: fetch the locked packages and keep what the rules need

def _extract(deb: Path, dest: Path, patterns: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", *patterns], stdin=dpkg.stdout,
                             capture_output=True)
        dpkg.stdout.close()
        rc = dpkg.wait()
    except FileNotFoundError as e:
        raise InfraError(f"cannot unpack {deb.name}: {e.filename} is not installed", "apt-get install dpkg tar")
    if rc != 0:
        raise InfraError(f"cannot unpack {deb.name}: dpkg-deb exited with {rc}", "delete it from the cache and retry")
    if tar.returncode not in (0, 2):   # 2: a pattern matched nothing, which callers check themselves
        raise InfraError(f"cannot unpack {deb.name}: {tar.stderr.decode(errors='replace').strip()[:200]}")


def image_tree(pin: pins.Pin, arch: archmod.Arch, flavour: str = GENERIC) -> Path:
    """The whole linux-image package of a pin, unpacked once into the cache (System.map, lib/modules).
    Each use checks the tree against the manifest of its files (kmod.archive.unpacked); one that differs
    is unpacked again from the verified .deb, with a one-line note. The unpacking runs under a lock, so
    two builds that need it at once unpack it once."""
    from ..archive import unpacked
    pkg = pin.package("image", arch, flavour)
    dest = paths.cache_dir() / "lint" / "trees" / f"{pkg.sha256[:16]}_{pkg.name}"
    if (dest / ".complete").exists() and not unpacked.check(dest):
        return dest
    with filelock.locked(dest.with_name(dest.name + ".lock")):
        why = unpacked.check(dest) if (dest / ".complete").exists() else None
        if why == "":
            return dest      # another thread or process unpacked it while we waited
        from ..archive import fetch   # urllib and ssl: imported only when something must be downloaded
        from ..progress import log
        if why:
            unpacked.note(pkg.basename, why)
        else:
            log(f"lint: fetching and unpacking {pkg.basename} ({pkg.size >> 20} MiB) once, for the target checks")
        deb = fetch.fetch(pkg)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack."))
        try:
            _extract(deb, tmp, ["*"])
            (tmp / ".complete").write_text(pkg.sha256 + "\n")
            unpacked.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def headers_files(pin: pins.Pin, arch: archmod.Arch, flavour: str = GENERIC) -> tuple[str, str]:
    """(Module.symvers, .config) of the pin's linux-headers package for this arch."""
    pkg = pin.package("headers", arch, flavour)
    from ..archive import fetch
    deb = fetch.fetch(pkg)
    with tempfile.TemporaryDirectory(dir=paths.cache_dir()) as tmp:
        _extract(deb, Path(tmp), ["*/Module.symvers", "*/.config"])
        symvers = list(Path(tmp).rglob("Module.symvers"))
        config = list(Path(tmp).rglob(".config"))
        if not symvers:
            raise InfraError(f"{pkg.basename} has no Module.symvers", "the lock points at an unexpected package")
        return symvers[0].read_text(errors="replace"), config[0].read_text(errors="replace") if config else ""


def modules_dir(tree: Path) -> Path:
    """lib/modules of an unpacked image (usr/lib/modules since trixie's merged /usr)."""
    for d in (tree / "lib" / "modules", tree / "usr" / "lib" / "modules"):
        if d.is_dir():
            return d
    return tree / "lib" / "modules"


def _first_vermagic(tree: Path) -> str | None:
    from .elf import BadElf, parse
    from .files import SUFFIXES, Unreadable, read_module
    for root, _dirs, files in os.walk(modules_dir(tree)):
        for f in sorted(files):
            if f.endswith(SUFFIXES):
                try:
                    v = parse(read_module(Path(root, f))).modinfo_values("vermagic")
                except (BadElf, Unreadable):
                    continue
                if v:
                    return v[0]
    return None


def _probe_map(pin: pins.Pin, arch: archmod.Arch, flavour: str = GENERIC):
    """The booted kernel's /proc/kallsyms and kprobe blacklist (`invoke probe-map`), when cached.
    Debian's linux-image ships a placeholder System.map (the real one is in the -dbg package), so
    this is where the probe-target rules get their symbols from."""
    try:
        from ..boot import probemap
    except ImportError:
        return None
    try:
        return probemap.load(pin, arch, flavour)
    except Exception:   # a damaged map is as good as none: the rules say the targets were not checked
        return None


def _stat_of(path: str | None) -> tuple | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st else None


SYMBOL_FIELDS = ("text", "clones", "blacklist", "ranges")


def _cache_files(pin: pins.Pin, arch: archmod.Arch, flavour: str = GENERIC) -> tuple[Path, Path]:
    key = hashlib.sha256(f"{FORMAT}{pin.package('headers', arch, flavour).sha256}"
                         f"{pin.package('image', arch, flavour).sha256}".encode()).hexdigest()[:16]
    cached = paths.cache_dir() / "lint" / "targets" / f"{pin.label(flavour)}-{arch.name}-{key}.json"
    return cached, cached.with_suffix(".symbols.json")


# The target files this process has read: path -> (stat, what was made of them). A build lints each of its
# cells, preflight and the benchmarks call lint_paths again and again, and each call decoded the pin's
# whole export table (about 30,000 entries: 20 ms, a tenth of a package's lint) anew. A file that
# changed (another stat) is read again. What is kept is shared, read-only, by the targets made from it:
# every KernelTarget still gets its own object and its own sets and lists (with_symbols and preflight
# change those), so no run sees another's.
_READ: dict[str, tuple[tuple, object]] = {}
_READ_LOCK = threading.Lock()


def _read_json(path: Path, make):
    st = os.stat(path)
    key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    with _READ_LOCK:
        hit = _READ.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    made = make(json.loads(path.read_bytes()))
    with _READ_LOCK:
        _READ[str(path)] = (key, made)
    return made


def _target_json(d) -> tuple[dict, dict | None]:
    try:
        return d, _exports_table(d["exports"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"damaged target cache ({type(e).__name__})") from None


def _symbols_table(more) -> dict:
    if not isinstance(more, dict) or more.get("format") != FORMAT:
        raise ValueError("damaged symbols")
    text, clones = more["text"], more["clones"]
    if not isinstance(text, (dict, type(None))) or not isinstance(clones, dict):
        raise ValueError("damaged symbols")
    return {"text": text, "clones": clones, "blacklist": frozenset(more["blacklist"]),
            "ranges": tuple((int(a), int(b), str(n)) for a, b, n in more["ranges"])}


def _symbols_json(path: Path) -> dict:
    more = _read_json(path, _symbols_table)
    return {**more, "blacklist": set(more["blacklist"]), "ranges": list(more["ranges"])}


def load_symbols(pin: pins.Pin, arch: archmod.Arch, t: KernelTarget, flavour: str = GENERIC) -> bool:
    """Fill in a deferred target's symbols from their cache file; False when it is missing or damaged."""
    try:
        for k, v in _symbols_json(_cache_files(pin, arch, flavour)[1]).items():
            setattr(t, k, v)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    t.symbols_deferred = False
    return True


def load_pin(pin: pins.Pin, arch: archmod.Arch, flavour: str = GENERIC, symbols: bool = False) -> KernelTarget:
    """The target of a pin, arch and flavour, from the cache when it is there. The kernel's symbols (what
    only the probe-target rules read) are a second file, read only when `symbols` is asked for: most lints
    (a package, a module without probes) need the exports and vermagic alone."""
    cached, cached_symbols = _cache_files(pin, arch, flavour)
    if cached.exists():
        try:
            t = KernelTarget.from_json(*_read_json(cached, _target_json))
            t.symbols_deferred = True
            if symbols and not load_symbols(pin, arch, t, flavour):
                raise ValueError("damaged symbols")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            t = None   # a damaged cache entry is rebuilt, never trusted
        # still valid if made from the probe map that is there now (checked without importing the
        # boot package, which costs more than the whole lint of a small module)
        if t is not None and t.probe_map_file and _stat_of(t.probe_map_file) == t.probe_map_stat:
            return t
        if t is not None and not t.probe_map_file and _probe_map(pin, arch, flavour) is None:
            return t
    pm = _probe_map(pin, arch, flavour)
    release = pin.release(arch, flavour)
    t = KernelTarget(name=f"{pin.label(flavour)} ({release})", arch=arch.name, release=release,
                     how_to_get_symbols=f"run `invoke probe-map --kernel {pin.name} --arch {arch.name} "
                                        f"--flavour {flavour}` once")
    symvers, config = headers_files(pin, arch, flavour)
    t.exports = parse_symvers(symvers)
    tree = image_tree(pin, arch, flavour)
    maps = sorted((tree / "boot").glob("System.map-*"))
    if not maps:
        raise InfraError(f"{pin.package('image', arch, flavour).basename} has no boot/System.map-*")
    parse_system_map(maps[0].read_text(errors="replace"), t)
    if pm is not None:
        t.probe_map_file = str(pm.kallsyms_path)
        t.probe_map_stat = _stat_of(t.probe_map_file)
        parse_system_map(pm.kallsyms_path.read_text(errors="replace"), t)
        t.blacklist |= pm.blacklist
        t.ranges += [(a, b, f"the kprobe blacklist ({name})") for a, b, name in pm.blacklist_ranges()]
        t.symbols_from = "the booted kernel's /proc/kallsyms (probe map)"
    elif not t.text or len(t.text) < 100:
        t.text = None          # the placeholder System.map: no symbols to check against
        t.symbols_from = None
    t.vermagic = _first_vermagic(tree) or vermagic_from_config(release, _config(config))
    t.allow_missing_namespaces = _config(config).get("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS") == "y"
    t.entry_skip = arch.ftrace_entry_offset(_config(config))
    full = t.to_json()
    atomic.write_text(cached_symbols, json.dumps({"format": FORMAT, **{k: full[k] for k in SYMBOL_FIELDS}},
                                                 separators=(",", ":")))
    atomic.write_text(cached, json.dumps({**full, "text": None, "clones": {}, "blacklist": [], "ranges": []},
                                         separators=(",", ":")))
    return t


GRAM = 4
RARE = 400          # a 4-letter piece found in more names than this says little about similarity
CANDIDATES = 40     # names compared with difflib per missing symbol


def _gram_index(t: KernelTarget) -> dict[str, list[str]]:
    """4-letter piece -> the symbol names that contain it; built once per target and process, the
    first time a probe target is missing (then each lookup costs about a millisecond, not a scan of
    every symbol of the kernel)."""
    if t._grams is None:
        index: dict[str, list[str]] = {}
        for n in t.text or {}:
            for g in {n[i:i + GRAM] for i in range(max(len(n) - GRAM + 1, 1))}:
                index.setdefault(g, []).append(n)
        t._grams = index
    return t._grams


def close_names(t: KernelTarget, name: str, limit: int = 4) -> list[str]:
    """Suggestions for a missing probe target: known renames, clones, then similar spellings."""
    import difflib
    from collections import Counter
    out = []
    renamed = ruledata.load("kprobes").get("renames", {}).get(name)
    if renamed:
        out.append(renamed)
    out.extend(t.clones.get(name, [])[:limit])
    if t.text:
        index = _gram_index(t)
        core = name.strip("_")
        grams = {core[i:i + GRAM] for i in range(max(len(core) - GRAM + 1, 1))}
        lists = sorted((index.get(g, ()) for g in grams), key=len)
        rare = [l for l in lists if 0 < len(l) <= RARE] or [l for l in lists if l][:3]
        votes = Counter(n for l in rare for n in l)
        pool = [n for n, _ in votes.most_common(CANDIDATES)]
        for n in difflib.get_close_matches(name, pool, n=limit, cutoff=0.75):
            if n not in out:
                out.append(n)
    return out[:limit]
