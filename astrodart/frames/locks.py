"""Layer 1: an exclusive lock on a folder, so that two edits of its files never interleave.

Two header edits of the same files at once (two notebooks, two processes) would each
read a header, change it and write it back: the later write loses the earlier change.
:func:`folder_lock` makes the second wait until the first is done (or give up after a
timeout with a clear error).

The lock is an advisory ``flock`` on the folder itself, so a raw night gets no new
file, nothing is left behind by a killed process (the system drops its locks) and two
users of one folder exclude each other. Where a folder cannot be locked that way (some
network file systems, Windows) a hidden lock file ``.astrodart-lock`` in the folder is
locked instead (``fcntl``/``msvcrt``). The ``filelock`` package is not a dependency:
it only locks files, and would leave one in every raw folder.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from astrodart.frames.checks import check_number

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["folder_lock", "folder_locks", "LOCK_FILE_NAME"]

#: Lock file used where a folder itself cannot be locked.
LOCK_FILE_NAME = ".astrodart-lock"
_POLL = 0.05
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()
#: errno values of a lock that cannot be taken this way (as opposed to one held by another).
_UNSUPPORTED = {errno.EBADF, errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.EPERM,
                errno.EACCES}


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting: True if taken, False if held."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    import msvcrt  # pragma: no cover - Windows

    try:  # pragma: no cover
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:  # pragma: no cover
        return False


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)


def _open_lockable(folder: Path) -> int:
    """A descriptor to lock for ``folder``: the folder itself, else its lock file."""
    if fcntl is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # probe: can this fd be flocked?
            fcntl.flock(fd, fcntl.LOCK_UN)
            return fd
        except BlockingIOError:  # held exclusively by another: lockable, wait below
            return fd
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _UNSUPPORTED:
                raise
    return os.open(folder / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o666)


def _timeout_error(folder: Path, timeout: float) -> TimeoutError:
    return TimeoutError(
        f"{folder}: another astrodart edit has held this folder's lock for more than "
        f"timeout={timeout:g} s; wait for it to finish (or pass a longer timeout) and try "
        "again -- the edit that waited changed nothing")


def _thread_lock(folder: Path) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _THREAD_LOCKS.setdefault(folder, threading.Lock())


@contextmanager
def _locked(folder: Path, deadline: float, timeout: float) -> Iterator[None]:
    """Hold the lock of ``folder``, waiting until ``deadline`` (``time.monotonic``).

    Threads of this process queue on a blocking in-process lock first (a polling thread
    would be starved by another that edits file after file), then take the ``flock``
    that excludes other processes.
    """
    in_process = _thread_lock(folder)
    if not in_process.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise _timeout_error(folder, timeout)
    try:
        fd = _open_lockable(folder)
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise _timeout_error(folder, timeout)
                time.sleep(_POLL)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        in_process.release()


def _check(folders: Iterable, timeout) -> list[Path]:
    check_number("timeout", timeout, minimum=0, owner="folder_lock", unit="s")
    unique = sorted({Path(f).resolve() for f in folders}, key=str)
    for folder in unique:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder}: not an existing folder, cannot lock it")
    return unique


@contextmanager
def folder_lock(folder, timeout: float = 60.0) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the ``with`` block; wait for another holder.

    It also excludes another thread of the same process (threads queue in turn); it is
    not re-entrant (do not take it twice in one call chain: the second waits, then
    times out).

    Parameters
    ----------
    folder : str or pathlib.Path
        An existing folder.
    timeout : float, optional
        Seconds to wait for another holder to finish (0: do not wait).

    Yields
    ------
    pathlib.Path
        The folder, resolved.

    Raises
    ------
    TypeError
        ``timeout`` is not a number.
    ValueError
        ``timeout`` is negative or not finite.
    NotADirectoryError
        ``folder`` is not an existing folder.
    TimeoutError
        Another edit held the lock for longer than ``timeout`` seconds.
    """
    with folder_locks([folder], timeout) as locked:
        yield locked[0]


@contextmanager
def folder_locks(folders: Iterable, timeout: float = 60.0) -> Iterator[list[Path]]:
    """Hold :func:`folder_lock` on several folders at once.

    The folders are locked in sorted order of their resolved paths, so two callers with
    overlapping folders never wait for each other in a circle.

    Parameters
    ----------
    folders : iterable of str or pathlib.Path
        Folders (duplicates are locked once).
    timeout : float, optional
        Seconds to wait in all (0: do not wait).

    Yields
    ------
    list of pathlib.Path
        The folders locked, resolved and sorted.

    Raises
    ------
    TypeError
        ``timeout`` is not a number.
    ValueError
        ``timeout`` is negative or not finite.
    NotADirectoryError
        A folder does not exist.
    TimeoutError
        A folder stayed locked by another edit for longer than ``timeout``.
    """
    unique = _check(folders, timeout)
    deadline = time.monotonic() + float(timeout)
    with ExitStack() as stack:
        for folder in unique:
            stack.enter_context(_locked(folder, deadline, timeout))
        yield unique
