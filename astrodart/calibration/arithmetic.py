"""Layer 2: image arithmetic, ``A op B`` (IRAF ``imarith``), on :class:`CCDData`.

``B`` is a frame or a number. The arithmetic, the propagation of the standard-deviation
uncertainties (first-order, uncorrelated: ``sigma^2 = sigma_a^2 + sigma_b^2`` for a sum
or difference, relative errors in quadrature for a product or quotient) and the OR of
the masks are astropy's NDData arithmetic (:meth:`astropy.nddata.CCDData.add` and its
siblings); this module only checks the operands before any arithmetic is done -- the
operator, the shapes, and the units, which must agree for a sum or a difference (a frame
in ADU minus one in electrons is refused: convert one with ``gain_correction`` first).

The header of ``A`` is kept (an ``IMARITH`` card says what was done); the file-level
step with provenance and an atomic write is
:class:`astrodart.pipeline.products.image_arithmetic`.
"""
from __future__ import annotations

import numbers

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData

from astrodart.frames.checks import check_choice

__all__ = ["ARITHMETIC_OPERATORS", "UnitMismatchError", "imarith"]

#: The operators of :func:`imarith` and the NDData method of each (names are accepted too).
ARITHMETIC_OPERATORS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
_NAMES = {v: k for k, v in ARITHMETIC_OPERATORS.items()}


class UnitMismatchError(ValueError):
    """Two frames added or subtracted are in different units (e.g. ADU and electrons);
    the message names both units and how to convert one."""


def _operator(operator) -> str:
    """The operator symbol of ``operator`` (a symbol or a method name)."""
    op = check_choice("operator", operator, tuple(ARITHMETIC_OPERATORS) + tuple(_NAMES),
                      owner="imarith")
    return _NAMES.get(op, op)


def _operand(a: CCDData, op: str, b):
    """``b`` as an NDData operand of ``a op b``, checked (shape, unit, finite number)."""
    if isinstance(b, CCDData):
        if b.shape != a.shape:
            raise ValueError(f"imarith: B has shape {b.shape}, A {a.shape}; both frames must "
                             "have one shape (resample B onto A's grid first)")
        if op in "+-" and not (b.unit or u.adu).is_equivalent(a.unit or u.adu):
            raise UnitMismatchError(
                f"imarith: A is in {a.unit}, B in {b.unit}; A {op} B needs one unit (convert "
                "the frame in ADU to electrons with gain_correction, or the other way)")
        return b
    if isinstance(b, u.Quantity):
        if op in "+-" and not b.unit.is_equivalent(a.unit):
            raise UnitMismatchError(f"imarith: A is in {a.unit}, B={b} in {b.unit}; give B "
                                    f"in {a.unit} or as a plain number")
        value = b
    elif isinstance(b, numbers.Real) and not isinstance(b, bool):
        value = float(b) * (a.unit if op in "+-" else u.dimensionless_unscaled)
    else:
        raise TypeError(f"imarith: B={b!r} ({type(b).__name__}) is neither a frame nor a "
                        "number; give a CCDData or a finite number")
    if not np.all(np.isfinite(value.value)) or (op == "/" and np.any(value.value == 0)):
        raise ValueError(f"imarith: B={b!r} is not allowed for {op!r}; give a finite "
                         "number (non-zero for '/')")
    return value


def imarith(a: CCDData, operator: str, b) -> CCDData:
    """``A op B`` with uncertainties propagated and masks OR-ed (astropy NDData arithmetic).

    Parameters
    ----------
    a : astropy.nddata.CCDData
        Frame A, shape ``(ny, nx)``, with or without an uncertainty (standard deviation)
        and a mask.
    operator : {'+', '-', '*', '/'} or {'add', 'subtract', 'multiply', 'divide'}
        The operation.
    b : astropy.nddata.CCDData, float or astropy.units.Quantity
        Frame B (same shape; for '+' and '-' a unit equivalent to A's) or a number (for
        '+' and '-' in A's unit, for '*' and '/' dimensionless; exact, no uncertainty).

    Returns
    -------
    astropy.nddata.CCDData
        The result: data and standard-deviation uncertainty from astropy's first-order
        propagation (uncorrelated operands), mask ``A.mask | B.mask``, unit from the
        operation (e.g. ``adu / adu`` is dimensionless), A's header with an ``IMARITH``
        card and A's WCS.

    Raises
    ------
    ValueError
        Unknown operator, frames of different shapes, a non-finite number or division by 0.
    UnitMismatchError
        '+' or '-' of operands whose units differ (e.g. ADU and electrons).
    TypeError
        ``a`` is not a CCDData, or ``b`` is neither a frame nor a number.

    Notes
    -----
    Library: :mod:`astropy.nddata` arithmetic (``StdDevUncertainty`` propagation, masks
    combined with ``numpy.logical_or``); IRAF ``imarith`` for the interface.
    """
    if not isinstance(a, CCDData):
        raise TypeError(f"imarith: A={type(a).__name__} is not a CCDData frame")
    op = _operator(operator)
    operand = _operand(a, op, b)
    method = getattr(a, ARITHMETIC_OPERATORS[op])
    result = method(operand, handle_meta="first_found", compare_wcs="first_found")
    meta = fits.Header(a.meta) if not isinstance(a.meta, fits.Header) else a.meta.copy()
    what = "frame" if isinstance(b, CCDData) else f"{operand}"
    meta["IMARITH"] = (f"A {op} {what}"[:68], "astrodart imarith: operation applied")
    result.meta = meta
    if result.unit is None:
        result.unit = u.dimensionless_unscaled
    return result
