"""kmod: render, build, lint, package and boot-test kprobe kernel modules for pinned kernels."""
__version__ = "0.1.0"
# The console program and the distribution. Not `kmod`, which is Debian's module tools (/usr/bin/kmod
# behind lsmod and modprobe) and, on PyPI, libkmod's bindings; `kmod` stays the Python package.
PROGRAM = "kmodkit"
