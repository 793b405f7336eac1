"""Layer 3: where a whole night runs: a process pool here, or a dask.distributed cluster.

``astrodart reduce --scheduler ADDRESS`` (and ``reduce_night(executor=ADDRESS or
Client)``) send the per-frame steps of a night to the workers of a running dask
scheduler. :func:`connect_scheduler` connects (or takes a ``Client``) and checks, before
any task is sent and any file written, that the scheduler answers, has workers, and that
every worker imports the same astrodart and can read the raw night and write the output
folder: the workers read and write the FITS files themselves, so they need the same
file system, mounted at the same paths (a shared disk, as on HPC clusters).
:func:`shared_executor` gives the executor a night's steps share, whatever form it was
given in, with the call that releases it; :func:`where_it_runs` describes it for the
run's ``summary.json``. The cluster itself is the user's: a client made here is closed at
the end, the scheduler and workers keep running.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import re

from astrodart.pipeline.executors import _is_dask_client, process_pool

__all__ = ["CONNECT_TIMEOUT", "SchedulerError", "connect_scheduler", "is_scheduler_address",
           "scheduler_address", "shared_executor", "where_it_runs"]

#: Seconds to wait for a dask scheduler to answer before giving up.
CONNECT_TIMEOUT = 10.0
#: How a dask scheduler address starts (``distributed``'s communication protocols).
_SCHEDULER_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


class SchedulerError(RuntimeError):
    """A dask scheduler that cannot run a night's steps.

    dask.distributed is not installed, nothing answers at the address, the scheduler has
    no workers, or its workers cannot import astrodart or see the night's folders. Raised
    by :func:`connect_scheduler` before any task is sent; the message names the address.
    """


def is_scheduler_address(value) -> bool:
    """Whether ``value`` is written as a dask scheduler address.

    Parameters
    ----------
    value : object
        Anything given as an executor.

    Returns
    -------
    bool
        True for a string with a ``distributed`` protocol (``tcp://``, ``tls://``,
        ``inproc://``, ``ucx://``, ``ws://``, ``wss://``) or of the form ``HOST:PORT``.
    """
    if not isinstance(value, str):
        return False
    text = value.strip().lower()
    return (text.startswith(_SCHEDULER_SCHEMES)
            or re.fullmatch(r"[\w.\-\[\]:]+:\d+", text) is not None)


def _as_client(scheduler, timeout: float):
    """``(client, owned)`` from a Client, its executor face, or an address."""
    if _is_dask_client(scheduler):
        client = scheduler if hasattr(scheduler, "scheduler_info") else getattr(
            scheduler, "_client", None)
        if client is not None:
            return client, False
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"scheduler={scheduler!r}: give the address of a dask scheduler "
                         "('tcp://HOST:8786') or a dask.distributed.Client")
    address = scheduler.strip()
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerError(f"scheduler {address!r}: dask.distributed is not installed "
                             "(pip install 'astrodart[dask]')") from None
    _probe(address, timeout)
    try:
        return Client(address, timeout=timeout, set_as_default=False), True
    except (OSError, ValueError, TypeError) as exc:
        raise SchedulerError(f"scheduler {address!r}: no dask scheduler answered ({exc}); "
                             f"{_START}") from None


#: What to do when no scheduler answers.
_START = ("start one (`dask scheduler`, then `dask worker ADDRESS` on each machine) or "
          "correct the address")


def _probe(address: str, timeout: float) -> None:
    """Refuse at once an address that is malformed or where nothing listens (a refused
    TCP connection), instead of the client's retries until ``timeout`` (and its
    half-made object left to time out again when collected)."""
    import socket

    from distributed.comm.addressing import get_address_host_port, normalize_address

    try:
        full = normalize_address(address)
        if full.split("://", 1)[0] not in ("tcp", "tls", "ws", "wss"):
            return
        host, port = get_address_host_port(full)
    except ValueError as exc:
        raise SchedulerError(f"scheduler {address!r}: not a scheduler address ({exc}); use "
                             "tcp://HOST:PORT (the address `dask scheduler` prints)") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise SchedulerError(f"scheduler {address!r}: nothing answers at {host}:{port} "
                             f"({exc}); {_START}") from None


def _worker_view(read: list, write: list) -> tuple:
    """Run on each dask worker: astrodart's version and the paths it cannot use."""
    from astrodart import __version__

    missing = [p for p in read if not os.access(p, os.R_OK)]
    for p in write:
        parent = p
        while not os.path.exists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            missing.append(p)
    return __version__, missing


def _check_workers(client, address: str, read, write) -> None:
    """Refuse a scheduler without workers, or whose workers cannot run the night."""
    from astrodart import __version__

    nthreads = client.nthreads()
    if not nthreads:
        raise SchedulerError(f"scheduler {address}: no workers are connected; start some "
                             f"(`dask worker {address}`)")
    try:
        seen = client.run(_worker_view, [str(p) for p in read], [str(p) for p in write])
    except Exception as exc:  # noqa: BLE001 -- any worker-side failure: say it
        raise SchedulerError(f"scheduler {address}: its workers cannot run astrodart "
                             f"({type(exc).__name__}: {exc}); install it on them "
                             "(pip install 'astrodart[dask]')") from None
    for worker, (version, missing) in sorted(seen.items()):
        if version != __version__:
            raise SchedulerError(f"scheduler {address}: worker {worker} runs astrodart "
                                 f"{version}, this session {__version__}; install the same "
                                 "version on every worker")
        if missing:
            raise SchedulerError(f"scheduler {address}: worker {worker} cannot read or write "
                                 f"{', '.join(missing)}; the workers read and write the "
                                 "frames themselves and need the same file system (a shared "
                                 "disk mounted at the same path)")


def connect_scheduler(scheduler, read=(), write=(), timeout: float | None = None):
    """Connect to a dask scheduler and check that its workers can run a night's steps.

    Parameters
    ----------
    scheduler : str or distributed.Client
        The scheduler's address (``'tcp://HOST:8786'``, as ``dask scheduler`` prints it),
        a ``Client`` or its ``client.get_executor()``.
    read, write : sequence of str or pathlib.Path
        Absolute paths every worker must be able to read (the raw night) and to write
        (the output folder, or its nearest existing parent).
    timeout : float, optional
        Seconds to wait for the scheduler to answer (default :data:`CONNECT_TIMEOUT`).

    Returns
    -------
    client : distributed.Client
        Connected; its tasks go to the cluster's workers.
    owned : bool
        True when this call made the client (the caller closes it with ``client.close()``;
        the cluster is never shut down), False for a client that was passed in.

    Raises
    ------
    SchedulerError
        dask.distributed is not installed, no scheduler answers at the address within
        ``timeout``, it has no workers, or a worker cannot import astrodart (or runs
        another version) or cannot use one of the paths. Nothing is sent before this
        check.
    ValueError
        ``scheduler`` is neither an address nor a dask client.
    """
    client, owned = _as_client(scheduler, CONNECT_TIMEOUT if timeout is None else timeout)
    try:
        _check_workers(client, scheduler_address(client), read, write)
    except BaseException:
        if owned:
            client.close()
        raise
    return client, owned


def scheduler_address(client) -> str:
    """The address of a dask client's scheduler (``'tcp://HOST:PORT'``).

    Parameters
    ----------
    client : distributed.Client
        A connected client.

    Returns
    -------
    str
        The address, as workers and other clients reach it.
    """
    return str(client.scheduler.address)


def shared_executor(executor=None, workers: int | None = None):
    """The executor all the steps of a night share, and how to release it at the end.

    Parameters
    ----------
    executor : None, str, int, Executor-like or distributed.Client
        ``None``: a :func:`process_pool` of ``workers`` processes; a scheduler address
        (:func:`is_scheduler_address`): a client of that cluster (:func:`connect_scheduler`);
        anything else is passed to the steps as it is (they read it with
        :func:`make_executor`) and is not released.
    workers : int, optional
        Processes of the default pool (default: all cores).

    Returns
    -------
    executor : object
        What the steps get as ``executor=``.
    release : callable
        Called with no argument at the end: shuts the pool down, or closes the client
        (the cluster itself keeps running).

    Raises
    ------
    SchedulerError
        An address whose scheduler cannot run the steps (see :func:`connect_scheduler`).
    """
    if executor is None:
        pool = process_pool(workers or os.cpu_count() or 1)
        return pool, pool.shutdown
    if is_scheduler_address(executor):
        client, _ = connect_scheduler(executor)
        return client, client.close
    return executor, lambda: None


def where_it_runs(executor=None, workers: int | None = None) -> dict:
    """Where a night's per-frame steps run, for the run's record (``summary.json``).

    Parameters
    ----------
    executor : None, str, int, Executor-like or distributed.Client
        As given to :func:`shared_executor` (``None``: its default process pool).
    workers : int, optional
        Processes of the default pool.

    Returns
    -------
    dict
        ``executor`` ('dask.distributed', 'process pool', 'thread pool', 'serial' or the
        type's name); for dask also ``scheduler`` (address), ``workers`` and ``threads``
        (as connected now); otherwise ``host`` and ``workers``.
    """
    import socket

    if _is_dask_client(executor):
        client = executor if hasattr(executor, "nthreads") else executor._client
        nthreads = client.nthreads()
        return {"executor": "dask.distributed", "scheduler": scheduler_address(client),
                "workers": len(nthreads), "threads": int(sum(nthreads.values()))}
    n = workers or os.cpu_count() or 1
    if executor is None or executor == "process" or isinstance(executor, cf.ProcessPoolExecutor):
        kind = "process pool"
        n = getattr(executor, "_max_workers", n)
    elif executor == "thread" or isinstance(executor, cf.ThreadPoolExecutor):
        kind, n = "thread pool", getattr(executor, "_max_workers", n)
    elif executor in ("serial", 1):
        kind, n = "serial", 1
    else:
        kind = f"{type(executor).__module__}.{type(executor).__qualname__}"
    return {"executor": kind, "host": socket.gethostname(), "workers": int(n)}
