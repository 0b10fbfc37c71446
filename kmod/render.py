"""Specs -> module sources. One cached Jinja2 environment (StrictUndefined: a missing value is a bug,
not an empty string). Files are only rewritten when their content changes, atomically."""
import hashlib
import hmac
import json
import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jinja2

from . import arch as archmod
from . import atomic, nofollow, paths
from . import licenses as licensesmod
from .errors import UserError
from .spec import Module


def c_string(value: str) -> str:
    """A C string literal. Inputs are validated already; escaping here is the second fence."""
    return json.dumps(str(value), ensure_ascii=True)


class _SignedBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates are code, and the cache folder may be shared or planted (a CI cache restored
    from another job): each file carries an HMAC under a key that lives outside the cache (code_key()),
    and one that does not verify is compiled again, never run. An optimisation only: a full or
    read-only place costs a compile, never the run."""

    def __init__(self, directory: Path, key: bytes):
        self.directory, self.key = directory, key

    def _mac(self, bucket, body: bytes) -> bytes:
        return hmac.new(self.key, bucket.key.encode() + b"\0" + body, "sha256").digest()

    def load_bytecode(self, bucket) -> None:
        try:
            data = nofollow.read_bytes(self.directory, bucket.key, "compiled template")
        except (OSError, nofollow.UnsafeFile):
            return
        mac, body = data[:32], data[32:]
        if hmac.compare_digest(mac, self._mac(bucket, body)):
            bucket.bytecode_from_string(body)      # jinja2 then checks the template's own checksum

    def dump_bytecode(self, bucket) -> None:
        body = bucket.bytecode_to_string()
        try:
            atomic.write_bytes(self.directory / bucket.key, self._mac(bucket, body) + body, mode=0o600)
        except OSError:
            pass


def code_key() -> bytes | None:
    """The key that signs compiled templates: 32 random bytes in the user's config folder (not the cache),
    made on first use, mode 0600. None (no bytecode cache) when it cannot be made, or when it is a link,
    not the user's own, or readable by others: then nobody else's key can be trusted either."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg if os.path.isabs(xdg) else os.path.expanduser("~/.config")) / "kmodkit"
    path = base / "cache.key"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            key = f.read()
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or len(key) != 32:
        return None
    return key


@cache
def environment() -> jinja2.Environment:
    # Compiled templates are cached on disk, signed: a no-change build must not pay for compiling them
    # again (the report's templates alone take about 30 ms), and must never run a planted one.
    key = code_key()
    bytecode = None
    if key is not None:
        bytecode = _SignedBytecodeCache(paths.cache_dir() / "jinja2", key)
        (paths.cache_dir() / "jinja2").mkdir(exist_ok=True)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.templates())), bytecode_cache=bytecode,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True,
                             # HTML (the report) is escaped; C, shell and package files are not.
                             autoescape=jinja2.select_autoescape(("html.j2",), default_for_string=False))
    env.filters["c_string"] = c_string
    env.filters["sh"] = shlex.quote  # for the shell scripts we render (image install, guest /init)
    return env


def render_text(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


@dataclass(frozen=True)
class Sources:
    """A module's source folder, the sha256 and mode (0644 or 0755) of each file in it (the build's
    inputs), and what was left out of a hand-written folder and why."""
    module: Module
    dir: Path
    files: dict[str, str]
    modes: dict[str, int] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        doc = {n: [h, self.modes.get(n, 0o644)] for n, h in self.files.items()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@cache
def entry_skips() -> tuple[dict, ...]:
    """The arches whose kernels refuse a kprobe on a function's first byte (an ftrace patch site) unless
    they can probe on ftrace: the arch's CONFIG symbols, the condition and the bytes to skip (arch data)."""
    return tuple({"config": a.kernel_config, "when": a.ftrace_entry_when, "unless": a.ftrace_entry_unless,
                  "bytes": a.ftrace_entry_bytes}
                 for a in archmod.all_arches().values() if a.ftrace_entry_bytes)


@cache
def argument_fallbacks() -> tuple[dict, ...]:
    """The arches that say how to read argument n from pt_regs where regs_get_kernel_argument() is not to
    be had (older kernels of the arch, or an arch whose modules cannot link it: `links` false), with how
    many register arguments there are (arch data)."""
    return tuple({"config": a.kernel_config, "expression": a.argument_expression, "count": len(a.argument_registers),
                  "links": a.argument_api_links}
                 for a in archmod.all_arches().values() if a.argument_expression)


def module_files(m: Module) -> dict[str, str]:
    """File name -> content for a templated module."""
    ctx = dict(m=m, spec_file="kmod.toml", entry_skips=entry_skips(), argument_fallbacks=argument_fallbacks(),
               spdx=licensesmod.get(m.license).spdx,
               description=m.description or f"{m.template} on {', '.join(map(str, m.probes))} (generated by kmod)")
    return {f"{m.name}.c": render_text(f"module/{m.template}.c.j2", **ctx),
            "Kbuild": render_text("module/Kbuild.j2", m=m)}


BUILD_PRODUCTS = (".o", ".ko", ".cmd", ".mod")
MAX_FILES = 20000  # a source folder, not a disk: refuse to walk further


def file_mode(st_mode: int) -> int:
    """Modes kept from a source folder: executable or not (umask and owners play no part)."""
    return 0o755 if st_mode & 0o111 else 0o644


def hand_written_files(root: Path) -> tuple[dict[str, tuple[bytes, int]], list[str]]:
    """relative path -> (content, mode) of a hand-written source folder, and what was left out (why).

    Nothing is followed out of `root`: a symbolic link that stays inside it is read as the file or
    folder it names; one that leads outside (or nowhere) is left out and said so, and so are hard links
    (a second name of a file that may live anywhere), FIFOs, devices and sockets, which are never
    opened. Hidden entries and build products are left out."""
    root = Path(root).resolve()
    out: dict[str, tuple[bytes, int]] = {}
    skipped: list[str] = []

    def walk(real: Path, rel: str, ancestors: frozenset) -> None:
        for entry in sorted(os.scandir(real), key=lambda e: e.name):
            if entry.name.startswith(".") or entry.name.endswith(BUILD_PRODUCTS):
                continue
            name = f"{rel}{entry.name}"
            path = Path(entry.path)
            target = path
            if entry.is_symlink():
                target = Path(os.path.realpath(path))
                if not target.is_relative_to(root) or not target.exists():
                    skipped.append(f"{name}: a symbolic link to {os.readlink(path)}, outside the source folder")
                    continue
            st = target.stat() if target is not path else entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if target in ancestors:
                    skipped.append(f"{name}: a symbolic link to a folder that contains it")
                    continue
                walk(target, name + "/", ancestors | {target})
            elif stat.S_ISREG(st.st_mode):
                if len(out) >= MAX_FILES:
                    raise UserError(f"source folder {root} has more than {MAX_FILES} files",
                                    "point `source` at the module's own folder")
                # read through no link, relative to the folder it was seen in: a file swapped for a link
                # since the scandir, or a hard link (a second name of a file that may live anywhere),
                # is left out and said, never read
                parent, leaf = (target.parent, target.name) if target is not path else (real, entry.name)
                try:
                    data = nofollow.read_bytes(parent, leaf, "source file")
                except nofollow.UnsafeFile as e:
                    skipped.append(f"{name}: {e.message.split(' is ', 1)[-1].split(':')[0]}, left out")
                    continue
                out[name] = (data, file_mode(st.st_mode))
            else:
                skipped.append(f"{name}: not a regular file")

    walk(root, "", frozenset({root}))
    return out, skipped


def render(m: Module, dest: Path) -> Sources:
    """Write the module's sources to `dest` (dist/MODULE/src) with their modes. Unchanged files keep
    their mtime."""
    if m.source is None:
        contents, skipped = {k: (v.encode(), 0o644) for k, v in module_files(m).items()}, []
    else:
        contents, skipped = hand_written_files(m.source)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in [p for p in dest.rglob("*") if (p.is_file() or p.is_symlink())
                  and str(p.relative_to(dest)) not in contents]:
        stale.unlink()
    hashes, modes = {}, {}
    for name, (data, mode) in contents.items():
        path = dest / name
        if path.is_symlink() or not path.is_file() or path.read_bytes() != data:
            if path.is_symlink():
                path.unlink()
            atomic.write_bytes(path, data, mode)
        elif stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
        hashes[name], modes[name] = hashlib.sha256(data).hexdigest(), mode
    for d in sorted((p for p in dest.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            shutil.rmtree(d)
    return Sources(m, dest, hashes, modes, tuple(skipped))
