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
    return " ".join(["invoke" if sys.argv[0].endswith("invoke") else "kmod", *sys.argv[1:]])
