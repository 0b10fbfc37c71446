"""Module specs (kmod.toml) and the validation of everything in them that becomes a file name,
a C identifier, a C string or a package name. Nothing is rendered before a spec validates."""
import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import arch as archmod
from . import inputs
from .errors import UserError
from .schema import REQUIRED, Ctx, in_range, key, keys, one_of, parse

SPEC_NAME = "kmod.toml"
TEMPLATES = ("kprobe", "kretprobe")

# A kernel symbol: a C identifier, optionally with GCC clone suffixes (.isra.0, .constprop.0, .part.0,
# .cold, ...), and an optional +offset (decimal or hex) into the function.
CLONE_SUFFIX = r"(?:\.(?:isra|constprop|part|lto_priv|llvm)\.\d+|\.cold(?:\.\d+)?|\.localalias)"
SYMBOL_RE = re.compile(rf"^(?P<name>[A-Za-z_][A-Za-z0-9_]*{CLONE_SUFFIX}*)(?:\+(?P<offset>0x[0-9a-fA-F]+|\d+))?$")
KSYM_NAME_LEN = 127
# Module names become file names, the kernel's module name (- and _ are the same to the kernel, which
# says _) and, with _ -> -, Debian/RPM package names. MODULE_NAME_LEN is 56 including the NUL.
MODULE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,54}$")
# Versions must be valid for dkms, Debian and RPM alike: no hyphen (revision separator), no "..".
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~]{0,63}$")
LICENSE_RE = re.compile(r"^[A-Za-z0-9 /.+-]{1,64}$")
MAX_ARGS = 6


@dataclass(frozen=True)
class Probe:
    symbol: str
    offset: int = 0

    def __str__(self) -> str:
        return self.symbol + (f"+{self.offset:#x}" if self.offset else "")


def parse_probe(text: str) -> Probe:
    if not isinstance(text, str) or len(text) > KSYM_NAME_LEN + 20:
        raise UserError(f"symbol {text!r} is not a kernel symbol",
                        "use a C identifier, optionally with .isra.N/.constprop.N/.part.N/.cold and +OFFSET")
    m = SYMBOL_RE.fullmatch(text)
    if not m or len(m.group("name")) > KSYM_NAME_LEN:
        raise UserError(f"symbol {text!r} is not a kernel symbol",
                        "use a C identifier, optionally with .isra.N/.constprop.N/.part.N/.cold and +OFFSET")
    return Probe(m.group("name"), int(m.group("offset"), 0) if m.group("offset") else 0)


def kernel_name(name: str) -> str:
    return name.replace("-", "_")


def check_name(name) -> str:
    if not isinstance(name, str) or not MODULE_RE.fullmatch(name) or name.endswith("-"):
        raise UserError(f"module name {name!r} is invalid",
                        "use 1-55 characters: lowercase letters, digits, _ and -, starting with a letter")
    return name


def check_version(version) -> str:
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or ".." in version:
        raise UserError(f"version {version!r} is invalid",
                        "start with a digit; use letters, digits, '.', '+', '~' only (no '-', no '..')")
    return version


# Checks of single keys (ctx: kmod.schema.Ctx; ctx.data is the spec's folder). Rules that tie several
# keys together are in _check_module.
def _name(value, ctx):
    return check_name(value)


def _version(value, ctx):
    return check_version(value)


def _license(value, ctx):
    if not LICENSE_RE.fullmatch(value):
        raise ctx.error(f"= {value!r} is invalid", 'use e.g. "GPL" or "Dual BSD/GPL"')
    return value


def _one_line(limit: int, forbidden: str, what: str):
    def check(value, ctx):
        if len(value) > limit or any(c in value for c in forbidden):
            raise ctx.error(f"must be {what}")
        return value
    return check


def _probes(value, ctx):
    probes = tuple(parse_probe(s) for s in value)
    if len({str(p) for p in probes}) != len(probes):
        raise ctx.error("lists a symbol twice")
    return probes


def _arches(value, ctx):
    return tuple(dict.fromkeys(archmod.get(a).name for a in value))  # aliases and repeats collapse


def _source(value, ctx):
    src = (Path(ctx.data) / value).resolve()
    if not src.is_dir():
        raise ctx.error(f"= {value!r} is not a folder")
    return src


MAKE_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A make variable's value survives dkms's two evaluations: no spaces, quotes, globs or $(...)
MAKE_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9_./:=+,@%-]|\$\{[a-z_]+\})*$")
TARGET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SUBDIR_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*(/[A-Za-z0-9_+-][A-Za-z0-9_.+-]*)*$")


def _make_vars(value, ctx):
    for k, v in value.items():
        if not MAKE_VAR_RE.fullmatch(k) or not MAKE_VALUE_RE.fullmatch(v):
            raise ctx.error(f"{k} = {v!r} cannot be passed to make safely",
                            "a variable name, and a value of letters, digits, ./:=+,@%- and ${kernelver}-style "
                            "references to dkms's variables")
    return tuple(value.items())


def _make_target(value, ctx):
    if value and not TARGET_RE.fullmatch(value):
        raise ctx.error(f"= {value!r} is not a make target", 'e.g. "all"')
    return value


def _build_dir(value, ctx):
    if value and (not SUBDIR_RE.fullmatch(value) or ".." in value.split("/")):
        raise ctx.error(f"= {value!r} is not a subfolder of the source", 'e.g. "src"')
    return value.rstrip("/")


def _expect(value, ctx):
    if any(c in value for c in "\n\r\0") or len(value) > 200:
        raise ctx.error("must be one line (a regex the console shows when a probe fires)")
    try:
        re.compile(value)
    except re.error as e:
        raise ctx.error(f"= {value!r} is not a regex: {e}") from None
    return value


@dataclass(frozen=True)
class Module:
    """One [[module]] table. Adding a key is one line here (type, default, doc, check)."""
    name: str = key(REQUIRED, "file name, C identifier and (with _ -> -) package name", check=_name)
    version: str = key("0.1.0", "the version dkms, Debian and RPM see", check=_version)
    license: str = key("GPL", "MODULE_LICENSE; the kprobe API is GPL-only", check=_license)
    description: str = key("", "one line for modinfo and the packages",
                           check=_one_line(200, '"\\\n\r\0', "one line of at most 200 characters without "
                                           "quotes or backslashes"))
    template: str = key("kprobe", "kprobe or kretprobe (a hand-written `source` has none)",
                        check=one_of(*TEMPLATES))
    probes: tuple[Probe, ...] = key((), "symbols to probe: NAME, NAME.isra.0, NAME+0x10", name="symbols",
                                    toml=list[str], check=_probes)
    record_args: int = key(0, "kprobe: log the first N arguments, rate-limited", check=in_range(0, MAX_ARGS))
    record_retval: bool = key(False, "kretprobe: log the return value and the call's duration")
    maxactive: int = key(0, "kretprobe: instances at once (0 lets the kernel choose)", check=in_range(0, 4096))
    arches: tuple[str, ...] = key((), "limit to these arches (default: all)", check=_arches)
    source: Path | None = key(None, "a hand-written source folder (with a Kbuild or Makefile)", check=_source)
    trigger: str = key("", "boot test: a shell command that makes the probed path run",
                       check=_one_line(4096, "\n\r\0", "a one-line shell command"))
    # Hand-written sources: how make is called, for kmod's build and the generated dkms.conf alike.
    make_vars: tuple[tuple[str, str], ...] = key((), "NAME = VALUE on make's command line", toml=dict[str, str],
                                                 check=_make_vars)
    make_target: str = key("", "run the source's own Makefile with this target (else kbuild)", check=_make_target)
    build_dir: str = key("", "the subfolder to build in (kbuild's M=, or make -C)", check=_build_dir)
    expect: str = key("", "boot test: a console line (regex) that proves a probe fired", check=_expect)
    replaces_in_tree: bool = key(False, "the name is that of a pinned kernel's own module, and this module "
                                        "is meant to replace it")
    spec_dir: Path = field(default=Path("."), compare=False)

    @property
    def package_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def kernel_name(self) -> str:
        """The name the kernel knows the module by (/sys/module/NAME, lsmod, rmmod)."""
        return kernel_name(self.name)

    @property
    def symbols(self) -> list[str]:
        return [p.symbol for p in self.probes]


# Keys a template gives meaning to, and keys only a hand-written source has a use for.
TEMPLATE_KEYS = ("template", "record_args", "record_retval", "maxactive")
SOURCE_KEYS = ("make_vars", "make_target", "build_dir")


def _check_module(m: Module, given: set[str], where: str) -> Module:
    """The rules between keys."""
    from . import intree
    if intree.normal(m.name) in intree.names() and not m.replaces_in_tree:
        raise UserError(f"{where}: {m.name!r} is the name of an in-tree module of the pinned kernels; "
                        "installed to /updates/dkms it would override the kernel's own",
                        "rename the module, or set replaces_in_tree = true if it replaces that module on purpose")
    if m.source is not None:
        extra = sorted(given & set(TEMPLATE_KEYS))
        if extra:
            raise UserError(f"{where}: {extra[0]} does not apply to a hand-written source",
                            f"remove {extra[0]}, or remove source to use a template")
        ignored = sorted(given & set(SOURCE_KEYS))
        if ignored and (m.source / "dkms.conf").exists():
            # its own dkms.conf is what kmod's build and the package's dkms run (MAKE[0], BUILT_MODULE_*):
            # a spec key that would have said the same thing otherwise is silently without effect
            raise UserError(f"{where}: {ignored[0]} is not used: the source has its own dkms.conf, whose MAKE[0] "
                            "and BUILT_MODULE_LOCATION say how it is built",
                            f"remove {ignored[0]}, or put it in the source's dkms.conf (e.g. MAKE[0]=\"make "
                            "-C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build "
                            "VAR=value\")")
        if m.build_dir and not (m.source / m.build_dir).is_dir():
            raise UserError(f"{where}: build_dir {m.build_dir!r} is not a subfolder of the source", 'e.g. "src"')
        if not ((m.source / "dkms.conf").exists()
                or any((m.source / m.build_dir / f).exists() for f in ("Kbuild", "Makefile"))):
            raise UserError(f"{where}: source has no dkms.conf, and no Kbuild or Makefile"
                            + (f" in build_dir {m.build_dir!r}" if m.build_dir else ""))
        return replace(m, template="")
    extra = sorted(given & set(SOURCE_KEYS))
    if extra:
        raise UserError(f"{where}: {extra[0]} is for a hand-written source", 'add source = "FOLDER"')
    if not m.probes:
        raise UserError(f"{where}: no symbols to probe", 'add symbols = ["kernel_clone"]')
    if m.template == "kretprobe":
        if any(p.offset for p in m.probes):
            raise UserError(f"{where}: a kretprobe attaches at function entry; remove the +offset")
        if m.record_args:
            raise UserError(f"{where}: record_args is for kprobes; a kretprobe records record_retval")
    else:
        if m.record_args and any(p.offset for p in m.probes):
            raise UserError(f"{where}: record_args reads arguments at function entry; "
                            "it cannot be used with a +offset probe")
        if m.record_retval:
            raise UserError(f"{where}: record_retval needs template = \"kretprobe\"")
        if m.maxactive:
            raise UserError(f"{where}: maxactive is for kretprobes", "remove it, or set template = \"kretprobe\"")
    return m


def parse_module(raw, spec_dir: Path, where: str) -> Module:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        where = f"module {raw['name']!r}"
    m = Module(**parse(Module, raw, where, data=spec_dir), spec_dir=spec_dir)
    return _check_module(m, set(raw), where)


KERNEL_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,2}$")
MAINTAINER_RE = re.compile(r"^[A-Za-z0-9 .,'_-]{1,80} <[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+>$")
HOMEPAGE_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!&'()+,;=%-]{1,200}$")
DEFAULT_MAINTAINER = "kmod packager <kmod@packages.invalid>"  # set yours in [package.MODULE]


def _matching(regex, what: str, example: str):
    def check(value, ctx):
        if not regex.fullmatch(value):
            raise ctx.error(f"= {value!r} is not {what}", f"e.g. {example}")
        return value
    return check


@dataclass(frozen=True)
class Packaging:
    """One optional [package.MODULE] table. `dkms`: the dkms.conf directive a key becomes
    (kmod.package.dkms quotes it)."""
    make: str = key("", "the build command dkms runs", dkms="MAKE[0]")
    pre_build: str = key("", "a script dkms runs before the build", dkms="PRE_BUILD")
    post_build: str = key("", "a script dkms runs after the build", dkms="POST_BUILD")
    build_exclusive_kernel: str = key("", "a regex of the kernel releases dkms builds for",
                                      dkms="BUILD_EXCLUSIVE_KERNEL")
    build_exclusive_kernel_min: str = key("", "the oldest kernel version dkms builds for",
                                          check=_matching(KERNEL_VERSION_RE, "a kernel version", '"6.1"'),
                                          dkms="BUILD_EXCLUSIVE_KERNEL_MIN")
    build_exclusive_kernel_max: str = key("", "the newest kernel version dkms builds for",
                                          check=_matching(KERNEL_VERSION_RE, "a kernel version", '"6.12"'),
                                          dkms="BUILD_EXCLUSIVE_KERNEL_MAX")
    maintainer: str = key(DEFAULT_MAINTAINER, "the packages' maintainer",
                          check=_matching(MAINTAINER_RE, "a valid maintainer", '"Full Name <user@host>"'))
    homepage: str = key("", "an http(s) URL for the packages", check=_matching(HOMEPAGE_RE, "an http(s) URL",
                                                                             '"https://example.org/m"'))

    @property
    def directives(self) -> dict[str, str]:
        """dkms.conf directive -> raw value, for the keys that are set."""
        return {k.meta["dkms"]: getattr(self, k.attr) for k in keys(Packaging)
                if "dkms" in k.meta and getattr(self, k.attr)}


def _list_of_tables(value, ctx):
    return tuple(value)


@dataclass(frozen=True)
class SpecFile:
    """The top level of kmod.toml."""
    default: tuple[str, ...] = key((), "the modules `invoke build` builds without --module (default: the first)")
    module: tuple[dict, ...] = key((), "one [[module]] table per module", toml=list[dict], check=_list_of_tables)
    package: dict[str, dict] = key({}, "[package.MODULE]: how one module is packaged", toml=dict[str, dict])


@dataclass(frozen=True)
class Project:
    path: Path
    modules: dict[str, Module]
    default: tuple[str, ...]
    packaging: dict[str, Packaging] = field(default_factory=dict)  # [package.MODULE] tables

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    def select(self, spec: str | None) -> list[Module]:
        from .datafile import select
        if not spec:
            return [self.modules[n] for n in self.default]
        return select(self.modules, spec, self.module, "--module")

    def module(self, name: str) -> Module:
        if name not in self.modules:
            close = difflib.get_close_matches(name, list(self.modules), n=1)
            raise UserError(f"unknown module {name!r} in {self.path.name}",
                            f"did you mean {close[0]!r}?" if close else f"choose one of: {', '.join(self.modules)}")
        return self.modules[name]


def read(path: Path) -> dict:
    """kmod.toml as a table; every way it cannot be read is one line."""
    path = Path(path)
    try:
        raw = inputs.read(path, "spec", 4 * inputs.MIB, f"a {SPEC_NAME} is a small TOML file (see README)")
    except FileNotFoundError:
        raise UserError(f"no spec file at {path}", f"create a {SPEC_NAME} (see README) or pass --spec") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a spec file", f"pass --spec {path / SPEC_NAME}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start})", "save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None


def load(path: Path) -> Project:
    path = Path(path)
    top = SpecFile(**parse(SpecFile, read(path), path.name))
    spec_dir = path.resolve().parent
    mods = {}
    for i, raw in enumerate(top.module, 1):
        m = parse_module(raw, spec_dir, f"{path.name}: [[module]] number {i}")
        same = next((n for n in mods if kernel_name(n) == m.kernel_name), None)
        if same:
            raise UserError(f"{path.name}: module {m.name} is declared twice" if same == m.name else
                            f"{path.name}: modules {same} and {m.name} are the same name to the kernel "
                            f"({m.kernel_name})", "- and _ are the same in module names: rename one")
        mods[m.name] = m
    if not mods:
        raise UserError(f"{path} declares no [[module]]", 'add one: [[module]] name = "m" symbols = ["kernel_clone"]')
    default = tuple(dict.fromkeys(top.default)) or (next(iter(mods)),)
    for n in default:
        if n not in mods:
            close = difflib.get_close_matches(n, list(mods), n=1)
            raise UserError(f"{path.name}: default names {n!r}, which is not a declared module",
                            f"did you mean {close[0]!r}?" if close else f"declared modules: {', '.join(mods)}")
    packaging = {}
    for name, raw in top.package.items():
        if name not in mods:
            close = difflib.get_close_matches(name, list(mods), n=1)
            raise UserError(f"{path.name}: [package.{name}] names no declared module",
                            f"did you mean [package.{close[0]}]?" if close else
                            f"declared modules: {', '.join(mods)}")
        packaging[name] = Packaging(**parse(Packaging, raw, f"{path.name}: [package.{name}]"))
        _check_packaging(mods[name], packaging[name], f"{path.name}: [package.{name}]")
    return Project(path.resolve(), mods, default, packaging)


def _check_packaging(m: Module, p: Packaging, where: str) -> None:
    """A source with its own dkms.conf is packaged with that dkms.conf (kept, not replaced): a key that
    would become a directive of the generated one has no effect. maintainer and homepage still apply."""
    if m.source is None or not (m.source / "dkms.conf").exists():
        return
    for k in keys(Packaging):
        if "dkms" in k.meta and getattr(p, k.attr):
            raise UserError(f"{where}: {k.name} is not used: module {m.name}'s source has its own dkms.conf, "
                            f"which the package keeps as it is (no {k.meta['dkms']} is written into it)",
                            f"remove {k.name}, or set {k.meta['dkms']} in the source's dkms.conf")


def find(explicit: str | None = None) -> Path:
    """--spec, then $KMOD_SPEC, then kmod.toml in this folder or the nearest parent."""
    if explicit or os.environ.get("KMOD_SPEC"):
        return Path(explicit or os.environ["KMOD_SPEC"])
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / SPEC_NAME).exists():      # anything there is the spec: read() says what is wrong with it
            return d / SPEC_NAME
    raise UserError(f"no {SPEC_NAME} in {here} or its parents", "create one (see README) or pass --spec PATH")


def with_overrides(mod: Module, symbols: str | None) -> Module:
    """--symbol replaces the probed symbols (comma list) of one module."""
    if not symbols:
        return mod
    if mod.source:
        raise UserError(f"module {mod.name} is hand-written; --symbol only applies to templated modules")
    probes = _probes([s.strip() for s in symbols.split(",")], Ctx("--symbol"))
    return _check_module(replace(mod, probes=probes), {"symbols"}, f"module {mod.name!r} with --symbol")
