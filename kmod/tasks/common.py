"""What every task shares: flag help texts, the validation of flag and environment values (here, once,
whatever the way tasks take them), and the error handling that turns every failure into one line and
an exit code."""
import errno
import functools
import math
import os
import sys

from invoke.exceptions import Exit

from ..errors import InfraError, KmodError, UserError

COMMON_HELP = {
    "arch": "an arch (`invoke toolchains` lists them; Debian and `uname -m` names work too), a comma list, "
            "or all (default: all)",
    "kernel": "pinned kernel (e.g. bookworm-6.1, 6.1), a comma list, or all (default: all)",
    "module": "module name from kmod.toml, a comma list, or all (default: the spec's `default`)",
    "spec": "path to the spec file (default: kmod.toml here or in a parent folder)",
    "jobs": "how many at once (default: the number of cores)",
}
# The flavours are named by the data (toolchains/flavours/*.toml), as the arches are: never listed here.
FLAVOUR_HELP = ("kernel flavour (`invoke toolchains` lists them, one file each in toolchains/flavours/), a comma "
                "list, or all (default: generic)")


def count(value, flag: str) -> int | None:
    """A --jobs style value: empty means the default (None), else a whole number >= 1."""
    if value in ("", None, 0):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1 or n > 4096:
        raise UserError(f"{flag} {value!r} is not a count", f"give a whole number from 1, e.g. {flag} 2")
    return n


def seconds(value, flag: str, default: float, env: str | None = None) -> float:
    """A --timeout style value: the flag, else $ENV, else `default`; a finite number of seconds > 0,
    refused before anything starts."""
    source = flag
    if value in ("", None, 0) and env and os.environ.get(env, "").strip():
        value, source = os.environ[env], f"{env}="
    if value in ("", None):
        return default
    try:
        s = float(str(value).strip())
    except ValueError:
        s = math.nan
    if not (math.isfinite(s) and 0 < s <= 86400):
        where = f"{source}{value!r}" if source.endswith("=") else f"{source} {value!r}"
        raise UserError(f"{where} is not a timeout", "give seconds greater than 0, e.g. 300")
    return s


def kernel_words(text: str, flag: str) -> tuple[str, ...]:
    """Extra kernel command line words: printable, no quotes (the kernel has its own quoting)."""
    words = tuple((text or "").split())
    for w in words:
        if not w.isprintable() or not w.isascii() or '"' in w or len(w) > 256:
            raise UserError(f"{flag} word {w!r} cannot go on a kernel command line",
                            "use printable ASCII words without quotes, e.g. --append 'loglevel=8 initcall_debug'")
    return words


def output_folder(project):
    """dist/ must be a folder kmod can write, before anything is written into it."""
    from .. import paths
    return paths.ensure_dir(project.dist, "the output folder", "move what is in the way, or fix its permissions")


ERRNO_ADVICE = {errno.ENOSPC: "free some space and run again", errno.EDQUOT: "free some space and run again",
                errno.EACCES: "check the folder's permissions, or point kmod elsewhere",
                errno.EPERM: "check the folder's permissions, or point kmod elsewhere",
                errno.EROFS: "the file system is read-only; point kmod elsewhere",
                errno.ENOTDIR: "a file is in the way where a folder belongs; move it",
                errno.EEXIST: "a file is in the way; move it", errno.EISDIR: "a folder is in the way; move it"}


def os_error(e: OSError) -> InfraError:
    """An OSError nobody closer knew what to do with: one line naming the place and what to do."""
    where = f": {e.filename}" if e.filename else ""
    return InfraError(f"{e.strerror or e}{where}", ERRNO_ADVICE.get(e.errno, "check the path and run again"))


def cli_errors(fn):
    """Turn every failure into one line on stderr and an exit code; no tracebacks for users. SIGTERM and
    SIGHUP take the same clean-up path as Ctrl-C (kmod.run.signals)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .. import run as runmod
        try:
            with runmod.signals():
                return fn(*args, **kwargs)
        except KmodError as e:
            fail(e.line(), e.exit_code)
        except KeyboardInterrupt as e:
            fail(*runmod.interruption(e))
        except OSError as e:
            fail(os_error(e).line(), 1)
        except (Exit, SystemExit):
            raise
        except Exception as e:  # a bug: still one line, the traceback on request
            if os.environ.get("KMOD_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} (a bug in kmod; KMOD_DEBUG=1 shows where)", 1)
        finally:
            runmod.release()
    return wrapper


def fail(line: str, code: int):
    print(line, file=sys.stderr)
    raise Exit(code=code) from None


def command_line() -> str:
    """The command as it was typed (`invoke ...` or `kmodkit ...`), for the manifest's runs."""
    import os
    import shlex

    from .. import PROGRAM
    first = sys.argv[0] if sys.argv else ""
    name = os.path.basename(os.path.dirname(first) if first.endswith("__main__.py") else first)  # python -m
    return shlex.join(["invoke" if name in ("invoke", "inv") else PROGRAM, *sys.argv[1:]])
