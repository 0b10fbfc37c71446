"""Bounded parallelism for builds, image builds, VMs and hosts, with prompt clean-up on Ctrl-C."""
from concurrent.futures import ThreadPoolExecutor


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


def sigterm_as_interrupt():
    """SIGTERM (a CI runner giving up) and SIGHUP go through the same clean-up as Ctrl-C, instead of
    orphaning what the run started (VMs, changed hosts): kmod.run.signals, which every task holds too."""
    from .run import signals
    return signals()
