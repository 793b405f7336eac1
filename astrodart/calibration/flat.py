"""Layer 2: the flat field: its robust level, normalisation, division with guarded
pixels, and the flatness of a sky frame (how well a flat corrected it).

Conventions: see :mod:`astrodart.calibration.base`.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData

from astrodart.calibration.base import (
    CalibrationError,
    _header,
    _new,
    _or_masks,
    variance_of,
)
from astrodart.calibration.noise import robust_std

__all__ = [
    "flat_normalisation",
    "normalise_flat",
    "flat_correct",
    "grid_levels",
    "sky_flatness",
]


def flat_normalisation(flat: np.ndarray, central_fraction: float = 0.5) -> float:
    """Robust central level of a flat.

    Parameters
    ----------
    flat : numpy.ndarray
        ``(ny, nx)`` flat (any unit).
    central_fraction : float
        Fraction of each axis, centred, that is measured.

    Returns
    -------
    float
        The 3-sigma-clipped median (median/MAD clipping, two passes) of the central
        region, ignoring NaN; NaN when the region holds no finite pixel.
    """
    ny, nx = flat.shape
    fy, fx = int(ny * (1 - central_fraction) / 2), int(nx * (1 - central_fraction) / 2)
    core = np.asarray(flat[fy : ny - fy, fx : nx - fx], np.float32).ravel()
    core = core[np.isfinite(core)]
    if core.size == 0:
        return float("nan")
    for _ in range(2):
        med = float(np.median(core))
        sd = float(robust_std(core))
        if sd == 0:
            break
        core = core[np.abs(core - med) < 3 * sd]
    return float(np.median(core))


def normalise_flat(flat: CCDData, central_fraction: float = 0.5) -> tuple[CCDData, float]:
    """Divide a master flat by its robust central level (:func:`flat_normalisation`).

    Parameters
    ----------
    flat : CCDData
        ``(ny, nx)`` master flat (ADU or electrons).
    central_fraction : float
        Fraction of each axis, centred, that sets the level.

    Returns
    -------
    (CCDData, float)
        The dimensionless normalised flat (uncertainty scaled alike) and the level.

    Raises
    ------
    CalibrationError
        The level is not positive (an unexposed or wrongly bias-subtracted flat).
    """
    level = flat_normalisation(flat.data, central_fraction)
    if not np.isfinite(level) or level <= 0:
        raise CalibrationError(
            f"master flat has a central level of {level:.4g} {flat.unit}; a flat "
            "must be well exposed and positive: check that the flat frames are "
            "exposed and that the right master bias/dark was subtracted"
        )
    var = variance_of(flat)
    header = _header(flat)
    header["ADFLNORM"] = (level, f"flat normalisation level ({flat.unit})")
    return _new(
        flat,
        flat.data / np.float32(level),
        None if var is None else np.sqrt(var) / np.float32(level),
        flat.mask,
        unit=u.dimensionless_unscaled,
        meta=header,
    ), level


def flat_correct(
    ccd: CCDData, flat: CCDData, min_value: float = 0.1, max_bad_fraction: float = 0.01
) -> tuple[CCDData, int]:
    """Divide a frame by a normalised flat, guarding low, zero and negative flat pixels.

    Parameters
    ----------
    ccd : CCDData
        Calibrated frame (bias/dark removed), shape ``(ny, nx)``.
    flat : CCDData
        Normalised master flat (level ~1, see :func:`normalise_flat`), same shape.
    min_value : float
        Flat pixels below this (including zero, negative and NaN) are not divided: the
        frame's pixel is kept and masked.
    max_bad_fraction : float
        Above this fraction of guarded pixels the flat is refused.

    Returns
    -------
    (CCDData, int)
        The corrected frame (variance ``var/f^2 + data^2 var_f / f^4``; masks OR-ed with
        the guarded pixels) and the number of guarded pixels (header ``ADFLBAD``).

    Raises
    ------
    CalibrationError
        Shape mismatch, or more than ``max_bad_fraction`` of the flat guarded.
    """
    if ccd.shape != flat.shape:
        raise CalibrationError(
            f"master flat is {flat.shape[1]}x{flat.shape[0]} px but the frame is "
            f"{ccd.shape[1]}x{ccd.shape[0]} px; trim frames and flat with the same region"
        )
    f = np.asarray(flat.data, np.float32)
    bad = ~np.isfinite(f) | (f < min_value)
    nbad = int(bad.sum())
    if nbad > max_bad_fraction * f.size:
        raise CalibrationError(
            f"master flat has {nbad} pixels ({100 * nbad / f.size:.2f} %) below {min_value} of its "
            f"central level (zero, negative or unexposed); rebuild it from well exposed, "
            f"bias-subtracted flats, or raise max_bad_fraction to accept it"
        )
    f = np.where(bad, np.float32(1), f)
    data = np.asarray(ccd.data, np.float32)
    out = data / f
    var = variance_of(ccd)
    fvar = variance_of(flat)
    if var is not None:
        var = var / (f * f)
        if fvar is not None:
            var = var + np.where(bad, 0, fvar) * out * out / (f * f)
    header = _header(ccd)
    header["ADFLBAD"] = (nbad, "flat pixels < min not divided (masked)")
    return _new(
        ccd,
        out,
        None if var is None else np.sqrt(var),
        _or_masks(ccd.mask, flat.mask, bad if nbad else None),
        meta=header,
    ), nbad


def grid_levels(image: np.ndarray, grid: int = 8, nsigma: float = 3.0) -> np.ndarray:
    """Sky level in each cell of a ``grid`` x ``grid`` division of a frame.

    Parameters
    ----------
    image : numpy.ndarray
        ``(ny, nx)`` frame (bias removed, so that its level is the sky).
    grid : int
        Cells per axis; edge rows/columns that do not fill a cell are left out.
    nsigma : float
        Sigma-clipping threshold (median/MAD, iterated): stars, cosmic rays and hot
        pixels do not move a cell's level.

    Returns
    -------
    numpy.ndarray
        ``(grid, grid)`` sigma-clipped medians, row 0 at the bottom of the frame.
    """
    from astropy.stats import sigma_clipped_stats

    a = np.asarray(image, np.float64)
    ny, nx = a.shape
    cy, cx = ny // grid, nx // grid
    out = np.empty((grid, grid))
    for i in range(grid):
        for j in range(grid):
            cell = a[i * cy : (i + 1) * cy, j * cx : (j + 1) * cx]
            out[i, j] = sigma_clipped_stats(
                cell, sigma=nsigma, maxiters=5, cenfunc="median", stdfunc="mad_std"
            )[1]
    return out


def sky_flatness(image: np.ndarray, grid: int = 8, nsigma: float = 3.0) -> float:
    """Large-scale non-uniformity of a frame: ``std / mean`` of its :func:`grid_levels`.

    A well flat-fielded sky frame is flat to a fraction of a per cent; vignetting and dust
    donuts of an uncorrected frame make it a few per cent.

    Parameters
    ----------
    image : numpy.ndarray
        ``(ny, nx)`` frame, bias removed.
    grid : int
        Cells per axis (see :func:`grid_levels`).
    nsigma : float
        Sigma-clipping threshold (see :func:`grid_levels`).

    Returns
    -------
    float
        Relative RMS of the cell levels (fraction: 0.01 = 1 %).

    Raises
    ------
    CalibrationError
        The mean level is not positive (a frame still holding no signal, or over-subtracted).
    """
    levels = grid_levels(image, grid, nsigma)
    mean = float(np.mean(levels))
    if not np.isfinite(mean) or mean <= 0:
        raise CalibrationError(f"sky_flatness: mean level {mean:.4g} is not positive")
    return float(np.std(levels) / mean)
