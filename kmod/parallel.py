"""Bounded parallelism for builds, image builds, VMs and hosts, with prompt clean-up on Ctrl-C."""
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


def _remove_containers() -> None:
    from .build.runtime import docker as rtdocker
    rtdocker.remove_all()


def parallel(fn, items, workers: int, on_abort=_remove_containers) -> None:
    """Run fn over items on `workers` threads. On Ctrl-C or an error, `on_abort()` releases what the
    workers wait on (containers by default, VMs for the boot stage) so that they return at once,
    instead of waiting for every job to finish."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        for f in [pool.submit(fn, i) for i in items]:
            f.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        on_abort()
        raise
    pool.shutdown()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a CI runner giving up) goes through the same clean-up as Ctrl-C, instead of orphaning
    what the run started (VMs, changed hosts). Only the main thread can take signals."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
