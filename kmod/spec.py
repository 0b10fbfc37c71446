"""Module specs (kmod.toml) and the validation of everything in them that becomes a file name,
a C identifier, a C string or a package name. Nothing is rendered before a spec validates."""
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import arch as archmod
from .errors import UserError

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


@dataclass(frozen=True)
class Module:
    name: str
    version: str = "0.1.0"
    license: str = "GPL"
    description: str = ""
    template: str = "kprobe"
    probes: tuple[Probe, ...] = ()
    record_args: int = 0          # kprobe: log the first N arguments (rate-limited)
    record_retval: bool = False   # kretprobe: log the return value (rate-limited)
    maxactive: int = 0            # kretprobe: 0 lets the kernel choose
    arches: tuple[str, ...] = ()  # limit to these arches; empty means all
    source: Path | None = None    # a hand-written source folder instead of a template
    trigger: str = ""             # shell command that makes the probed path run (boot test)
    # Hand-written sources: how make is called, for kmod's build and the generated dkms.conf alike.
    make_vars: tuple[tuple[str, str], ...] = ()  # NAME=VALUE on make's command line
    make_target: str = ""         # run the source's own Makefile with this target (else kbuild)
    build_dir: str = ""           # the subfolder to build in (kbuild's M=, or make -C)
    expect: str = ""              # boot test: a console line (regex) that proves a probe fired
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


MAKE_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A make variable's value survives dkms's two evaluations: no spaces, quotes, globs or $(...)
MAKE_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9_./:=+,@%-]|\$\{[a-z_]+\})*$")
TARGET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SUBDIR_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*(/[A-Za-z0-9_+-][A-Za-z0-9_.+-]*)*$")


def _make_fields(raw: dict, name: str, src: Path) -> dict:
    out = {}
    make_vars = raw.get("make_vars", {})
    if not isinstance(make_vars, dict) or not all(isinstance(v, str) for v in make_vars.values()):
        raise UserError(f"module {name}: make_vars must be a table of strings", 'e.g. make_vars = { KVER = "${kernelver}" }')
    for k, v in make_vars.items():
        if not MAKE_VAR_RE.fullmatch(k) or not MAKE_VALUE_RE.fullmatch(v):
            raise UserError(f"module {name}: make_vars {k} = {v!r} cannot be passed to make safely",
                            "a variable name, and a value of letters, digits, ./:=+,@%- and ${kernelver}-style "
                            "references to dkms's variables")
    out["make_vars"] = tuple(make_vars.items())
    target = raw.get("make_target", "")
    if not isinstance(target, str) or target and not TARGET_RE.fullmatch(target):
        raise UserError(f"module {name}: make_target {target!r} is not a make target", 'e.g. "all"')
    out["make_target"] = target
    sub = raw.get("build_dir", "")
    if not isinstance(sub, str) or sub and (not SUBDIR_RE.fullmatch(sub) or ".." in sub.split("/")
                                            or not (src / sub).is_dir()):
        raise UserError(f"module {name}: build_dir {sub!r} is not a subfolder of the source", 'e.g. "src"')
    out["build_dir"] = sub.rstrip("/")
    return out


def _module(raw: dict, spec_dir: Path) -> Module:
    known = {"name", "version", "license", "description", "template", "symbols", "record_args",
             "record_retval", "maxactive", "arches", "source", "trigger", "make_vars", "make_target",
             "build_dir", "expect"}
    name = check_name(raw.get("name"))
    unknown = set(raw) - known
    if unknown:
        raise UserError(f"module {name}: unknown key(s) {', '.join(sorted(unknown))}",
                        f"known keys: {', '.join(sorted(known))}")
    license = raw.get("license", "GPL")
    if not isinstance(license, str) or not LICENSE_RE.fullmatch(license):
        raise UserError(f"module {name}: license {license!r} is invalid", 'use e.g. "GPL" or "Dual BSD/GPL"')
    description = raw.get("description", "")
    if not isinstance(description, str) or any(c in description for c in '"\\\n\r\0') or len(description) > 200:
        raise UserError(f"module {name}: description must be one line without quotes or backslashes")
    arches = tuple(archmod.get(a).name for a in raw.get("arches", []))
    trigger = raw.get("trigger", "")
    if not isinstance(trigger, str) or any(c in trigger for c in "\n\r\0"):
        raise UserError(f"module {name}: trigger must be a one-line shell command")
    expect = raw.get("expect", "")
    if not isinstance(expect, str) or any(c in expect for c in "\n\r\0") or len(expect) > 200:
        raise UserError(f"module {name}: expect must be one line (a regex the console shows when a probe fires)")
    try:
        re.compile(expect)
    except re.error as e:
        raise UserError(f"module {name}: expect {expect!r} is not a regex: {e}") from None
    common = dict(name=name, version=check_version(raw.get("version", "0.1.0")), license=license,
                  description=description, arches=arches, trigger=trigger, expect=expect, spec_dir=spec_dir)
    if "source" in raw:
        src = (spec_dir / str(raw["source"])).resolve()
        if not src.is_dir():
            raise UserError(f"module {name}: source {raw['source']!r} is not a folder")
        make = _make_fields(raw, name, src)
        if not ((src / "dkms.conf").exists() or any((src / make["build_dir"] / f).exists()
                                                     for f in ("Kbuild", "Makefile"))):
            raise UserError(f"module {name}: source {raw['source']!r} has no dkms.conf, and no Kbuild or Makefile"
                            + (f" in build_dir {make['build_dir']!r}" if make["build_dir"] else ""))
        symbols = raw.get("symbols", [])
        return Module(**common, template="", source=src, probes=tuple(parse_probe(s) for s in symbols), **make)
    extra = sorted({"make_vars", "make_target", "build_dir"} & set(raw))
    if extra:
        raise UserError(f"module {name}: {extra[0]} is for a hand-written source", "add source = \"FOLDER\"")
    template = raw.get("template", "kprobe")
    if template not in TEMPLATES:
        raise UserError(f"module {name}: unknown template {template!r}", f"choose one of: {', '.join(TEMPLATES)}")
    symbols = raw.get("symbols")
    if not symbols or not isinstance(symbols, list):
        raise UserError(f"module {name}: no symbols to probe", 'add symbols = ["kernel_clone"]')
    probes = tuple(parse_probe(s) for s in symbols)
    if len({str(p) for p in probes}) != len(probes):
        raise UserError(f"module {name}: a symbol is listed twice")
    record_args = raw.get("record_args", 0)
    if not isinstance(record_args, int) or not 0 <= record_args <= MAX_ARGS:
        raise UserError(f"module {name}: record_args must be 0..{MAX_ARGS}")
    maxactive = raw.get("maxactive", 0)
    if not isinstance(maxactive, int) or not 0 <= maxactive <= 4096:
        raise UserError(f"module {name}: maxactive must be 0..4096")
    if template == "kretprobe":
        if any(p.offset for p in probes):
            raise UserError(f"module {name}: a kretprobe attaches at function entry; remove the +offset")
        if record_args:
            raise UserError(f"module {name}: record_args is for kprobes; a kretprobe records record_retval")
    elif record_args and any(p.offset for p in probes):
        raise UserError(f"module {name}: record_args reads arguments at function entry; "
                        "it cannot be used with a +offset probe")
    elif raw.get("record_retval"):
        raise UserError(f"module {name}: record_retval needs template = \"kretprobe\"")
    return Module(**common, template=template, probes=probes, record_args=record_args,
                  record_retval=bool(raw.get("record_retval", False)), maxactive=maxactive)


@dataclass(frozen=True)
class Project:
    path: Path
    modules: dict[str, Module]
    default: tuple[str, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    def select(self, spec: str | None) -> list[Module]:
        if not spec:
            names = list(self.default)
        elif spec == "all":
            names = list(self.modules)
        else:
            names = [n.strip() for n in spec.split(",")]
        for n in names:
            if n not in self.modules:
                raise UserError(f"unknown module {n!r} in {self.path.name}",
                                f"choose one of: {', '.join(self.modules)}")
        return [self.modules[n] for n in names]


def load(path: Path) -> Project:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no spec file at {path}", f"create a {SPEC_NAME} (see README) or pass --spec") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None
    spec_dir = Path(path).resolve().parent
    mods = {}
    for raw in data.get("module", []):
        m = _module(raw, spec_dir)
        same = next((n for n in mods if kernel_name(n) == m.kernel_name), None)
        if same:
            raise UserError(f"module {m.name} is declared twice in {path}" if same == m.name else
                            f"modules {same} and {m.name} are the same name to the kernel ({m.kernel_name})",
                            "- and _ are the same in module names: rename one")
        mods[m.name] = m
    if not mods:
        raise UserError(f"{path} declares no [[module]]")
    default = tuple(data.get("default", [next(iter(mods))]))
    for n in default:
        if n not in mods:
            raise UserError(f"default module {n!r} is not declared in {path}")
    return Project(Path(path).resolve(), mods, default)


def find(explicit: str | None = None) -> Path:
    """--spec, then $KMOD_SPEC, then kmod.toml in this folder or the nearest parent."""
    if explicit or os.environ.get("KMOD_SPEC"):
        return Path(explicit or os.environ["KMOD_SPEC"])
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / SPEC_NAME).is_file():
            return d / SPEC_NAME
    raise UserError(f"no {SPEC_NAME} in {here} or its parents", "create one (see README) or pass --spec PATH")


def with_overrides(mod: Module, symbols: str | None) -> Module:
    """--symbol replaces the probed symbols (comma list) of one module."""
    if not symbols:
        return mod
    if mod.source:
        raise UserError(f"module {mod.name} is hand-written; --symbol only applies to templated modules")
    probes = tuple(parse_probe(s.strip()) for s in symbols.split(","))
    return _module({"name": mod.name, "version": mod.version, "license": mod.license,
                    "description": mod.description, "template": mod.template,
                    "symbols": [str(p) for p in probes], "record_args": mod.record_args,
                    "record_retval": mod.record_retval, "maxactive": mod.maxactive,
                    "arches": list(mod.arches), "trigger": mod.trigger}, mod.spec_dir)
