"""Threads for the integer kernels: one torch thread for small products, a pool for independent blocks."""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

SMALL_WORK = 1 << 26  # multiply-adds below which one thread beats waking (and waiting for) the others


@contextlib.contextmanager
def threads_for(work: int):
    """Small products on one torch thread: on a busy machine a parallel region can wait milliseconds for
    a descheduled helper thread, far longer than the product itself."""
    n = torch.get_num_threads()
    if n == 1 or work >= SMALL_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0


def run_blocks(jobs: list, fn) -> None:
    """fn(*job) for every job (independent blocks of one product, writing disjoint outputs), spread over
    torch's thread count with single-threaded BLAS inside each block: blocked schedules issue many
    small products, for which BLAS's own threads cost more in start-up and synchronisation than they
    save. numpy and torch release the GIL in the heavy calls."""
    workers = min(torch.get_num_threads(), len(jobs))
    if workers <= 1:
        for job in jobs:
            fn(*job)
        return
    global _POOL, _POOL_WORKERS
    if _POOL is None or _POOL_WORKERS != workers:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        # torch's thread count is per thread (OpenMP): set once in each worker, the caller's is untouched
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="dgq-sim", initializer=torch.set_num_threads,
                                   initargs=(1,))
        _POOL_WORKERS = workers
    for _ in _POOL.map(lambda job: fn(*job), jobs):
        pass


def serialised(fn):
    """fn behind a lock (the accumulator callback updates shared statistics from block threads)."""
    lock = threading.Lock()

    def call(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)
    return call
