"""Invoke entry point: `invoke --list`. The tasks live in kmod/tasks/ so that the `kmod` console
script serves the same collection outside this checkout."""
from kmod.tasks import ns  # noqa: F401
