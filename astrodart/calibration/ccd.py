"""Layer 2: CCD calibration as pure functions on :class:`~astropy.nddata.CCDData` and arrays.

No file I/O and no printing happen here; the file-level steps of
:mod:`astrodart.first_stage` read frames, call these functions and write the results.
Every function returns a new object and never modifies its inputs.

Units and conventions
---------------------
* Data are in ADU until :func:`gain_correct`, in electrons after it. Gains are in
  e-/ADU, read noise in electrons, exposure times in seconds.
* Uncertainties are standard deviations (:class:`~astropy.nddata.StdDevUncertainty`)
  in the unit of the data. Work arrays are float32.
* Array shapes are ``(ny, nx)`` (numpy order); FITS sections are written
  ``'[x1:x2,y1:y2]'``, 1-based and inclusive, x first.

The Poisson term of an uncertainty plane made from a raw frame (:func:`add_uncertainty`)
includes the bias pedestal, which carries no photon noise. The frame records this in
its header (``ADPEDVAR``) and :func:`subtract_bias` / :func:`subtract_overscan` remove the
pedestal's share from the variance when they remove the pedestal, so the final plane
holds read noise + photon noise of the real signal + the masters' noise.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Sequence

import bottleneck as bn
import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from scipy import ndimage

__all__ = [
    "CalibrationError",
    "CalibrationWarning",
    "parse_section",
    "trim",
    "subtract_overscan",
    "add_uncertainty",
    "gain_correct",
    "subtract_bias",
    "subtract_dark",
    "DarkModel",
    "fit_dark_model",
    "flat_normalisation",
    "normalise_flat",
    "flat_correct",
    "CombineResult",
    "combine_stack",
    "median_variance_factor",
    "repair_pixels",
    "robust_std",
    "check_same_shape",
    "is_bias_subtracted",
    "variance_of",
]

log = logging.getLogger("astrodart")

#: Header keywords written by this module (all ours; instrument keywords are read
#: through :class:`astrodart.frames.header.FrameHeader` by the callers).
KW_PEDESTAL_VAR = "ADPEDVAR"  # Poisson variance still includes the bias pedestal
KW_GAIN_USED = "ADGAIN"  # gain (e-/ADU) used for the uncertainty / gain correction
KW_RON_USED = "ADRDNOIS"  # read noise (e-) used for the uncertainty plane
KW_BIAS_SUB = "ADBIASSB"  # bias (or overscan) removed from this frame / master


class CalibrationError(ValueError):
    """A calibration cannot be done as asked (incompatible master, bad flat, missing
    quantity); the message says what is wrong and how to fix it."""


class CalibrationWarning(UserWarning):
    """Something the user should look at (pixels masked, a value ignored)."""


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def _header(ccd: CCDData) -> fits.Header:
    meta = ccd.meta
    return meta.copy() if isinstance(meta, fits.Header) else fits.Header(meta)


def _new(ccd: CCDData, data, uncertainty=None, mask=None, unit=None, meta=None) -> CCDData:
    """A new CCDData with the header copied (never shares arrays with ``ccd``)."""
    unc = None if uncertainty is None else StdDevUncertainty(np.asarray(uncertainty, np.float32))
    return CCDData(
        np.asarray(data, dtype=np.float32),
        unit=unit or ccd.unit,
        meta=meta if meta is not None else _header(ccd),
        uncertainty=unc,
        mask=None if mask is None else np.asarray(mask, bool),
        wcs=ccd.wcs,
    )


def variance_of(ccd: CCDData) -> np.ndarray | None:
    """Variance array (unit of the data squared) of ``ccd``, or None without uncertainty."""
    if ccd.uncertainty is None:
        return None
    unc = ccd.uncertainty
    if not isinstance(unc, StdDevUncertainty):
        unc = unc.represent_as(StdDevUncertainty)
    a = np.asarray(unc.array, dtype=np.float32)
    return a * a


def _or_masks(*masks):
    out = None
    for m in masks:
        if m is None:
            continue
        out = np.array(m, bool) if out is None else (out | np.asarray(m, bool))
    return out


def _block_median(a: np.ndarray, box: int) -> np.ndarray:
    """Median of each ``box`` x ``box`` block, repeated over the block (edge blocks
    padded by reflection); ``(ny, nx)`` float32."""
    ny, nx = a.shape
    py, px = (-ny) % box, (-nx) % box
    p = np.pad(np.asarray(a, np.float32), ((0, py), (0, px)), mode="reflect") if (py or px) else a
    by, bx = p.shape[0] // box, p.shape[1] // box
    blocks = p.reshape(by, box, bx, box).transpose(0, 2, 1, 3).reshape(by, bx, box * box)
    med = bn.median(blocks, axis=2)
    return np.repeat(np.repeat(med, box, axis=0), box, axis=1)[:ny, :nx].astype(np.float32)


def robust_std(values: np.ndarray, axis=None) -> np.ndarray | float:
    """Standard deviation estimated from the median absolute deviation (x 1.4826),
    ignoring NaN; insensitive to stars, cosmic rays and hot pixels."""
    med = bn.nanmedian(values, axis=axis)
    if axis is not None:
        med = np.expand_dims(med, axis)
    return 1.482602 * bn.nanmedian(np.abs(values - med), axis=axis)


def check_same_shape(ccd: CCDData, master: CCDData, what: str) -> None:
    """Raise :class:`CalibrationError` unless ``master`` has the shape and unit of ``ccd``.

    Parameters
    ----------
    ccd, master : CCDData
        The frame and the master frame.
    what : str
        Name of the master (``'master bias'``) used in the message.
    """
    if ccd.shape != master.shape:
        raise CalibrationError(
            f"{what} is {master.shape[1]}x{master.shape[0]} px but the frame is "
            f"{ccd.shape[1]}x{ccd.shape[0]} px (NAXIS1xNAXIS2); trim frames and master with "
            f"the same region, or build the {what} from frames of this size and binning"
        )
    if master.unit != ccd.unit:
        raise CalibrationError(
            f"{what} is in {master.unit} but the frame is in {ccd.unit}; apply gain_correction "
            f"to both or to neither"
        )


def is_bias_subtracted(header) -> bool:
    """True if the frame (or master) described by ``header`` had its bias removed: the
    ``ADBIASSB`` keyword, or a recorded ``subtract_bias``/``overscan_correction`` step."""
    if header is None:
        return False
    if header.get(KW_BIAS_SUB) is not None:
        return bool(header.get(KW_BIAS_SUB))
    for key in header:
        if key.startswith("ADSTEP") and str(header[key]) in (
            "subtract_bias",
            "overscan_correction",
        ):
            return True
    return False


def _remove_pedestal_variance(var, header, pedestal, unit) -> np.ndarray:
    """Take the Poisson share of a pedestal (bias level, in data units) out of ``var``."""
    if var is None or not header.get(KW_PEDESTAL_VAR, False):
        return var
    gain_unit = 1.0 if unit == u.electron else float(header.get(KW_GAIN_USED, 1.0))
    ron = float(header.get(KW_RON_USED, 0.0)) / gain_unit
    out = var - np.asarray(pedestal, np.float32) / gain_unit
    return np.maximum(out, ron * ron).astype(np.float32)


# ---------------------------------------------------------------------------------------
# trim and overscan
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# uncertainty and gain
# ---------------------------------------------------------------------------------------
def add_uncertainty(
    ccd: CCDData,
    read_noise: float,
    gain: float | None = None,
    poisson: bool = True,
    pedestal_in_data: bool | None = None,
) -> CCDData:
    """Attach an uncertainty plane of read noise and Poisson noise.

    In electrons, ``var_e = max(S_e, 0) + RON^2`` with ``S_e`` the signal in electrons;
    for data in ADU the plane is ``sqrt(max(S, 0) * gain + RON^2) / gain`` (ADU).

    Parameters
    ----------
    ccd : CCDData
        Frame in ADU or electrons, shape ``(ny, nx)``.
    read_noise : float
        Read noise in electrons (> 0).
    gain : float, optional
        Gain in e-/ADU; required when the data are in ADU, ignored in electrons.
    poisson : bool
        Include photon noise; False for bias frames (no photo-electrons).
    pedestal_in_data : bool, optional
        Whether the data still include the bias pedestal (whose Poisson share is removed
        again at bias or overscan subtraction). Default: True unless the header records
        a bias/overscan subtraction.

    Returns
    -------
    CCDData
        Same data, ``uncertainty`` set (standard deviation, unit of the data); header
        ``ADRDNOIS``, ``ADGAIN``, ``ADPEDVAR`` record the noise model.

    Raises
    ------
    CalibrationError
        Missing or non-positive read noise or gain.

    References
    ----------
    Merline & Howell 1995, ExA 6, 163 (the CCD noise equation); ccdproc ``create_deviation``.
    """
    if read_noise is None or not np.isfinite(read_noise) or read_noise < 0:
        raise CalibrationError(
            f"read noise {read_noise!r} e- is not usable; give ron= in electrons"
        )
    in_electrons = ccd.unit == u.electron
    if not in_electrons:
        if ccd.unit != u.adu:
            raise CalibrationError(f"data in {ccd.unit}; uncertainty needs ADU or electrons")
        if gain is None or not np.isfinite(gain) or gain <= 0:
            raise CalibrationError(
                f"gain {gain!r} e-/ADU is not usable; give gain= (e-/ADU) for data in ADU"
            )
    g = 1.0 if in_electrons else float(gain)
    header = _header(ccd)
    if pedestal_in_data is None:
        pedestal_in_data = not is_bias_subtracted(header)
    data = np.asarray(ccd.data, np.float32)
    var = np.full(data.shape, (read_noise / g) ** 2, np.float32)
    if poisson:
        var += np.maximum(data, 0) / g
    header[KW_RON_USED] = (float(read_noise), "read noise (e-) in the uncertainty plane")
    header[KW_GAIN_USED] = (
        float(g if not in_electrons else header.get(KW_GAIN_USED, 1.0)),
        "gain (e-/ADU) of the noise model",
    )
    header[KW_PEDESTAL_VAR] = (
        bool(poisson and pedestal_in_data),
        "Poisson variance includes the bias pedestal",
    )
    return _new(ccd, data, np.sqrt(var), ccd.mask, meta=header)


def gain_correct(ccd: CCDData, gain: float) -> CCDData:
    """Convert a frame from ADU to electrons.

    Parameters
    ----------
    ccd : CCDData
        Frame in ADU.
    gain : float
        Gain in e-/ADU (> 0).

    Returns
    -------
    CCDData
        Data and uncertainty multiplied by ``gain``, unit electron; header ``ADGAIN``.

    Raises
    ------
    CalibrationError
        Data already in electrons, or an unusable gain.
    """
    if ccd.unit == u.electron:
        raise CalibrationError(
            "frame already in electrons (BUNIT=electron); gain_correction "
            "must be applied once, to frames in ADU"
        )
    if ccd.unit != u.adu:
        raise CalibrationError(f"frame in {ccd.unit}; gain_correction converts ADU to electrons")
    if gain is None or not np.isfinite(gain) or gain <= 0:
        raise CalibrationError(
            f"gain {gain!r} is not usable; give gain= in e-/ADU or add a GAIN "
            "keyword with header_tools"
        )
    header = _header(ccd)
    header[KW_GAIN_USED] = (float(gain), "gain (e-/ADU) applied: ADU -> electrons")
    var = variance_of(ccd)
    g = np.float32(gain)
    return _new(
        ccd,
        ccd.data * g,
        None if var is None else np.sqrt(var) * g,
        ccd.mask,
        unit=u.electron,
        meta=header,
    )


# ---------------------------------------------------------------------------------------
# bias, dark
# ---------------------------------------------------------------------------------------
def subtract_bias(ccd: CCDData, master: CCDData) -> CCDData:
    """Subtract a master bias.

    Parameters
    ----------
    ccd : CCDData
        Frame, shape ``(ny, nx)``, unit ADU or electron.
    master : CCDData
        Master bias of the same shape and unit.

    Returns
    -------
    CCDData
        ``ccd - master``; variance: the frame's (minus the pedestal's Poisson share, see
        the module notes) plus the master's; masks OR-ed; header ``ADBIASSB=True``.

    Raises
    ------
    CalibrationError
        Shape or unit mismatch.
    """
    check_same_shape(ccd, master, "master bias")
    header = _header(ccd)
    var = _remove_pedestal_variance(variance_of(ccd), header, master.data, ccd.unit)
    mvar = variance_of(master)
    if var is not None and mvar is not None:
        var = var + mvar
    header[KW_PEDESTAL_VAR] = False if var is not None else header.get(KW_PEDESTAL_VAR, False)
    header[KW_BIAS_SUB] = (True, "bias removed (overscan or master bias)")
    return _new(
        ccd,
        ccd.data - master.data,
        None if var is None else np.sqrt(var),
        _or_masks(ccd.mask, master.mask),
        meta=header,
    )


def subtract_dark(
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
        ``ccd - k * dark`` with ``k`` the scale; variance adds ``k^2`` times the dark's;
        header ``ADDKSCAL`` records ``k``.

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

    Attributes
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
        """Dark of exposure ``exptime`` (s): ``(data, std or None)``, float32 ``(ny, nx)``."""
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


# ---------------------------------------------------------------------------------------
# flat field
# ---------------------------------------------------------------------------------------
def flat_normalisation(flat: np.ndarray, central_fraction: float = 0.5) -> float:
    """Robust central level of a flat: the 3-sigma-clipped median (median/MAD clipping,
    two passes) of the central ``central_fraction`` of each axis, ignoring NaN."""
    ny, nx = flat.shape
    fy, fx = int(ny * (1 - central_fraction) / 2), int(nx * (1 - central_fraction) / 2)
    core = np.asarray(flat[fy : ny - fy, fx : nx - fx], np.float32).ravel()
    core = core[np.isfinite(core)]
    if core.size == 0:
        return float("nan")
    for _ in range(2):
        med = float(np.median(core))
        sd = 1.482602 * float(np.median(np.abs(core - med)))
        if sd == 0:
            break
        core = core[np.abs(core - med) < 3 * sd]
    return float(np.median(core))


def normalise_flat(flat: CCDData, central_fraction: float = 0.5) -> tuple[CCDData, float]:
    """Divide a master flat by its robust central level (:func:`flat_normalisation`).

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


# ---------------------------------------------------------------------------------------
# combination
# ---------------------------------------------------------------------------------------
COMBINE_METHODS = ("median", "average", "sum")

#: var(median) / var(mean) of n Gaussian values, n = 0..40 (Monte Carlo, 4e5 trials;
#: pi/2 beyond). Small, even stacks are markedly better than the asymptotic pi/2.
_MEDIAN_VARIANCE_FACTOR = np.array(
    [
        1.0,
        1.0,
        1.0,
        1.344,
        1.198,
        1.430,
        1.288,
        1.472,
        1.347,
        1.494,
        1.379,
        1.517,
        1.405,
        1.522,
        1.426,
        1.526,
        1.444,
        1.529,
        1.456,
        1.538,
        1.469,
        1.541,
        1.477,
        1.542,
        1.486,
        1.538,
        1.489,
        1.540,
        1.494,
        1.543,
        1.495,
        1.555,
        1.501,
        1.548,
        1.507,
        1.555,
        1.517,
        1.551,
        1.516,
        1.558,
        1.516,
    ],
    np.float32,
)


def median_variance_factor(n) -> np.ndarray:
    """``var(median) / var(mean)`` for ``n`` Gaussian values (array or int): 1 for n <= 2,
    about 1.38 for 10, tending to pi/2."""
    n = np.asarray(n)
    table = np.append(_MEDIAN_VARIANCE_FACTOR, np.float32(np.pi / 2))
    return table[np.clip(n, 0, len(table) - 1)]


CLIPPING_METHODS = (None, "sigclip", "extrema_clipping", "minmax")


@dataclass
class CombineResult:
    """Result of :func:`combine_stack`.

    Attributes
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` float32 combined frame.
    error : numpy.ndarray
        ``(ny, nx)`` float32 standard error of ``data``.
    n_used : numpy.ndarray
        ``(ny, nx)`` int16, values combined per pixel after rejection.
    rejected_fraction : float
        Fraction of all values rejected.
    settings : dict
        Method, clipping and thresholds used.
    """

    data: np.ndarray
    error: np.ndarray
    n_used: np.ndarray
    rejected_fraction: float
    settings: dict = field(default_factory=dict)


def combine_stack(
    cube: np.ndarray,
    method: str = "median",
    clipping: str | None = "sigclip",
    low: float = 3.0,
    high: float = 3.0,
    nlow: int = 1,
    nhigh: int = 1,
    vmin: float | None = None,
    vmax: float | None = None,
    variances: np.ndarray | None = None,
    weights: Sequence[float] | None = None,
    iterations: int = 2,
    common_variance: np.ndarray | None = None,
) -> CombineResult:
    """Combine a stack of frames pixel by pixel, with optional rejection.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(n, ny, nx)`` stack (NaN = missing value). Not modified.
    method : {'median', 'average', 'sum'}
        Combination of the kept values ('sum' is the average times the number of frames,
        so rejected values do not bias it).
    clipping : {None, 'sigclip', 'extrema_clipping', 'minmax'}
        'sigclip': reject values below ``median - low * s`` or above ``median + high * s``
        with ``s`` the MAD-based standard deviation per pixel, ``iterations`` times (a
        median/MAD centre, unlike mean/std clipping, can reject with few frames);
        'extrema_clipping': drop the ``nlow`` lowest and ``nhigh`` highest values;
        'minmax': drop values outside ``[vmin, vmax]``.
    low, high : float
        Sigma-clipping thresholds.
    nlow, nhigh : int
        Numbers of extreme values dropped by 'extrema_clipping'.
    vmin, vmax : float, optional
        Limits of 'minmax'.
    variances : numpy.ndarray, optional
        ``(n, ny, nx)`` variances of the inputs; when given, the error of the result is
        propagated from them, otherwise it is estimated from the scatter of the stack.
    weights : sequence of float, optional
        One weight per frame for 'average'/'sum'.
    iterations : int
        Sigma-clipping passes.
    common_variance : numpy.ndarray, optional
        ``(ny, nx)`` part of ``variances`` shared by all frames (the variance of a master
        subtracted from all of them). It does not average down: the error is
        ``c * sqrt(sum(var_i - common)) / n`` combined in quadrature with ``sqrt(common)``
        (``c = sqrt(pi/2)`` for a median, 1 for a mean).

    Returns
    -------
    CombineResult
        The error of a median is that of the mean of the kept values times
        ``sqrt(median_variance_factor(n))`` (``sqrt(pi/2)`` for many frames).

    Raises
    ------
    CalibrationError
        Unknown method or clipping name, or an empty stack.
    """
    if method not in COMBINE_METHODS:
        raise CalibrationError(f"combining_method={method!r} unknown; use one of {COMBINE_METHODS}")
    if clipping not in CLIPPING_METHODS:
        raise CalibrationError(
            f"clipping_method={clipping!r} unknown; use one of "
            f"{[c for c in CLIPPING_METHODS if c]} or None"
        )
    cube = np.asarray(cube, np.float32)
    if cube.ndim != 3 or cube.shape[0] == 0:
        raise CalibrationError("nothing to combine: give at least one frame")
    n = cube.shape[0]
    work = cube.copy()
    finite_before = np.isfinite(work)
    median_done = None  # per-pixel median already known where nothing was rejected
    if clipping == "sigclip" and n >= 3:
        centre = bn.nanmedian(work, axis=0)
        spread = 1.482602 * bn.nanmedian(np.abs(work - centre), axis=0)
        # a MAD from a few values is often far too small: floor it with the median MAD
        # of its 32x32 block (the noise varies slowly), which keeps hot pixels' own
        # larger spread
        floor = _block_median(np.nan_to_num(spread), 32)
        spread = np.maximum(spread, floor)
        with np.errstate(invalid="ignore"):
            reject = (work < centre - low * spread) | (work > centre + high * spread)
        reject &= spread > 0
        work[reject] = np.nan
        affected = reject.any(axis=0)
        median_done = (centre, ~affected)
        # further passes only where the first one rejected something (compact copy)
        sub = work[:, affected]
        sub_floor = floor[affected]
        for _ in range(iterations - 1):
            if sub.size == 0:
                break
            c = bn.nanmedian(sub, axis=0)
            sp = np.maximum(1.482602 * bn.nanmedian(np.abs(sub - c), axis=0), sub_floor)
            with np.errstate(invalid="ignore"):
                rej = (sub < c - low * sp) | (sub > c + high * sp)
            rej &= sp > 0
            if not rej.any():
                break
            sub[rej] = np.nan
        work[:, affected] = sub
    elif clipping == "extrema_clipping":
        if nlow + nhigh >= n:
            raise CalibrationError(f"extrema_clipping drops {nlow}+{nhigh} of only {n} values")
        order = np.argsort(np.where(np.isfinite(work), work, np.inf), axis=0)
        nfin = finite_before.sum(axis=0)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n)[:, None, None], axis=0)
        work[(rank < nlow) | ((rank >= nfin - nhigh) & (rank < nfin))] = np.nan
    elif clipping == "minmax":
        with np.errstate(invalid="ignore"):
            if vmin is not None:
                work[work < vmin] = np.nan
            if vmax is not None:
                work[work > vmax] = np.nan
    kept = np.isfinite(work)
    n_used = kept.sum(axis=0).astype(np.int16)
    nz = np.maximum(n_used, 1).astype(np.float32)
    if method == "median" and median_done is not None:
        centre, unchanged = median_done
        data = np.array(centre, np.float32)
        changed = ~unchanged
        if changed.any():
            data[changed] = bn.nanmedian(work[:, changed], axis=0)
    elif method == "median":
        data = bn.nanmedian(work, axis=0)
    elif weights is not None:
        w = np.asarray(weights, np.float32)[:, None, None] * kept
        data = bn.nansum(work * w, axis=0) / np.maximum(w.sum(axis=0), 1e-30)
    else:
        data = bn.nanmean(work, axis=0)
    common = None
    if variances is not None:
        v = np.asarray(variances, np.float32)
        if common_variance is not None:
            common = np.asarray(common_variance, np.float32)
            v = np.maximum(v - common, 0)
        v = np.where(kept, v, 0)
        error = np.sqrt(v.sum(axis=0)) / nz
    else:
        if n > 1:
            # the scatter of a few values is noisy: average the variance over 5x5 pixels
            # (an unbiased estimate where the noise varies slowly)
            var = np.nan_to_num(bn.nanvar(work, axis=0, ddof=1))
            error = np.sqrt(ndimage.uniform_filter(var, size=5, mode="nearest") / nz)
        else:
            error = np.zeros_like(data)
    if method == "median":
        error = error * np.sqrt(median_variance_factor(n_used)).astype(np.float32)
    if common is not None:
        error = np.sqrt(error * error + common)
    if method == "sum":
        data = data * n
        error = error * n
    data = np.asarray(data, np.float32)
    empty = n_used == 0
    if empty.any():  # every value rejected or missing: fall back to the plain median
        data[empty] = np.nan_to_num(bn.nanmedian(cube, axis=0)[empty])
    rejected = 1.0 - kept.sum() / max(finite_before.sum(), 1)
    settings = {"method": method, "clipping": clipping, "n": n}
    if clipping == "sigclip":
        settings.update(low=low, high=high, centre="median", spread="MAD", iterations=iterations)
    elif clipping == "extrema_clipping":
        settings.update(nlow=nlow, nhigh=nhigh)
    elif clipping == "minmax":
        settings.update(vmin=vmin, vmax=vmax)
    return CombineResult(data, np.asarray(error, np.float32), n_used, float(rejected), settings)


# ---------------------------------------------------------------------------------------
# bad pixels
# ---------------------------------------------------------------------------------------
def repair_pixels(
    data: np.ndarray, bad: np.ndarray, sigma: float = 1.5, max_passes: int = 6
) -> np.ndarray:
    """Replace bad pixels by the mean of their good neighbours.

    First the mean of the good pixels among the 8 neighbours (which follows steep
    profiles such as a star's wing); pixels with no good neighbour (larger defects) are
    then filled by normalised convolution with a Gaussian, ``G*(d g) / G*(g)`` with ``g``
    the good-pixel map, the kernel doubling at each pass.

    Parameters
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` image.
    bad : numpy.ndarray
        ``(ny, nx)`` bool, True where the pixel must be replaced (non-finite pixels are
        always replaced).
    sigma : float
        Gaussian kernel width (px) of the first wide pass.
    max_passes : int
        Wide passes before giving up (pixels left get the median of the good pixels).

    Returns
    -------
    numpy.ndarray
        float32 copy of ``data`` with bad pixels replaced; good pixels unchanged.

    References
    ----------
    Knutsson & Westin 1993, "Normalized and differential convolution", CVPR.
    """
    out = np.array(data, np.float32)
    todo = np.asarray(bad, bool) | ~np.isfinite(out)
    if not todo.any():
        return out
    good = (~todo).astype(np.float32)
    filled = np.where(todo, 0, out).astype(np.float32)
    # mean of the good 8-neighbours, gathered at the bad pixels only
    ny, nx = out.shape
    ys, xs = np.nonzero(todo)
    total = np.zeros(ys.size, np.float64)
    count = np.zeros(ys.size, np.float64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            yy, xx = np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)
            w = good[yy, xx] * inside
            total += w * filled[yy, xx]
            count += w
    ok = count > 0
    out[ys[ok], xs[ok]] = (total[ok] / count[ok]).astype(np.float32)
    todo[ys[ok], xs[ok]] = False
    s = sigma
    for _ in range(max_passes):
        if not todo.any():
            break
        num = ndimage.gaussian_filter(filled, s, mode="nearest", truncate=3.0)
        den = ndimage.gaussian_filter(good, s, mode="nearest", truncate=3.0)
        ok = todo & (den > 1e-3)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        s *= 2
    if todo.any():
        good_values = np.asarray(data, np.float32)[good > 0]
        out[todo] = np.median(good_values) if good_values.size else 0.0
    return out
