"""Layer 2: FITS sections of a frame: parse, trim, and subtract an overscan level.

Conventions: see :mod:`astrodart.calibration.base`.
"""

from __future__ import annotations

import re

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.calibration.base import (
    KW_BIAS_SUB,
    KW_PEDESTAL_VAR,
    CalibrationError,
    _header,
    _new,
    variance_of,
)
from astrodart.calibration.noise import _remove_pedestal_variance

__all__ = ["parse_section", "trim", "OVERSCAN_MODELS", "subtract_overscan"]


_SECTION_RE = re.compile(r"^\[\s*(\*|\d+\s*:\s*\d+)\s*,\s*(\*|\d+\s*:\s*\d+)\s*\]$")


def parse_section(region: str, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Convert a FITS section to numpy slices, validating it against a frame shape.

    Parameters
    ----------
    region : str
        ``'[x1:x2,y1:y2]'``: 1-based, inclusive, x (columns, NAXIS1) first; ``*`` means
        the whole axis, e.g. ``'[*,1:100]'``.
    shape : tuple of int
        ``(ny, nx)`` of the frame.

    Returns
    -------
    (slice, slice)
        ``(rows, columns)`` to index a ``(ny, nx)`` array.

    Raises
    ------
    CalibrationError
        Malformed section, reversed or empty range, or a range outside the frame.
    """
    ny, nx = shape
    m = _SECTION_RE.match(str(region).strip())
    if not m:
        raise CalibrationError(
            f"region {region!r} is not a FITS section; write it as '[x1:x2,y1:y2]' "
            f"(1-based, inclusive, x first), e.g. '[1:{nx},1:{ny}]' for the whole {nx}x{ny} frame"
        )
    out = []
    for text, n, axis in ((m.group(1), nx, "x"), (m.group(2), ny, "y")):
        if text.strip() == "*":
            out.append(slice(0, n))
            continue
        a, b = (int(v) for v in text.split(":"))
        if a < 1 or b > n or a > b:
            raise CalibrationError(
                f"region {region!r}: {axis} range {a}:{b} does not fit a frame of {nx}x{ny} px "
                f"(NAXIS1={nx}, NAXIS2={ny}); {axis} must satisfy 1 <= {axis}1 <= {axis}2 <= {n}"
            )
        out.append(slice(a - 1, b))
    return out[1], out[0]


def trim(ccd: CCDData, region: str) -> CCDData:
    """Cut a FITS section out of a frame.

    Parameters
    ----------
    ccd : CCDData
        Frame of shape ``(ny, nx)``.
    region : str
        FITS section ``'[x1:x2,y1:y2]'`` (see :func:`parse_section`).

    Returns
    -------
    CCDData
        Shape ``(y2-y1+1, x2-x1+1)``; uncertainty and mask trimmed alike; the header
        records ``TRIMSEC`` and the IRAF offsets ``LTV1``/``LTV2`` (cumulative), so pixel
        coordinates can be traced back to the raw frame.

    Raises
    ------
    CalibrationError
        The section is malformed or does not fit the frame.
    """
    rows, cols = parse_section(region, ccd.shape)
    var = variance_of(ccd)
    header = _header(ccd)
    header["TRIMSEC"] = (str(region).replace(" ", ""), "section kept by trim (1-based, x first)")
    header["LTV1"] = (float(header.get("LTV1", 0.0)) - cols.start, "x offset to the raw frame")
    header["LTV2"] = (float(header.get("LTV2", 0.0)) - rows.start, "y offset to the raw frame")
    if "NAXIS1" in header:  # keep the header true to the new array before it is written
        header["NAXIS1"] = cols.stop - cols.start
        header["NAXIS2"] = rows.stop - rows.start
    out = ccd[rows, cols]  # CCDData slicing keeps the WCS consistent
    return CCDData(
        np.array(out.data, np.float32),
        unit=ccd.unit,
        meta=header,
        uncertainty=None if var is None else StdDevUncertainty(np.sqrt(var[rows, cols])),
        mask=None if ccd.mask is None else np.array(ccd.mask[rows, cols], bool),
        wcs=out.wcs,
    )


OVERSCAN_MODELS = ("median", "mean", "constant", "polynomial")


def subtract_overscan(
    ccd: CCDData, region: str, overscan_axis: int | None = 1, model: str = "median", degree: int = 1
) -> CCDData:
    """Subtract the bias level measured in an overscan strip (ccdproc's ``subtract_overscan``).

    Parameters
    ----------
    ccd : CCDData
        Raw frame (ADU), overscan included.
    region : str
        FITS section of the overscan strip, ``'[x1:x2,y1:y2]'``.
    overscan_axis : {0, 1, None}
        Numpy axis along which the overscan is collapsed: 1 for a strip of columns at
        the side (one value per row), 0 for a strip of rows (one value per column); None
        picks the strip's short axis.
    model : {'median', 'mean', 'constant', 'polynomial'}
        'median'/'mean': subtract the line-by-line median/mean profile; 'constant': a
        single robust (median) level; 'polynomial': a polynomial of ``degree`` fitted
        (least squares) to the median profile.
    degree : int
        Polynomial degree for ``model='polynomial'``.

    Returns
    -------
    CCDData
        Overscan-subtracted frame (still including the overscan strip: trim it after).

    Raises
    ------
    CalibrationError
        Bad section, axis or model name.
    """
    import ccdproc
    from astropy.modeling import models

    if model not in OVERSCAN_MODELS:
        raise CalibrationError(f"overscan model {model!r} unknown; use one of {OVERSCAN_MODELS}")
    if overscan_axis not in (0, 1, None):
        raise CalibrationError(
            f"overscan_axis={overscan_axis!r}: use 0 (strip of rows), 1 (strip "
            "of columns) or None (the strip's short axis)"
        )
    rows, cols = parse_section(region, ccd.shape)
    strip = ccd.data[rows, cols]
    if model == "constant":
        level = np.full((1, 1), np.median(strip), np.float32)
        result = ccd.data - level
    else:
        fit = models.Polynomial1D(degree) if model == "polynomial" else None
        section = f"[{cols.start + 1}:{cols.stop},{rows.start + 1}:{rows.stop}]"
        plain = CCDData(np.asarray(ccd.data, np.float64), unit=ccd.unit)
        result = ccdproc.subtract_overscan(
            plain,
            fits_section=section,
            overscan_axis=overscan_axis,
            median=(model != "mean"),
            model=fit,
        ).data
        level = np.asarray(ccd.data, np.float64) - result
    header = _header(ccd)
    var = _remove_pedestal_variance(variance_of(ccd), header, level, ccd.unit)
    header[KW_PEDESTAL_VAR] = False if var is not None else header.get(KW_PEDESTAL_VAR, False)
    header[KW_BIAS_SUB] = (True, "bias removed (overscan or master bias)")
    header["BIASSEC"] = (str(region).replace(" ", ""), "overscan section used")
    header["ADOSCMOD"] = (
        model if model != "polynomial" else f"polynomial{degree}",
        "overscan model",
    )
    header["ADOSCLEV"] = (float(np.median(level)), "median overscan level subtracted")
    return _new(ccd, result, None if var is None else np.sqrt(var), ccd.mask, meta=header)
