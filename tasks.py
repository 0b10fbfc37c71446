"""Invoke's entry point in this checkout: `invoke build`, `invoke lint dist/*.ko`, `invoke --list`.

The tasks live in kmod/tasks/ (the `kmodkit` console program serves the same collection outside this
checkout). When Invoke's command line loads this file, kmod's Program takes the command line over, so
that `invoke` and `kmodkit` parse it the same way (kmod/cli.py, kmod/tasks/args.py)."""
import sys

from kmod.cli import take_over
from kmod.tasks import ns  # noqa: F401  (the collection Invoke looks for)

take_over(sys.modules[__name__])
