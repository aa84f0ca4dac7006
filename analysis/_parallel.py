"""Independent fits on several processes: bootstrap refits and the size-law contest.

Each fit is a small L-BFGS problem whose time goes to numpy's per-call overhead, not to
BLAS, so threads do not help and processes do. Workers are spawned, not forked: the caller
may hold JAX's or BLAS's threads, which a fork would copy mid-flight. Results come back in
the order of the items, so a fit is the same on one process or many.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

__all__ = ["cpu_count", "pmap"]


def cpu_count() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pmap(fn: Callable, items: list[tuple], jobs: int) -> Iterator:
    """fn(*item) for each item, in order, on up to `jobs` processes (here if jobs is 1)."""
    if jobs <= 1 or len(items) < 2:
        yield from (fn(*item) for item in items)
        return
    workers = min(jobs, len(items))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        chunk = max(1, len(items) // (4 * workers))
        yield from pool.map(fn, *zip(*items, strict=True), chunksize=chunk)
