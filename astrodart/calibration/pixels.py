"""Layer 2: bad pixels: the bad-pixel map (hot, warm, low and deviant flat pixels) and
their repair by interpolation from good neighbours.

Conventions: see :mod:`astrodart.calibration.base`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from astrodart.calibration.base import CalibrationError
from astrodart.calibration.noise import robust_std

__all__ = [
    "BAD_HOT",
    "BAD_FLAT_LOW",
    "BAD_FLAT_DEVIANT",
    "BAD_NONFINITE",
    "BAD_WARM",
    "REPAIR_BITS",
    "hot_pixel_mask",
    "flat_defect_mask",
    "build_bad_pixel_map",
    "repair_pixels",
]

#: Bits of a bad-pixel map (uint8): hot in the dark, low/dead in the flat, deviant
#: (pixel-scale defect) in the flat, non-finite in a master, warm in the dark (dark
#: subtraction handles them, but their dark signal flickers: cosmic-ray detection
#: should not take them for hits).
BAD_HOT, BAD_FLAT_LOW, BAD_FLAT_DEVIANT, BAD_NONFINITE, BAD_WARM = 1, 2, 4, 8, 16
#: Bits repaired by default by interpolation (all but "warm").
REPAIR_BITS = BAD_HOT | BAD_FLAT_LOW | BAD_FLAT_DEVIANT | BAD_NONFINITE


def hot_pixel_mask(
    rate: np.ndarray, nsigma: float = 5.0, min_rate: float | None = None
) -> tuple[np.ndarray, float]:
    """Hot pixels: dark current above ``median + nsigma * robust_std`` (and above
    ``min_rate`` when given).

    Parameters
    ----------
    rate : numpy.ndarray
        ``(ny, nx)`` dark current (unit / s) of a bias-subtracted master dark.
    nsigma : float
        Threshold in robust sigma (:func:`~astrodart.calibration.noise.robust_std`, MAD
        form) above the median rate.
    min_rate : float, optional
        Lowest rate (unit / s) a hot pixel must also exceed.

    Returns
    -------
    (numpy.ndarray, float)
        ``(ny, nx)`` bool mask and the threshold rate used.
    """
    r = np.asarray(rate, np.float32)
    med = float(np.nanmedian(r))
    sd = float(robust_std(r))
    thr = med + nsigma * sd
    if min_rate is not None:
        thr = max(thr, float(min_rate))
    with np.errstate(invalid="ignore"):
        return (r > thr) | ~np.isfinite(r), thr


def flat_defect_mask(
    flat: np.ndarray,
    min_value: float = 0.5,
    nsigma: float = 7.0,
    min_deviation: float = 0.03,
    box: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Defective pixels of a normalised flat.

    Parameters
    ----------
    flat : numpy.ndarray
        ``(ny, nx)`` normalised master flat (level ~1).
    min_value : float
        Pixels below this response are low/dead (vignetted corners of a real optical
        system stay well above 0.5; dust donuts are a few per cent deep).
    nsigma, min_deviation : float
        A pixel deviating from the ``box`` x ``box`` median of its neighbours by more than
        ``max(nsigma * robust_std, min_deviation)`` (relative) is a pixel-scale defect.
        Dust donuts and vignetting are smooth on that scale and are not flagged.
    box : int
        Size (px) of the local median.

    Returns
    -------
    low, deviant : numpy.ndarray
        ``(ny, nx)`` bool masks.
    """
    f = np.asarray(flat, np.float32)
    finite = np.isfinite(f)
    safe = np.where(finite, f, 1.0).astype(np.float32)
    low = (safe < min_value) | ~finite
    local = ndimage.median_filter(safe, size=box, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(local > 0, safe / local, np.nan)
    dev = np.abs(ratio - 1)
    thr = max(nsigma * float(robust_std(ratio)), min_deviation)
    deviant = (dev > thr) & ~low
    return low, deviant


def build_bad_pixel_map(
    dark_rate: np.ndarray | None = None,
    flat: np.ndarray | None = None,
    *,
    hot_sigma: float = 10.0,
    warm_sigma: float = 5.0,
    hot_min_rate: float | None = None,
    flat_min: float = 0.5,
    flat_sigma: float = 7.0,
    flat_min_deviation: float = 0.03,
) -> np.ndarray:
    """Bad-pixel map from a master dark (as a rate) and/or a normalised master flat.

    Parameters
    ----------
    dark_rate : numpy.ndarray, optional
        ``(ny, nx)`` dark current (unit / s) of a bias-subtracted master dark.
    flat : numpy.ndarray, optional
        ``(ny, nx)`` normalised master flat.
    hot_sigma : float
        Hot-pixel threshold (:func:`hot_pixel_mask`); the default (10 sigma) keeps the
        "hot" bit to pixels whose dark signal dark subtraction cannot be trusted to remove.
    warm_sigma : float
        Pixels between ``warm_sigma`` and ``hot_sigma`` get the "warm" bit.
    hot_min_rate : float, optional
        Lowest rate of a hot or warm pixel (:func:`hot_pixel_mask`).
    flat_min, flat_sigma, flat_min_deviation : float
        Flat defect thresholds (:func:`flat_defect_mask`).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` uint8 bit map: :data:`BAD_HOT` | :data:`BAD_FLAT_LOW` |
        :data:`BAD_FLAT_DEVIANT` | :data:`BAD_NONFINITE` | :data:`BAD_WARM`; 0 = good.

    Raises
    ------
    CalibrationError
        Neither input given, or shapes that differ.
    """
    if dark_rate is None and flat is None:
        raise CalibrationError("a bad-pixel map needs a master dark, a master flat, or both")
    shapes = {np.shape(a) for a in (dark_rate, flat) if a is not None}
    if len(shapes) > 1:
        raise CalibrationError(f"master dark and flat have different shapes {sorted(shapes)}")
    shape = shapes.pop()
    bpm = np.zeros(shape, np.uint8)
    if dark_rate is not None:
        hot, _ = hot_pixel_mask(dark_rate, hot_sigma, hot_min_rate)
        warm, _ = hot_pixel_mask(dark_rate, min(warm_sigma, hot_sigma), hot_min_rate)
        bpm[hot] |= BAD_HOT
        bpm[warm & ~hot] |= BAD_WARM
        bpm[~np.isfinite(dark_rate)] |= BAD_NONFINITE
    if flat is not None:
        low, deviant = flat_defect_mask(flat, flat_min, flat_sigma, flat_min_deviation)
        bpm[low] |= BAD_FLAT_LOW
        bpm[deviant] |= BAD_FLAT_DEVIANT
        bpm[~np.isfinite(flat)] |= BAD_NONFINITE
    return bpm


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
        A float32 copy of ``data`` with bad pixels replaced; good pixels unchanged.

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
