"""Layer 2: dark current: subtraction scaled to the exposure time, and the per-pixel
linear model ``D(t) = A t + B`` that interpolates master darks between exposure times.

Conventions: see :mod:`astrodart.calibration.base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from astropy.nddata import CCDData

from astrodart.calibration.base import (
    KW_PEDESTAL_VAR,
    CalibrationError,
    _header,
    _new,
    _or_masks,
    check_same_shape,
    is_bias_subtracted,
    variance_of,
)
from astrodart.calibration.noise import _remove_pedestal_variance

__all__ = ["subtract_master_dark", "DarkModel", "fit_dark_model"]


def subtract_master_dark(
    ccd: CCDData, dark: CCDData, exptime: float, dark_exptime: float, scale: bool = True
) -> CCDData:
    """Subtract a master dark scaled to the frame's exposure time.

    Parameters
    ----------
    ccd : CCDData
        Frame (bias already subtracted when the dark is scaled), shape ``(ny, nx)``.
    dark : CCDData
        Master dark of the same shape and unit.
    exptime, dark_exptime : float
        Exposure times (s) of the frame and of the master dark.
    scale : bool
        Scale the dark by ``exptime / dark_exptime`` (requires a bias-subtracted dark);
        without scaling the exposure times must match.

    Returns
    -------
    CCDData
        ``ccd - k * dark`` with ``k`` the scale; variance adds ``k^2`` times the dark's
        (a dark that holds the bias also takes the pedestal's Poisson share out of the
        frame's variance, as a bias subtraction does); header ``ADDKSCAL`` records ``k``.

    Raises
    ------
    CalibrationError
        Shape/unit mismatch, non-positive dark exposure, or unequal exposure times
        without scaling.
    """
    check_same_shape(ccd, dark, "master dark")
    if dark_exptime is None or not dark_exptime > 0:
        raise CalibrationError(f"master dark exposure time {dark_exptime!r} s is not positive")
    if scale:
        k = float(exptime) / float(dark_exptime)
    else:
        if not np.isclose(exptime, dark_exptime, rtol=1e-3):
            raise CalibrationError(
                f"frame exposure {exptime} s differs from the dark's {dark_exptime} s and the "
                "dark cannot be scaled (it still contains the bias); subtract the master bias "
                "from the darks before combining them, or use dark_interpolation"
            )
        k = 1.0
    header = _header(ccd)
    var = variance_of(ccd)
    if not scale and not is_bias_subtracted(dark.meta) and var is not None:
        # a dark that holds the bias takes the frame's pedestal away, and with it the
        # pedestal's Poisson share of the variance (its median level: hot pixels keep theirs)
        var = _remove_pedestal_variance(var, header, float(np.nanmedian(dark.data)), ccd.unit)
        header[KW_PEDESTAL_VAR] = False
    dvar = variance_of(dark)
    if var is not None and dvar is not None:
        var = var + np.float32(k * k) * dvar
    header["ADDKSCAL"] = (k, "master dark scale factor (exposure ratio)")
    return _new(
        ccd,
        ccd.data - np.float32(k) * dark.data,
        None if var is None else np.sqrt(var),
        _or_masks(ccd.mask, dark.mask),
        meta=header,
    )


@dataclass
class DarkModel:
    """Per-pixel linear dark model ``D(t) = slope * t + intercept`` fitted by least squares.

    Built by :func:`fit_dark_model`; the fields are also its attributes.

    Parameters
    ----------
    slope : numpy.ndarray
        ``(ny, nx)``, dark current in data units per second.
    intercept : numpy.ndarray
        ``(ny, nx)``, level at zero exposure (the bias when the darks include it).
    exptimes : tuple of float
        Exposure times (s) used in the fit.
    slope_var, intercept_var, covariance : numpy.ndarray or None
        Variances and covariance of the fitted parameters (from the inputs' variances),
        used to give interpolated darks an uncertainty plane.
    residual_rms : float
        RMS of the fit residuals over all pixels (0 with two exposure times).
    common_variance : numpy.ndarray or None
        Variance shared by all the masters (that of one master bias subtracted from all
        of them); it passes unchanged into every interpolated dark.
    """

    slope: np.ndarray
    intercept: np.ndarray
    exptimes: tuple
    slope_var: np.ndarray | None = None
    intercept_var: np.ndarray | None = None
    covariance: np.ndarray | None = None
    residual_rms: float = 0.0
    common_variance: np.ndarray | None = None

    def evaluate(self, exptime: float) -> tuple[np.ndarray, np.ndarray | None]:
        """The dark of an exposure time.

        Parameters
        ----------
        exptime : float
            Exposure time (s).

        Returns
        -------
        data : numpy.ndarray
            ``(ny, nx)`` float32 dark, unit of the masters.
        std : numpy.ndarray or None
            ``(ny, nx)`` float32 standard deviation propagated through the fit (None
            when the masters had no uncertainty).
        """
        t = np.float32(exptime)
        data = self.slope * t + self.intercept
        if self.slope_var is None:
            return data.astype(np.float32), None
        var = t * t * self.slope_var + self.intercept_var + 2 * t * self.covariance
        if self.common_variance is not None:
            # the prediction's weights sum to 1: a term common to all masters stays whole
            var = var + self.common_variance
        return data.astype(np.float32), np.sqrt(np.maximum(var, 0)).astype(np.float32)


def fit_dark_model(
    exptimes: Sequence[float],
    darks: Sequence[np.ndarray],
    variances: Sequence[np.ndarray] | None = None,
    common_variance: np.ndarray | None = None,
) -> DarkModel:
    """Fit ``D(t) = A t + B`` per pixel to master darks of several exposure times.

    Weighted least squares with one weight per exposure (the median inverse variance of
    each master), solved in closed form for all pixels at once.

    Parameters
    ----------
    exptimes : sequence of float
        Exposure times (s), at least two distinct values. A master bias may enter as a
        dark of exposure 0 when the darks are not bias-subtracted.
    darks : sequence of numpy.ndarray
        Master darks, all ``(ny, nx)``, same unit.
    variances : sequence of numpy.ndarray, optional
        Their variance planes, for weights and for the fit's uncertainty.
    common_variance : numpy.ndarray, optional
        The part of ``variances`` shared by all masters (one master bias subtracted from
        all of them): it is correlated between the masters, so it is propagated whole
        rather than averaged.

    Returns
    -------
    DarkModel

    Raises
    ------
    CalibrationError
        Fewer than two distinct exposure times, or shapes that differ.

    References
    ----------
    The linear dark model interpolated between exposure times as in astro_reduce
    (Delorme; ``dark = t x A + B``); weighted linear regression (e.g. Bevington & Robinson
    2003, ch. 6).
    """
    t = np.asarray(exptimes, np.float64)
    if len(t) != len(darks) or len(np.unique(t)) < 2:
        raise CalibrationError(
            f"dark interpolation needs master darks of at least two different "
            f"exposure times (got {sorted(set(t.tolist()))} s); add darks of "
            "another exposure, or the master bias as exposure 0 when the darks "
            "are not bias-subtracted"
        )
    shape = np.shape(darks[0])
    if any(np.shape(d) != shape for d in darks):
        raise CalibrationError("master darks of different shapes cannot be interpolated")
    if variances is not None and all(v is not None for v in variances):
        w = np.array([1.0 / max(float(np.median(v)), 1e-12) for v in variances])
    else:
        w = np.ones_like(t)
        variances = None
    sw, swt, swtt = w.sum(), (w * t).sum(), (w * t * t).sum()
    det = sw * swtt - swt * swt
    sy = np.zeros(shape, np.float64)
    sty = np.zeros(shape, np.float64)
    for wi, ti, d in zip(w, t, darks):
        sy += wi * d
        sty += wi * ti * d
    slope = (sw * sty - swt * sy) / det
    intercept = (swtt * sy - swt * sty) / det
    # residuals and parameter variances from the inputs' variances: each parameter is a
    # linear combination sum_i c_i D_i of the darks
    ca = [(sw * wi * ti - swt * wi) / det for wi, ti in zip(w, t)]
    cb = [(swtt * wi - swt * wi * ti) / det for wi, ti in zip(w, t)]
    res2, npts = 0.0, 0
    for ti, d in zip(t, darks):
        r = d - (slope * ti + intercept)
        res2 += float(np.mean(r * r))
        npts += 1
    svar = ivar = cov = None
    common = None
    if variances is not None:
        if common_variance is not None:
            common = np.asarray(common_variance, np.float32)
            variances = [np.maximum(v - common, 0) for v in variances]
        svar = sum(c * c * v for c, v in zip(ca, variances)).astype(np.float32)
        ivar = sum(c * c * v for c, v in zip(cb, variances)).astype(np.float32)
        cov = sum(a * b * v for a, b, v in zip(ca, cb, variances)).astype(np.float32)
    return DarkModel(
        slope.astype(np.float32),
        intercept.astype(np.float32),
        tuple(t.tolist()),
        svar,
        ivar,
        cov,
        float(np.sqrt(res2 / npts)),
        common,
    )
