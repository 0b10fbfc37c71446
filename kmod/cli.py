"""The `kmod` program: Invoke's Program over the same task collection as tasks.py."""
from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="kmod", binary="kmod")


def main() -> None:
    program.run()
