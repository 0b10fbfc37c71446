"""kmod: render, build, lint, package and boot-test kprobe kernel modules for pinned kernels."""
__version__ = "0.1.0"
