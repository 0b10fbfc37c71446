"""The task collection behind both `invoke` (tasks.py at the top of the checkout) and the `kmodkit` program.

Each stage's tasks live in a small module here that imports its stage only when a task runs, so that
`invoke --list` and a cached `invoke build` start fast.
"""
from invoke import Collection

from .boot import TASKS as BOOT_TASKS
from .build import build, render, toolchains
from .lint import lint
from .package import TASKS as PACKAGE_TASKS
from .preflight import preflight
from .status import status

ns = Collection(build, render, toolchains, lint, *PACKAGE_TASKS, *BOOT_TASKS, status, preflight)
