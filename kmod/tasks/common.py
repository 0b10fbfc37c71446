"""What every task shares: flag help texts and the error handling that turns our errors into one line
and an exit code."""
import functools
import sys

from invoke.exceptions import Exit

from ..errors import KmodError

COMMON_HELP = {
    "arch": "an arch (`invoke toolchains` lists them; Debian and `uname -m` names work too), a comma list, "
            "or all (default: all)",
    "kernel": "pinned kernel (e.g. bookworm-6.1, 6.1), a comma list, or all (default: all)",
    "module": "module name from kmod.toml, a comma list, or all (default: the spec's `default`)",
    "spec": "path to the spec file (default: kmod.toml here or in a parent folder)",
}


def cli_errors(fn):
    """Turn our errors into one line on stderr and an exit code; no tracebacks for users."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KmodError as e:
            print(e.line(), file=sys.stderr)
            raise Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise Exit(code=130) from None
    return wrapper


def command_line() -> str:
    """The command as it was typed (`invoke ...` or `kmodkit ...`), for the manifest's runs."""
    import os
    import shlex

    from .. import PROGRAM
    first = sys.argv[0] if sys.argv else ""
    name = os.path.basename(os.path.dirname(first) if first.endswith("__main__.py") else first)  # python -m
    return shlex.join(["invoke" if name in ("invoke", "inv") else PROGRAM, *sys.argv[1:]])
