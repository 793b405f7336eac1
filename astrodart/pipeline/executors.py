"""Layer 3: where the frames of a step run: serial, a process pool, a thread pool or a
dask cluster.

A step maps its tasks over any object with ``submit`` (a
:class:`concurrent.futures.Executor`, a ``dask.distributed.Client`` or its
``client.get_executor()``); :func:`make_executor` turns the short forms users pass
(``None``, ``'process'``, ``'thread'``, ``'serial'``, an int) into one.
"""
from __future__ import annotations

import concurrent.futures as cf
import os

__all__ = ["make_executor", "process_pool"]

#: Kept alive in each pool worker: the thread limits set by :func:`_one_thread_per_worker`.
_WORKER_LIMITS = None


def _one_thread_per_worker() -> None:
    """Process-pool initializer: one BLAS / OpenMP thread per worker process.

    The steps get their parallelism from processes. Left alone, OpenBLAS and the OpenMP
    runtime (astroscrappy, scipy) start a thread per core inside every worker, and on a
    2-core machine two workers then fight over the cores with four threads: measured on
    30 real frames (benchmarks/scaling.py), 2 workers ran L.A.Cosmic 1.35x faster than
    one process with the library threads and 1.85x faster with one thread each, for 20 %
    less CPU. threadpoolctl sets the limit for the libraries already loaded.
    """
    global _WORKER_LIMITS
    from threadpoolctl import threadpool_limits

    _WORKER_LIMITS = threadpool_limits(limits=1)


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool whose workers run one BLAS / OpenMP thread each.

    Parameters
    ----------
    workers : int
        Number of worker processes.

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
        The pool; the caller shuts it down.
    """
    return cf.ProcessPoolExecutor(max_workers=workers, initializer=_one_thread_per_worker)


def make_executor(executor=None, workers: int | None = None):
    """Return ``(executor, owned)`` for a step run.

    Parameters
    ----------
    executor : None, str, int or Executor-like
        ``None`` or ``'process'``: a process pool of ``workers`` (default: the number of
        cores); ``'thread'``: a thread pool; ``'serial'`` or ``1``: run in this process;
        an int: a process pool of that size; any object with ``submit`` (a
        ``concurrent.futures.Executor``, a ``dask.distributed.Client`` or its
        ``client.get_executor()``) is used as is. Dask tasks are submitted with
        ``pure=False`` (a re-run is always computed again).
    workers : int, optional
        Pool size for the string forms.

    Returns
    -------
    executor : Executor-like or None
        None means serial execution.
    owned : bool
        True if the caller must shut the executor down.

    Raises
    ------
    ValueError
        ``executor`` is none of the forms above.
    """
    n = workers or os.cpu_count() or 1
    if executor is None or executor == "process":
        return (process_pool(n), True) if n > 1 else (None, False)
    if executor == "thread":
        return cf.ThreadPoolExecutor(max_workers=n), True
    if executor == "serial" or executor == 1:
        return None, False
    if isinstance(executor, int) and executor > 1:
        return process_pool(executor), True
    if hasattr(executor, "submit"):
        return executor, False
    raise ValueError(f"executor={executor!r} not understood; use None, 'process', 'thread', "
                     "'serial', an int, or an object with .submit (Executor, dask Client)")


def _is_dask_client(executor) -> bool:
    """Whether ``executor`` is a ``dask.distributed`` object (submitted with ``pure=False``)."""
    return type(executor).__module__.split(".")[0] == "distributed"
