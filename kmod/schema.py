"""A typed schema for TOML tables, declared on dataclasses: one line per key (type, default, doc).

    @dataclass(frozen=True)
    class Module:
        name: str = key(REQUIRED, "file name, C identifier and package name", check=check_name)
        record_args: int = key(0, "kprobe: log the first N arguments", check=in_range(0, 6))

`parse(Module, raw, where)` refuses, with one line each: a key the table does not have (naming the
closest valid key), a value of the wrong TOML type (a string where a list belongs is not split into
characters, "false" is not a boolean, true is not an integer), a missing required key, and whatever
the key's `check(value, ctx)` refuses (ctx.key is the key, ctx.data what the caller passed); it
returns the dataclass's keyword arguments. Attributes declared with a plain `field()` are not TOML
keys (the caller fills them in).
"""
import dataclasses
import difflib
import functools
import json
import types
import typing
from pathlib import Path

from .errors import UserError

REQUIRED = dataclasses.MISSING
_META = "kmod.schema"


def key(default=REQUIRED, doc: str = "", *, toml=None, check=None, name: str | None = None, **meta):
    """A dataclass field that is a TOML key. `toml`: its TOML type when that differs from the attribute's
    annotation; `check(value, ctx)` validates (raise UserError) and may convert; `name`: the TOML key
    when it differs from the attribute; `meta`: facts for the consumers (e.g. dkms="MAKE[0]")."""
    md = {_META: {"doc": doc, "toml": toml, "check": check, "name": name, **meta}}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return dataclasses.field(default=default, metadata=md)


@dataclasses.dataclass(frozen=True)
class Key:
    name: str        # in TOML
    attr: str        # on the dataclass
    type: object     # the TOML type: str, int, float, bool, list[str], dict[str, str], list[dict], ...
    default: object
    doc: str
    check: object
    meta: dict

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@functools.cache  # a class's keys never change; the lock alone parses hundreds of packages per run
def keys(cls) -> tuple[Key, ...]:
    """The TOML keys of `cls`: its key() fields; in a plain dataclass (no key() at all), every field."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    plain = not any(_META in f.metadata for f in fields)
    out = []
    for f in fields:
        md = f.metadata.get(_META) or ({"doc": "", "toml": None, "check": None, "name": None} if plain else None)
        if md is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED)
        extra = {k: v for k, v in md.items() if k not in ("doc", "toml", "check", "name")}
        out.append(Key(md["name"] or f.name, f.name, md["toml"] or _toml_type(hints[f.name]), default,
                       md["doc"], md["check"], extra))
    return tuple(out)


@functools.cache
def _by_name(cls) -> dict[str, Key]:
    return {k.name: k for k in keys(cls)}


def _toml_type(tp):
    """The TOML type an attribute annotation reads from: tuple[X, ...] from a list, Path from a string,
    `X | None` from X."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _toml_type(rest[0]) if len(rest) == 1 else tp
    if origin is tuple:
        return list[_toml_type(args[0])]
    if tp is Path:
        return str
    return tp


def describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        inner = args[0] if args else object
        if inner is dict:
            return "an array of tables"
        return {str: "a list of strings", int: "a list of integers"}.get(inner, "a list")
    if origin is dict or tp is dict:
        inner = args[1] if len(args) == 2 else object
        return {dict: "a table of tables", str: "a table of strings"}.get(inner, "a table")
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _toml(value) -> str:
    """A value as it would be written in TOML (for hints)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{...}"


def _given(value) -> str:
    if isinstance(value, bool):
        return f"the boolean {_toml(value)}"
    if isinstance(value, str):
        return f"the string {_toml(value)[:40]}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def conforms(value, tp) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(isinstance(k, str) and conforms(v, args[1]) for k, v in value.items())
    return isinstance(value, tp)


@functools.cache
def _plain_types(cls) -> tuple[frozenset, frozenset, dict] | None:
    """(all names, required names, name -> type) when every key of `cls` is a str, int, float or bool
    without a check: then fits() can tell a good table at the cost of a few dict lookups."""
    ks = keys(cls)
    if any(k.check is not None or k.type not in (str, int, float, bool) for k in ks):
        return None
    return (frozenset(k.name for k in ks), frozenset(k.name for k in ks if k.required),
            {k.name: (int, float) if k.type is float else k.type for k in ks})


def fits(cls, raw) -> bool:
    """True when parse(cls, raw) would accept `raw` (False: call parse() for the one-line reason). For
    data read in bulk on every run, such as the lock's hundreds of packages."""
    plain = _plain_types(cls)
    if plain is None or not isinstance(raw, dict):
        return False
    names, required, types = plain
    if not required <= raw.keys() <= names:
        return False
    return all(isinstance(v, types[k]) and (types[k] is bool or not isinstance(v, bool)) for k, v in raw.items())


def type_error(where: str, k: str, value, tp) -> UserError:
    """`where: KEY must be TYPE, not GIVEN` with a hint that shows the right way to write it."""
    hint = None
    origin = typing.get_origin(tp)
    if origin is list and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        hint = f"write {k} = [{_toml(value)}]"
    elif origin is list and typing.get_args(tp) == (dict,) and isinstance(value, dict):
        hint = f"write [[{k}]], with two brackets, for each entry"
    elif tp is bool and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        hint = f"write {k} = {value.strip().lower()}, without quotes"
    elif tp in (int, float) and isinstance(value, str):
        try:
            hint = f"write {k} = {_toml(tp(value.strip()))}, without quotes"
        except ValueError:
            pass
    elif tp is str and isinstance(value, (int, float, bool)):
        hint = f'write {k} = "{_toml(value)}", in quotes'
    if origin is list and isinstance(value, list):
        return UserError(f"{where}: {k} must be {describe(tp)}, and {_toml(value)[:60]} is not", hint)
    return UserError(f"{where}: {k} must be {describe(tp)}, not {_given(value)}", hint)


def unknown_key(where: str, name: str, valid) -> UserError:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return UserError(f"{where}: unknown key {name!r}", hint)


@dataclasses.dataclass(frozen=True)
class Ctx:
    key: str
    data: object = None  # what the caller gave parse(), e.g. the spec's folder

    def error(self, message: str, hint: str | None = None) -> UserError:
        """`KEY message` (e.g. "record_args = 9 is out of range"): parse() puts the table in front."""
        return UserError(f"{self.key} {message}", hint)


def parse(cls, raw, where: str, data=None) -> dict:
    """Validate the TOML table `raw` against `cls`'s keys; returns the keyword arguments for `cls`."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table, not {_given(raw)}")
    ks = keys(cls)
    by_name = _by_name(cls)
    for name in raw:
        if name not in by_name:
            raise unknown_key(where, name, by_name)
    out = {}
    for k in ks:
        if k.name not in raw:
            if k.required:
                raise UserError(f"{where}: {k.name} is missing", f"{k.name}: {k.doc}" if k.doc else None)
            continue  # the dataclass default
        value = raw[k.name]
        if not conforms(value, k.type):
            raise type_error(where, k.name, value, k.type)
        if k.check is not None:
            try:
                value = k.check(value, Ctx(k.name, data))
            except UserError as e:  # e.g. "unsupported architecture: 'zz'" from a loader: name the key too
                message = e.message if e.message.startswith(k.name) else f"{k.name}: {e.message}"
                raise UserError(f"{where}: {message}", e.hint) from None
        elif typing.get_origin(k.type) is list:
            value = tuple(value)
        out[k.attr] = value
    return out


def in_range(low: int, high: int):
    def check(value, ctx):
        if not low <= value <= high:
            raise ctx.error(f"= {value} is out of range", f"use {low}..{high}")
        return value
    return check


def one_of(*choices: str):
    def check(value, ctx):
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            raise ctx.error(f"= {_toml(value)} is not one of {', '.join(choices)}",
                            f"did you mean {close[0]!r}?" if close else None)
        return value
    return check
