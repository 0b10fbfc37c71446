"""How every task takes its arguments, the same through `invoke` and through the console program.

- Short flags mean one thing everywhere: the few in SHORT_FLAGS, and no others (Invoke would otherwise
  give each task its own first free letter: `-p` was --spec in build and --append in boot-test).
- A task that takes files names one parameter `rest`: it takes every bare word after the task, as a
  shell glob or xargs gives them (`lint dist/*.ko`). Invoke's parser has positional arguments of
  exactly one word (pyinvoke/invoke#760), so `spread()` rewrites those words into the repeatable flag
  Invoke does have (`--paths WORD`) before Invoke parses; kmod.cli's Program calls it.
- `paths()` keeps the old comma-separated form working, except for a word that names an existing file,
  which is taken whole (a file name may have a comma).
"""
import os
from pathlib import Path

import invoke

# The only short flags, each for the same long flag in every task that has it. None of them is one of
# Invoke's own core short flags (-d, -e, -f, -h, -l, -p, -r, -w, ...), which a task's would shadow.
SHORT_FLAGS = {"arch": "a", "kernel": "k", "module": "m", "jobs": "j"}


class Task(invoke.Task):
    """invoke.Task with kmod's rules: SHORT_FLAGS only, and an optional `rest` parameter."""

    def __init__(self, body, rest: str | None = None, **kwargs):
        kwargs["auto_shortflags"] = False
        if rest:
            kwargs["iterable"] = [*(kwargs.get("iterable") or []), rest]
            kwargs.setdefault("positional", [])
        super().__init__(body, **kwargs)
        self.rest = rest

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"] = [*opts["names"], short]
        return opts

    def get_arguments(self, ignore_unknown_help=None):
        # Invoke pops each help text as it builds the arguments; we build them more than once (spread,
        # completion, parsing), and every time the help must still be there.
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help=ignore_unknown_help)
        finally:
            self.help = kept


def task(*args, **kwargs):
    """`@task(...)` for kmod's tasks: invoke.task making a kmod.tasks.args.Task."""
    kwargs.setdefault("klass", Task)
    return invoke.task(*args, **kwargs)


def rest_flags(collection) -> dict[str, str]:
    """Task name (and alias) -> the flag its bare words go to, for the tasks that take words."""
    out = {}
    for name, aliases in collection.task_names.items():
        t = collection[name]
        if getattr(t, "rest", None):
            for n in (name, *aliases):
                out[n] = "--" + t.rest.replace("_", "-")
    return out


def _takes_word(flag: str, context, initial) -> bool:
    """Whether the word after `flag` is that flag's value (as Invoke's parser will read it)."""
    for ctx in (context, initial):
        if ctx is not None and flag in ctx.flags:
            arg = ctx.flags[flag]
            return arg.takes_value and not arg.optional
    return False


def spread(words: list[str], contexts: list, initial, rest: dict[str, str]) -> list[str]:
    """`lint a.ko b.ko --format json` -> `lint --paths a.ko --paths b.ko --format json`.

    After a task with a rest parameter, a bare word goes to it unless it is a flag's value or names
    another task (and no file of that name exists): `lint a.ko build` lints a.ko, then builds. After
    `--`, every word goes to it (`lint -- -odd.ko build`).
    `contexts` and `initial` are the parser's (for which flags take a value), `rest` is rest_flags()."""
    by_name = {}
    for ctx in contexts:
        for n in (ctx.name, *ctx.aliases):
            by_name[n] = ctx
    out, context, value_next = [], None, False
    for i, word in enumerate(words):
        if word == "--":
            if context is not None and rest.get(context.name):
                # the usual end of flags: every word after it is a file, even `-dash.ko` or a task's name
                return out + [f"{rest[context.name]}={w}" for w in words[i + 1:]]
            return out + words[i:]
        if value_next:
            out.append(word)
            value_next = False
        elif word.startswith("-") and word != "-":
            out.append(word)
            value_next = "=" not in word and _takes_word(word, context, initial)
        elif context is not None and rest.get(context.name) and not (word in by_name and not os.path.lexists(word)):
            out += [rest[context.name], word]
        else:
            context = by_name.get(word, context)
            out.append(word)
    return out


def paths(words) -> list[Path]:
    """Words -> paths: each word is a path; one that names no file and has commas is the old
    comma-separated list (`a.ko,b.ko`). An existing path is taken whole, commas and all."""
    out = []
    for word in words or []:
        if os.path.lexists(word) or "," not in word:
            out.append(Path(word))
        else:
            out += [Path(p) for p in word.split(",") if p]
    return out


def _choices(flag: str) -> list[str] | None:
    """The values a selection flag takes, for completion; None for flags whose values are free."""
    long = {"-" + s: "--" + n for n, s in SHORT_FLAGS.items()}.get(flag, flag)
    if long == "--arch":
        from .. import arch
        return [*arch.names(), "all"]
    if long == "--kernel":
        from .. import pins
        return [*pins.names(), "all"]
    if long == "--module":
        from .. import spec
        from ..errors import KmodError
        try:
            return [*spec.load(spec.find()).modules, "all"]
        except KmodError:
            return []
    return None


def completions(words: list[str], collection, initial) -> list[str] | None:
    """What the shell may offer after `words` (the command line so far, without the program's name):
    a selection flag's values, or nothing so that the shell offers files (where a task takes files, and
    after a flag that takes a path). None leaves the answer to Invoke (task names, a task's flags)."""
    contexts = collection.to_contexts()
    by_name = {n: ctx for ctx in contexts for n in (ctx.name, *ctx.aliases)}
    context = None
    for w in words:
        context = by_name.get(w, context)
    last, prev = (words[-1] if words else ""), (words[-2] if len(words) > 1 else "")
    if last.startswith("-") and _takes_word(last, context, initial):
        return _choices(last) or []
    if prev.startswith("-") and "=" not in prev and _takes_word(prev, context, initial):
        choices = _choices(prev)
        if choices is not None and last not in choices:
            return choices
    if context is not None and not last.startswith("-") and rest_flags(collection).get(context.name):
        return []
    return None
