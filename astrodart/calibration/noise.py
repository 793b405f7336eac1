"""Layer 2: the noise of a frame: its uncertainty plane (predicted from read noise and
photon noise), ADU to electrons, its measured background and noise maps (the noise model
of the cosmic-ray detection), and the one robust standard deviation of astrodart
(:func:`robust_std`).

Conventions: see :mod:`astrodart.calibration.base`.
"""

from __future__ import annotations

import bottleneck as bn
import numpy as np
from astropy import units as u
from astropy.nddata import CCDData
from astropy.stats import mad_std, sigma_clip
from scipy import ndimage

from astrodart.calibration.base import (
    KW_GAIN_USED,
    KW_PEDESTAL_VAR,
    KW_RON_USED,
    CalibrationError,
    _header,
    _new,
    is_bias_subtracted,
    variance_of,
)

__all__ = [
    "add_uncertainty",
    "gain_correct",
    "robust_std",
    "background_maps",
    "noise_variance",
    "separable_median",
]


def _remove_pedestal_variance(var, header, pedestal, unit) -> np.ndarray:
    """Take the Poisson share of a pedestal (bias level, in data units) out of ``var``."""
    if var is None or not header.get(KW_PEDESTAL_VAR, False):
        return var
    gain_unit = 1.0 if unit == u.electron else float(header.get(KW_GAIN_USED, 1.0))
    ron = float(header.get(KW_RON_USED, 0.0)) / gain_unit
    out = var - np.asarray(pedestal, np.float32) / gain_unit
    return np.maximum(out, ron * ron).astype(np.float32)


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


def robust_std(values: np.ndarray, clip: float | None = None, axis: int | None = None):
    """Robust standard deviation of a sample: the one estimator of astrodart.

    Two forms of the same job, for the two situations of a reduction:

    * ``clip=None``: ``1.4826 x`` the median absolute deviation (:func:`astropy.stats.mad_std`).
      Breakdown point 50 %: for thresholds on maps where outliers are many (hot pixels in a
      dark, defects in a flat, stars on a sky).
    * ``clip=k``: the standard deviation (``ddof=1``) of the values within ``k`` robust
      sigma of the median, clipped iteratively (:func:`astropy.stats.sigma_clip`, median
      centre, ``mad_std`` spread, at most 5 passes). Nearly the efficiency of the plain
      standard deviation on Gaussian noise, and not biased by integer-valued data: for
      measuring noise (read noise from bias pairs, light-curve scatter). On the
      HAT-P-27 bias pair the MAD form reads 6.29 ADU where this one reads 6.74 ADU.

    Parameters
    ----------
    values : array_like
        The sample, any shape; NaN values are ignored (and, with ``clip``, infinities).
    clip : float, optional
        Clipping threshold in robust sigma; None for the MAD form.
    axis : int, optional
        Axis along which the MAD form is computed (default: the whole array). Not
        supported with ``clip``.

    Returns
    -------
    float or numpy.ndarray
        In the unit of ``values``; an array when ``axis`` is given. NaN when the sample
        is empty or, with ``clip``, has fewer than 3 values left.

    Raises
    ------
    ValueError
        ``axis`` given together with ``clip``.

    References
    ----------
    Rousseeuw, P. J. & Croux, C. 1993, JASA 88, 1273 (the MAD and its 1.4826 factor);
    astropy.stats (``mad_std``, ``sigma_clip``).
    """
    if clip is None:
        return mad_std(values, axis=axis, func=bn.nanmedian)
    if axis is not None:
        raise ValueError("robust_std: axis is supported by the MAD form only (clip=None)")
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 3:
        return float("nan")
    kept = sigma_clip(
        v, sigma=clip, maxiters=5, cenfunc="median", stdfunc="mad_std", masked=False
    )
    return float(np.std(kept, ddof=1)) if kept.size > 2 else float("nan")


def separable_median(data: np.ndarray, size: int) -> np.ndarray:
    """Approximate ``size x size`` median filter: a running median along rows, then
    along columns (reflecting edges).

    Much faster than the 2-D median for large boxes and close to it on images (the same
    approximation as astroscrappy's ``sepmed``).

    Parameters
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` image.
    size : int
        Box size (px); made odd.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 filtered image.
    """
    size = int(size) | 1  # odd
    h = size // 2
    out = np.asarray(data, np.float32)
    for axis in (1, 0):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (h, h)
        padded = np.pad(out, pad, mode="reflect")
        moved = bn.move_median(padded, window=size, axis=axis)
        sl = [slice(None), slice(None)]
        sl[axis] = slice(2 * h, 2 * h + out.shape[axis])
        out = moved[tuple(sl)]
    return np.ascontiguousarray(out, np.float32)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` linear-interpolation weights from ``n_in`` box centres to pixel
    centres (constant beyond the outer centres)."""
    centres = (np.arange(n_in) + 0.5) * n_out / n_in - 0.5
    x = np.clip(np.arange(n_out, dtype=np.float64), centres[0], centres[-1])
    w = np.zeros((n_out, n_in), np.float32)
    if n_in == 1:
        w[:, 0] = 1
        return w
    j = np.clip(np.searchsorted(centres, x, side="right") - 1, 0, n_in - 2)
    t = (x - centres[j]) / (centres[j + 1] - centres[j])
    w[np.arange(n_out), j] = 1 - t
    w[np.arange(n_out), j + 1] = t
    return w


def background_maps(
    data: np.ndarray, box: int = 64, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth background level and background noise of an image.

    Robust statistics in ``box`` x ``box`` boxes (median and 1.4826 x MAD after one
    3-sigma clipping pass against stars), a 3x3 median over the box grid, then bilinear
    interpolation to every pixel.

    Parameters
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` image.
    box : int
        Box size (px).
    mask : numpy.ndarray, optional
        ``(ny, nx)`` bool, pixels left out of the statistics.

    Returns
    -------
    background, background_std : numpy.ndarray
        ``(ny, nx)`` float32 maps in the units of ``data``.
    """
    a = np.asarray(data, np.float32)
    if mask is not None:
        a = np.where(mask, np.nan, a)
    ny, nx = a.shape
    nby, nbx = max(1, ny // box), max(1, nx // box)
    by, bx = ny // nby, nx // nbx
    step = 2 if min(by, bx) >= 16 else 1  # a quarter of the pixels is plenty for a median
    blocks = a[: nby * by : step, : nbx * bx : step]
    by, bx = blocks.shape[0] // nby, blocks.shape[1] // nbx
    blocks = blocks[: nby * by, : nbx * bx].reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(nby, nbx, by * bx)
    med = bn.nanmedian(blocks, axis=2)
    std = robust_std(blocks, axis=2)
    clipped = np.where(blocks > (med + 3 * std)[..., None], np.nan, blocks)
    med = bn.nanmedian(clipped, axis=2)
    std = robust_std(clipped, axis=2)
    fill_m, fill_s = np.nanmedian(med), np.nanmedian(std)
    med = np.where(np.isfinite(med), med, fill_m if np.isfinite(fill_m) else 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, fill_s if fill_s > 0 else 1.0)
    if nby > 2 and nbx > 2:
        med = ndimage.median_filter(med, size=3, mode="nearest")
        std = ndimage.median_filter(std, size=3, mode="nearest")
    wy, wx = _interp_matrix(ny, nby), _interp_matrix(nx, nbx)
    bkg = wy @ med.astype(np.float32) @ wx.T
    bstd = wy @ std.astype(np.float32) @ wx.T
    return np.ascontiguousarray(bkg, np.float32), np.ascontiguousarray(bstd, np.float32)


def noise_variance(
    data: np.ndarray, gain: float = 1.0, box: int = 64, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel variance expected without cosmic rays: measured background noise plus
    the photon noise of sources above the background.

    Parameters
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` image in ADU or electrons.
    gain : float
        e-/ADU of ``data`` (1 for electrons); converts the source excess to variance.
    box : int
        Box size (px) of the background grid (:func:`background_maps`).
    mask : numpy.ndarray, optional
        ``(ny, nx)`` bool, pixels to ignore in the statistics (hot pixels, defects).

    Returns
    -------
    variance, background, background_std : numpy.ndarray
        ``(ny, nx)`` float32 maps in the units of ``data`` (squared for the variance):
        ``variance = background_std**2 + max(data - background, 0) / gain``.
    """
    bkg, bstd = background_maps(data, box, mask)
    return _variance(data, bkg, bstd, gain), bkg, bstd


def _variance(data, bkg, bstd, gain) -> np.ndarray:
    excess = np.maximum(np.nan_to_num(np.asarray(data, np.float32) - bkg), 0)
    return (bstd * bstd + excess / np.float32(gain)).astype(np.float32)
