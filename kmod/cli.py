"""The `kmod` program: Invoke's Program over the same task collection as tasks.py."""
import os
import sys

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="kmod", binary="kmod")


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:
        # The reader went away (`kmod lint --format json dist | head`): not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
