"""Layer 3: where the frames of a step run: serial, a process pool, a thread pool or a
dask cluster; and how a run stops when it is interrupted.

A step maps its tasks over any object with ``submit`` (a
:class:`concurrent.futures.Executor`, a ``dask.distributed.Client`` or its
``client.get_executor()``); :func:`make_executor` turns the short forms users pass
(``None``, ``'process'``, ``'thread'``, ``'serial'``, an int) into one, and
:func:`map_tasks` runs the tasks on it.

Stopping (Ctrl-C, SIGTERM, a killed parent):

* Ctrl-C (``KeyboardInterrupt``) or SIGTERM in the caller during :func:`map_tasks` cancels
  the pending tasks and ends the workers of an astrodart pool (:class:`WorkerPool`) at
  once: SIGTERM, 0.5 s of grace, then SIGKILL; a frame being computed is not waited for.
  The exception then reaches the caller (SIGTERM arrives as ``SystemExit(143)``, so the
  callers' ``finally`` blocks run and the process ends with the usual status; the handler
  is installed only around the map, in the main thread, and only where no other handler
  was set). A thread pool cannot stop a running frame: its pending frames are cancelled.
  A dask cluster's futures are cancelled; the cluster itself is the user's.
* Pool workers ignore SIGINT (a terminal sends Ctrl-C to the whole process group: the
  caller decides) and turn SIGTERM into an exception, so that the ``finally`` of
  :func:`astrodart.frames.io.atomic_output` removes the temporary file being written
  before the worker exits.
* A worker whose parent dies (SIGKILL, a crash) exits on its own: a daemon thread started
  by the pool initializer polls ``os.getppid()`` every 0.5 s; when the parent changed it
  sends the worker SIGTERM (temporaries removed as above) and ``os._exit`` follows 2 s
  later if the frame is stuck in C code: every worker is gone within 3 s. Polling was
  chosen over Linux's ``prctl(PR_SET_PDEATHSIG)``: that signal fires when the *thread*
  that started the worker ends (a pool started from a worker thread would lose its
  workers with the thread) and exists on Linux only; a poll of ``getppid`` is portable
  (macOS too) and costs nothing measurable.

A whole night on a cluster (``astrodart reduce --scheduler ADDRESS``): see
:mod:`astrodart.pipeline.cluster`.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import threading
import time

from astrodart.frames.io import _pid_alive  # one home for "is this process alive"

__all__ = ["make_executor", "process_pool", "WorkerPool", "map_tasks", "stop_executor",
           "sigterm_as_exit"]

#: Kept alive in each pool worker: the thread limits set by :func:`_one_thread_per_worker`.
_WORKER_LIMITS = None
#: Seconds between two looks of a worker at its parent.
PARENT_POLL = 0.5
#: Seconds a worker told to stop (SIGTERM) gets to leave its frame before ``os._exit``.
_WORKER_GRACE = 2.0


class _Terminated(SystemExit):
    """SIGTERM, raised as an exception so that ``finally`` blocks run."""


def _raise_terminated(signum, frame):
    """Signal handler: SIGTERM becomes ``SystemExit(128 + signum)`` (a second one kills)."""
    signal.signal(signum, signal.SIG_DFL)
    raise _Terminated(128 + signum)


def _one_thread_per_worker(parent_pid: int | None = None) -> None:
    """Process-pool initializer: one BLAS / OpenMP thread per worker, signals, parent watch.

    The steps get their parallelism from processes. Left alone, OpenBLAS and the OpenMP
    runtime (astroscrappy, scipy) start a thread per core inside every worker, and on a
    2-core machine two workers then fight over the cores with four threads: measured on
    30 real frames (benchmarks/scaling.py), 2 workers ran L.A.Cosmic 1.35x faster than
    one process with the library threads and 1.85x faster with one thread each, for 20 %
    less CPU. threadpoolctl sets the limit for the libraries already loaded.

    The worker also ignores SIGINT, turns SIGTERM into an exception and watches its
    parent (see the module notes).
    """
    global _WORKER_LIMITS
    from threadpoolctl import threadpool_limits

    _WORKER_LIMITS = threadpool_limits(limits=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_terminated)
    start_ppid = os.getppid()
    if parent_pid is not None and start_ppid != parent_pid and not _pid_alive(parent_pid):
        os._exit(128 + signal.SIGTERM)  # the parent died before this worker started
    threading.Thread(target=_watch_parent, args=(start_ppid,), daemon=True,
                     name="astrodart-parent-watch").start()


def _watch_parent(ppid: int) -> None:
    """Worker thread: stop this worker once its parent process is gone."""
    while os.getppid() == ppid:
        time.sleep(PARENT_POLL)
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread unwinds: temporaries removed
    time.sleep(_WORKER_GRACE)
    os._exit(128 + signal.SIGTERM)  # still here: stuck in C code


def _worker_call(fn, *args, **kwargs):
    """Run one task in a :class:`WorkerPool` worker; end the process when told to stop.

    Without this a worker told to stop in the middle of a task would report the
    ``SystemExit`` as the task's result and wait for the next one.
    """
    try:
        return fn(*args, **kwargs)
    except _Terminated as exc:  # the frame's finally blocks have run (temporaries gone)
        os._exit(exc.code)


class WorkerPool(cf.ProcessPoolExecutor):
    """A process pool whose workers run one BLAS thread each and stop at once when asked.

    Made by :func:`process_pool`. Its workers ignore SIGINT, leave their frame on SIGTERM
    (removing the temporary file being written) and exit on their own when the parent
    process dies (module notes); :meth:`stop` ends them without waiting for their frames.

    Parameters
    ----------
    workers : int
        Number of worker processes.
    """

    def __init__(self, workers: int):
        super().__init__(max_workers=workers, initializer=_one_thread_per_worker,
                         initargs=(os.getpid(),))
        self._stopped = False

    def submit(self, fn, /, *args, **kwargs):
        """Schedule ``fn(*args, **kwargs)`` in a worker.

        Parameters
        ----------
        fn : callable
            A picklable function.
        *args, **kwargs
            Its arguments (picklable).

        Returns
        -------
        concurrent.futures.Future
            The task's future.

        Raises
        ------
        RuntimeError
            The pool was stopped (:meth:`stop`) or shut down.
        """
        if self._stopped:
            raise RuntimeError("this process pool was stopped (Ctrl-C or SIGTERM during a "
                               "step); make a new one with process_pool(workers)")
        return super().submit(_worker_call, fn, *args, **kwargs)

    def stop(self, grace: float = 0.5) -> list[int]:
        """Cancel the pending tasks and end the workers now (SIGTERM, then SIGKILL).

        Parameters
        ----------
        grace : float
            Seconds the workers get to leave their frame after SIGTERM before SIGKILL.

        Returns
        -------
        list of int
            The process ids of the workers ended (all reaped on return).
        """
        self._stopped = True
        procs = list((self._processes or {}).values())
        manager = self._executor_manager_thread
        self.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(1.0)
        if manager is not None:  # gone with its workers; joined, so that the exit hook of
            manager.join(1.0)    # concurrent.futures does not race it (EBADF, Python 3.11)
        return [p.pid for p in procs]


def process_pool(workers: int) -> WorkerPool:
    """A process pool whose workers run one BLAS / OpenMP thread each.

    Parameters
    ----------
    workers : int
        Number of worker processes.

    Returns
    -------
    WorkerPool
        The pool (a :class:`concurrent.futures.ProcessPoolExecutor`); the caller shuts it
        down. Its workers stop at once on :meth:`WorkerPool.stop` and exit by themselves
        when this process dies.
    """
    return WorkerPool(workers)


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


@contextlib.contextmanager
def sigterm_as_exit():
    """Within the block, SIGTERM raises ``SystemExit(143)`` instead of killing at once.

    So that an interrupted map stops its workers and removes its temporaries before the
    process ends. Installed only in the main thread and only over the default handler
    (a handler set by the application or a notebook kernel is left alone); the previous
    handler comes back at the end of the block.

    Yields
    ------
    None
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_executor(executor, futures=(), owned: bool = False) -> None:
    """Stop a map now: cancel its pending tasks, end the workers that can be ended.

    Parameters
    ----------
    executor : Executor-like or None
        What the tasks ran on. A :class:`WorkerPool` (an astrodart pool, also one passed
        in by the caller) has its workers ended at once (:meth:`WorkerPool.stop`); a pool
        the map owns is shut down without waiting; anything else keeps running what it
        has started.
    futures : iterable
        The map's futures (cancelled: ``concurrent.futures`` or dask).
    owned : bool
        Whether the map made ``executor`` (and may shut it down).
    """
    for fut in futures:
        fut.cancel()
    if isinstance(executor, WorkerPool):
        executor.stop()
    elif owned and isinstance(executor, cf.Executor):
        executor.shutdown(wait=False, cancel_futures=True)


def map_tasks(fn, items, executor=None, owned: bool = False, *, on_done=None, on_crash=None):
    """Call ``fn(item)`` for every item on ``executor``; results in item order.

    Ctrl-C or SIGTERM (:func:`sigterm_as_exit`) and any error that is not captured stop
    the map at once (:func:`stop_executor`) and propagate; an owned executor is shut down
    at the end.

    Parameters
    ----------
    fn : callable
        Picklable for a process pool or dask.
    items : sequence
        One task each.
    executor : Executor-like or None
        From :func:`make_executor`; None runs here, one item after the other.
    owned : bool
        Shut ``executor`` down at the end.
    on_done : callable, optional
        Called with no argument after each item (e.g. a progress bar's ``update``).
    on_crash : callable, optional
        ``on_crash(item, exc)`` gives the result of an item whose worker raised (e.g. a
        killed process); default: the error propagates.

    Returns
    -------
    list
        ``fn``'s results (or ``on_crash``'s), in the order of ``items``.
    """
    done = on_done or (lambda: None)
    futures, results = [], []
    try:
        with sigterm_as_exit():
            if executor is None:
                for item in items:
                    results.append(fn(item))
                    done()
                return results
            extra = {"pure": False} if _is_dask_client(executor) else {}
            for item in items:  # appended one by one: an interrupt cancels those made
                futures.append(executor.submit(fn, item, **extra))
            for item, fut in zip(items, futures):
                try:
                    results.append(fut.result())
                except Exception as exc:  # the worker raised or died
                    if on_crash is None:
                        raise
                    results.append(on_crash(item, exc))
                done()
            if owned:
                executor.shutdown()
            return results
    except BaseException:
        stop_executor(executor, futures, owned)
        raise
