"""Bounded parallelism for builds and image builds, with prompt clean-up on Ctrl-C."""
from concurrent.futures import ThreadPoolExecutor


def parallel(fn, items, workers: int) -> None:
    """Run fn over items on `workers` threads. On Ctrl-C or an error, remove our containers at once
    (that unblocks the workers waiting on them) instead of waiting for the builds to finish."""
    from .runtime import docker as rtdocker
    pool = ThreadPoolExecutor(workers)
    try:
        for f in [pool.submit(fn, i) for i in items]:
            f.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        rtdocker.remove_all()
        raise
    pool.shutdown()
