"""The build stage: modules x pinned kernels x arches, built out of tree in sealed containers.

    matrix.py     plan the cells, skip the cache hits, build the rest in parallel, record the manifest
    images.py     one toolchain image per pinned kernel, tagged by a hash of its inputs
    runtime/      where a build command runs (Docker, or the host's own tools) behind one contract
    diagnose.py   compiler and modpost output -> plain advice

What goes into an image comes from the Debian archive (kmod.archive); what comes out goes to dist/
and the manifest, which the later stages (lint, package, boot) read.
"""
from .matrix import Cell, Outcome, cached, make_argv, plan, run

__all__ = ["Cell", "Outcome", "cached", "make_argv", "plan", "run"]
