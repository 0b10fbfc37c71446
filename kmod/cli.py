"""The command line: the `kmodkit` program, and `invoke` in this checkout, both through one Program.

Both parse a command line the same way (kmod/tasks/args.py): a task's files as separate words, short
flags with one meaning, `TASK --help`, shell completion that knows which words are files. `kmodkit` is
the console script (pyproject.toml); Invoke reaches the same Program through tasks.py (take_over()).
"""
import inspect
import os
import re
import shlex
import sys
from pathlib import Path

from invoke import Program
from invoke.exceptions import Exit, ParseError

from . import PROGRAM, __version__
from .tasks import args, ns


class KmodProgram(Program):
    def parse_tasks(self) -> None:
        words = self.core.unparsed
        task = next((w for w in words if w in self.collection.task_names or w in self.collection.tasks), "")
        # Invoke's core parse put everything after `--` into a remainder string; the words themselves,
        # quoting intact, are still in argv: a task that takes files takes them as files
        after = self.argv[self.argv.index("--") + 1:] if "--" in self.argv[1:] else None
        out = args.spread(words + (["--", *after] if after is not None else []), self.collection.to_contexts(),
                          self.initial_context, args.rest_flags(self.collection))
        if after is not None and "--" in out:
            out = out[:out.index("--")]          # not a task's files: Invoke's remainder, as before
        elif after is not None:
            self.core.remainder = ""
        words[:] = out
        try:
            super().parse_tasks()
        except ParseError as e:
            raise ParseError(self._explain(str(e), task)) from None

    def parse_core(self, argv) -> None:
        try:
            super().parse_core(argv)
        except ParseError as e:
            raise ParseError(self._explain(str(e), "")) from None

    def _explain(self, message: str, task: str) -> str:
        """Invoke's parse errors as one kmod line: what is wrong, and where the valid words are."""
        me = "invoke" if self.binary.startswith("inv") else self.binary
        unknown = re.fullmatch(r"No idea what '(.*)' is!", message)
        no_value = re.fullmatch(r"Flag <Argument: (\w+).*> needed value and was not given one!", message)
        if unknown and unknown.group(1).startswith("-"):
            message = f"{task or me} has no flag {unknown.group(1).split('=')[0]}"
        elif unknown and task:
            message = (f"{unknown.group(1)!r} is no flag, value or task (a switch such as --no-lint takes no "
                       f"value: --no-lint, not --no-lint=x)")
        elif unknown:
            message = f"no task {unknown.group(1)!r}"
        elif no_value:
            message = f"--{no_value.group(1).replace('_', '-')} needs a value"
        where = f"`{me} {task} --help` lists its flags" if task else f"`{me} --list` lists the tasks"
        return f"error: {message} ({where})"

    def print_task_help(self, name: str) -> None:
        """Invoke's layout, with the words a task takes in its usage line (`lint [--options] PATH...`)."""
        rest = args.rest_flags(self.collection).get(name)
        words = f" {rest[2:].upper().rstrip('S')}..." if rest else ""
        print(f"Usage: {self.binary} [--core-opts] {name} [--options]{words} [other tasks here ...]\n")
        doc = inspect.getdoc(self.collection[name]) or "none"
        print("Docstring:\n" + "\n".join(self.leading_indent + ln if ln.strip() else "" for ln in doc.splitlines()))
        print("\nOptions:")
        tuples = self.parser.contexts[name].help_tuples()
        if tuples:
            self.print_columns(tuples)
        else:
            print(self.leading_indent + "none\n")

    def parse_cleanup(self) -> None:
        if self.args.complete.value:
            invocation = re.sub(r"^({}) ".format("|".join(map(re.escape, self.binary_names))), "", self.core.remainder)
            try:
                words = shlex.split(invocation)
            except ValueError:  # an open quote while typing
                words = invocation.split()
            candidates = args.completions(words, self.collection, self.initial_context)
            if candidates is not None:
                print("\n".join(candidates))
                raise Exit
        super().parse_cleanup()


def program() -> KmodProgram:
    """The `kmodkit` program: the task collection bundled, so it runs in any folder."""
    return KmodProgram(namespace=ns, version=__version__, name=PROGRAM, binary=PROGRAM, binary_names=[PROGRAM])


def invoke_program(module) -> KmodProgram:
    """`invoke` in this checkout: Invoke's name, options and `--list`, with kmod's parsing, over the
    tasks module Invoke is loading (tasks.py)."""
    import invoke
    return KmodProgram(name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=invoke.__version__,
                       loader_class=lambda config=None, start=None: _Loaded(module))


class _Loaded:
    """Invoke's loader contract, for a tasks module that is already being imported."""

    def __init__(self, module):
        self.module = module

    def load(self, name=None):
        return self.module, str(Path(self.module.__file__).resolve().parent)


def _invoked_by_invoke() -> bool:
    first = sys.argv[0] if sys.argv else ""
    return os.path.basename(first) in ("invoke", "inv") or first.endswith(os.path.join("invoke", "__main__.py"))


def take_over(module) -> None:
    """Called by tasks.py. When Invoke's own command line is loading it, run the command line through
    invoke_program() instead and exit with its code, so that `invoke lint dist/*.ko` works as
    `kmodkit lint dist/*.ko` does. Invoke's parser has no way to be extended from a tasks file."""
    if _invoked_by_invoke():
        _run(invoke_program(module))
        sys.exit(0)


def _run(p: Program) -> None:
    try:
        p.run()
    except BrokenPipeError:
        # The reader went away (`kmodkit lint --format json dist | head`): not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def main() -> None:
    _run(program())
