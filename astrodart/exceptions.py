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
