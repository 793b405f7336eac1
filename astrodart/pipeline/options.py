"""Layer 3: the options every step takes the same way: ``overwrite``, unknown keywords."""
from __future__ import annotations

from typing import Iterable

__all__ = ["parse_overwrite", "check_kwargs"]


def parse_overwrite(value) -> bool:
    """Interpret AstroDART's ``overwrite`` argument.

    Parameters
    ----------
    value : bool, int, str or None
        ``'yes'``/``'y'``/``'true'``/``True``/``1`` mean redo; ``'no'``/``'n'``/
        ``'false'``/``False``/``None``/``0`` mean reuse existing outputs.

    Returns
    -------
    bool
        True to redo existing outputs.

    Raises
    ------
    ValueError
        Any other value (a typo must not silently mean "no").
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int,)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("yes", "y", "true", "1", "overwrite"):
            return True
        if v in ("no", "n", "false", "0", ""):
            return False
    raise ValueError(f"overwrite={value!r} not understood; use 'yes'/'no' or True/False")


def check_kwargs(step_name: str, kwargs: dict, allowed: Iterable[str] = ()) -> None:
    """Reject unknown keyword arguments with a message listing the allowed ones.

    Parameters
    ----------
    step_name : str
        Named in the message.
    kwargs : dict
        The keyword arguments received.
    allowed : iterable of str
        The names the step accepts.

    Raises
    ------
    TypeError
        Some key of ``kwargs`` is not in ``allowed``.
    """
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{step_name}() got unknown keyword argument(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(sorted(allowed)) or 'none'}")
