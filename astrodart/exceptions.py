"""Layer 0: the warning family of astrodart, and warnings counted once per run.

Every warning astrodart issues derives from :class:`AstrodartWarning`, itself an
:class:`astropy.utils.exceptions.AstropyUserWarning`, so a user silences or raises them
all with one filter (``warnings.simplefilter('error', AstrodartWarning)``).

A night has hundreds of frames and the same problem usually hits all of them (a camera
that writes no GAIN keyword). :func:`warn` inside a :func:`warning_tally` block (every
step run opens one) does not print per frame: it counts, and the block issues each kind
of warning once at its end with the count and the first few items, for example
``"GAIN missing in 142 frames: 1.0 e-/ADU assumed (first: a.fits, b.fits, c.fits)"``.
Outside a tally (a function called on its own) :func:`warn` warns at once.

Process-pool workers cannot reach the caller's tally; the step engine records the
warnings raised in a worker (:func:`capture`) and replays them in the caller
(:func:`replay`), where they join the tally.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass, field

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "AstrodartWarning",
    "warn",
    "warning_tally",
    "capture",
    "replay",
    "quiet",
    "is_quiet",
    "recorded",
]


class AstrodartWarning(AstropyUserWarning):
    """Base class of every warning astrodart issues: something the user should act on."""


@dataclass
class _Kind:
    category: type
    message: str
    items: list = field(default_factory=list)
    count: int = 0


_state = threading.local()


def _tallies() -> list:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def warn(message: str, category: type = AstrodartWarning, item: str | None = None,
         stacklevel: int = 2) -> None:
    """Issue an astrodart warning, counted once per run inside :func:`warning_tally`.

    Parameters
    ----------
    message : str
        What happened and what was done about it, the same text for every frame it
        hits, e.g. ``"GAIN missing: 1.0 e-/ADU assumed"``. Frame-specific detail goes
        into ``item``.
    category : type, optional
        A subclass of :class:`AstrodartWarning`.
    item : str, optional
        What the warning is about (usually a file name); the tally counts items.
    stacklevel : int, optional
        As for :func:`warnings.warn` when the warning is issued at once.

    Raises
    ------
    TypeError
        ``category`` is not a subclass of :class:`AstrodartWarning`.
    """
    if not (isinstance(category, type) and issubclass(category, AstrodartWarning)):
        raise TypeError(f"category={category!r}: must be a subclass of AstrodartWarning")
    if is_quiet(category):
        return
    stack = _tallies()
    if stack:
        kinds = stack[-1]
        kind = kinds.setdefault((category, message), _Kind(category, message))
        kind.count += 1
        if item is not None and len(kind.items) < 3:
            kind.items.append(str(item))
        return
    text = f"{item}: {message}" if item is not None else message
    warnings.warn(text, category, stacklevel=stacklevel)


def _summary(kind: _Kind) -> str:
    head, sep, tail = kind.message.partition(":")
    if kind.count <= 1:
        return f"{kind.items[0]}: {kind.message}" if kind.items else kind.message
    where = f" in {kind.count} frames" if kind.items else f" ({kind.count} times)"
    text = f"{head}{where}{sep}{tail}"
    if kind.items:
        text += f" (first: {', '.join(kind.items)})"
    return text


@contextlib.contextmanager
def warning_tally():
    """Count :func:`warn` calls in this block and issue each kind once at its end.

    Nested blocks fold into the outermost one, so a night run prints each kind once
    even when several steps hit it.

    Yields
    ------
    dict
        The live tally, keyed by ``(category, message)``.
    """
    stack = _tallies()
    if stack:  # nested: the outer tally counts
        yield stack[-1]
        return
    kinds: dict = {}
    stack.append(kinds)
    try:
        yield kinds
    finally:
        stack.pop()
        for kind in kinds.values():
            warnings.warn(_summary(kind), kind.category, stacklevel=3)


@contextlib.contextmanager
def capture():
    """Record the :func:`warn` calls of a block (in a worker) for :func:`replay`.

    Yields
    ------
    list of tuple
        ``(category, message, item)`` per call, filled when the block ends.
    """
    stack = _tallies()
    kinds: dict = {}
    records: list = []
    stack.append(kinds)
    try:
        yield records
    finally:
        stack.pop()
        for kind in kinds.values():
            items = kind.items + [None] * (kind.count - len(kind.items))
            records.extend((kind.category, kind.message, it) for it in items)


def replay(records) -> None:
    """Issue again, in the caller, warnings recorded by :func:`capture` in a worker.

    Parameters
    ----------
    records : iterable of tuple
        ``(category, message, item)`` as :func:`capture` yields them.
    """
    for category, message, item in records:
        warn(message, category, item=item, stacklevel=3)


# -- silencing and recording warnings, safe in threads ---------------------------------
# warnings.catch_warnings swaps process-wide state (the filter list and the function that
# shows a warning) and puts back what it saw on entry. Two threads whose blocks overlap
# put it back out of order: a filter or a recorder of one block outlives it, and from
# then on warnings are lost or land in the wrong frame's record (a truncated frame's
# warning blamed on its neighbour). Python 3.11 has no thread-local warning state, so
# these helpers make the blocks take turns on one lock (keep such blocks short: a WCS
# parse, a header read), and silence astrodart's own warnings per thread without it.
_WARNING_STATE = threading.RLock()


def _silenced() -> list:
    if not hasattr(_state, "silenced"):
        _state.silenced = []
    return _state.silenced


def is_quiet(category: type) -> bool:
    """Whether ``category`` is silenced by a :func:`quiet` block in this thread.

    Parameters
    ----------
    category : type
        A warning class.

    Returns
    -------
    bool
    """
    return any(issubclass(category, c) for c in _silenced())


@contextlib.contextmanager
def quiet(*categories: type):
    """Silence warnings of ``categories`` (default: all) in a block, safe in threads.

    Astrodart's own warnings (subclasses of :class:`AstrodartWarning`) are silenced for
    this thread only and the block runs concurrently with others. Any other category
    (astropy's ``FITSFixedWarning``, numpy's ``RuntimeWarning``) needs the process-wide
    filters of :func:`warnings.catch_warnings`: the block then holds one lock, so the
    blocks of several threads run one after the other; keep them short.

    Parameters
    ----------
    *categories : type
        Warning classes; none means every warning.
    """
    categories = categories or (Warning,)
    ours = all(issubclass(c, AstrodartWarning) for c in categories)
    silenced = _silenced()
    silenced.extend(categories)
    try:
        if ours:
            yield
        else:
            with _WARNING_STATE, warnings.catch_warnings():
                for category in categories:
                    warnings.simplefilter("ignore", category)
                yield
    finally:
        del silenced[-len(categories):]


@contextlib.contextmanager
def recorded():
    """Record every warning raised in a block instead of showing it, safe in threads.

    The block holds the lock :func:`quiet` uses, so another thread's warning cannot land
    in this record (nor this block's in another's); keep it short, e.g. opening a file.

    Yields
    ------
    list of warnings.WarningMessage
        Filled as the block runs.
    """
    with _WARNING_STATE, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
