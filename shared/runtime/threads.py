"""Native thread pools sized for the work.

scikit-learn's OpenMP loops (gradient boosting, forests' predict), BLAS and ONNX Runtime each start
one native thread per core by default. For a request of a few rows that pool costs more than it
gives: its threads spin waiting for one another, and on a busy machine (the platform, a training
run and the traffic sharing the cores) one-row predictions of a gradient-boosting model show a
p99 of hundreds of milliseconds instead of a few. So every process that runs a model for requests
(serving, the evaluator's sandbox, the trainer's checks of its candidates) runs it with one native
thread, and the number of processes is the unit of parallelism, as production model servers do.
Training keeps every core; a large batch may take them too (`wide`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Read by OpenMP, OpenBLAS, MKL and numexpr when they load: what a process loads after `narrow()`
# starts with one thread too.
_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
LARGE_BATCH_ROWS = 1000  # a batch at least this large may use every core


def narrow(threads: int = 1) -> None:
    """From now on, every native pool of this process runs `threads` threads: those already loaded
    (through threadpoolctl) and those loaded later (through their environment variables). 0
    leaves the libraries' defaults (a thread per core)."""
    if threads <= 0:
        return
    for name in _VARIABLES:
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def native_threads() -> dict[str, int]:
    """Each loaded native pool's thread count, by its API (openmp, blas): what a process reports."""
    from threadpoolctl import threadpool_info

    found: dict[str, int] = {}
    for pool in threadpool_info():
        api = str(pool.get("user_api"))
        found[api] = max(found.get(api, 0), int(pool.get("num_threads", 0)))
    return found


@contextlib.contextmanager
def wide(rows: int) -> Iterator[None]:
    """Every core for a batch of at least `LARGE_BATCH_ROWS` rows; nothing changes for a smaller one."""
    if rows < LARGE_BATCH_ROWS:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=os.cpu_count() or 1):
        yield
