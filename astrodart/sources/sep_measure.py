"""Layer 2: fast per-frame measurement with sep (Source Extractor as a library): background,
sky level and noise, detections, and FWHM and ellipticity of the stars.

Pure functions on 2-D arrays: no file I/O, no printing. Pixel coordinates are 0-based
(numpy/photutils/sep convention). Widths are in pixels.

This is the quick look the per-frame quality table needs (:mod:`astrodart.pipeline.quality`,
about 0.03 s a 1024 x 1024 frame); :func:`astrodart.sources.psf.measure_fwhm` (a
pixel-integrated Moffat fit, 50-100x slower) stays the reference width for photometry
apertures and seeing reports.

Methods
-------
* Background and sky (:func:`sep_measure`): ``sep.Background``, SExtractor's mesh of
  clipped modes (64 px boxes, 3 x 3 median filter); the frame's sky level and rms are its
  global values (``globalback``, ``globalrms``).
* Detection: ``sep.extract`` on the background-subtracted frame with SExtractor's default
  3 x 3 filter and ``threshold`` in units of the *pixel* noise (SExtractor's
  ``DETECT_THRESH`` convention: a 5-sigma threshold here is about 13 sigma of the
  filtered noise that :func:`astrodart.sources.stars.find_stars` counts in, so it finds
  fewer, brighter sources; a lower threshold costs sep much more time on noisy frames).
* FWHM and ellipticity (:func:`adaptive_moments`): elliptical Gaussian-weighted
  ("adaptive") second moments of isolated, unsaturated, high signal-to-noise stars
  (Bernstein & Jarvis 2002): the weight's covariance is iterated until it equals the
  star's, which for a Gaussian star is its covariance exactly; the pixel's own variance
  (1/12 px**2 per axis) is subtracted. FWHM is ``2.3548 (l1 l2) ** 0.25`` (the geometric
  mean of the axes, as :func:`~astrodart.sources.psf.fit_stars` reports it), ellipticity
  ``1 - sqrt(l2 / l1)``; the frame's values are sigma-clipped medians over the stars.
* Against the Moffat fit: the moments measure the Gaussian-equivalent width. For
  Gaussian-like stars (fitted Moffat ``beta`` >= 10) it agrees with
  :func:`~astrodart.sources.psf.measure_fwhm` within a few per cent. Stars with Moffat wings (``beta`` ~ 3-5) read wider here (the wings widen the
  moments: 7 % at ``beta`` = 4.8, 16 % at 2.5), and flat-topped (defocused) stars read
  narrower (their half-maximum width is larger than their Gaussian-equivalent width; the
  Moffat fit runs to its ``beta`` bound there). Measured ratios on the sample nights are in
  ``benchmarks/RESULTS.md``.

References
----------
Bertin, E., Arnouts, S. 1996, A&AS 117, 393 (SExtractor).

Barbary, K. 2016, JOSS 1, 58 (SEP: Source Extractor as a library).

Bernstein, G. M., Jarvis, M. 2002, AJ 123, 583 (adaptive moments).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import mad_std
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from astrodart.sources._image import _as_mask, _cutouts
from astrodart.sources.stars import GAUSSIAN_SIGMA_TO_FWHM

__all__ = ["SepMeasurement", "adaptive_moments", "sep_measure", "sep_positions"]

_PIXEL_VARIANCE = 1.0 / 12.0  # variance of a uniform 1-px box


@dataclass
class SepMeasurement:
    """What :func:`sep_measure` found on one frame.

    Parameters
    ----------
    sky_level, sky_rms : float
        Global sky level and rms of the frame (sep's ``globalback``, ``globalrms``; data
        units).
    fwhm : float
        Sigma-clipped median FWHM of the measured stars, pixels; NaN when none was usable.
    fwhm_err : float
        Standard error of that median (1.253 x MAD-std / sqrt(n)), pixels.
    ellipticity : float
        Median ``1 - minor / major`` over the same stars.
    n_stars : int
        Stars the medians are taken over.
    detections : astropy.table.Table
        Every detection, brightest first: ``x``, ``y`` (0-based barycentre), ``flux``
        (isophotal, background-subtracted), ``peak``, ``snr`` (isophotal flux over
        ``rms * sqrt(npix)``), ``saturated``, ``nn_dist`` (pixels to the nearest other
        detection) and ``flag`` (sep's flags).
    background : numpy.ndarray
        The background map (float32), same shape as the frame.
    stars : astropy.table.Table
        The stars measured: ``x``, ``y`` (adaptive centre), ``fwhm``, ``ellipticity``,
        ``used``.
    """

    sky_level: float
    sky_rms: float
    fwhm: float
    fwhm_err: float
    ellipticity: float
    n_stars: int
    detections: Table = field(repr=False)
    background: np.ndarray = field(repr=False)
    stars: Table = field(repr=False)


def _native(data) -> np.ndarray:
    """The image as a C-contiguous native float32 array (what sep needs)."""
    arr = np.ascontiguousarray(np.asarray(getattr(data, "data", data)), dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D image, got shape {arr.shape}")
    return arr


def sep_measure(data: ArrayLike, *, mask: ArrayLike | None = None, threshold: float = 5.0,
                saturation: float | None = None, fwhm_guess: float | None = None,
                max_stars: int = 40, min_snr: float = 20.0, isolation: float | None = None,
                box_size: int = 64, minarea: int = 3) -> SepMeasurement:
    """Background, sky, detections, FWHM and ellipticity of a frame, in about 0.03 s.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image in data units (a ``CCDData`` is accepted).
    mask : array_like of bool, shape (ny, nx), optional
        True where pixels must be ignored (non-finite pixels are ignored too).
    threshold : float
        Detection threshold in units of the background's pixel rms (> 0; SExtractor's
        ``DETECT_THRESH``).
    saturation : float, optional
        Level (data units, background included) at or above which a detection is
        flagged ``saturated`` and not measured.
    fwhm_guess : float, optional
        Starting FWHM, pixels; default twice the median half-light radius of the
        brightest clean detections.
    max_stars : int
        Measure at most this many stars (the brightest eligible ones).
    min_snr : float
        Minimum isophotal signal-to-noise of a measured star.
    isolation : float, optional
        Minimum distance of a measured star to any other detection, pixels; default
        ``max(6 * fwhm_guess, 12)`` (moments feel a neighbour further out than a fit of
        the core does: 4 x FWHM read undersampled HAT-P-32 stars 3 % wider).
    box_size : int
        Background mesh size, pixels.
    minarea : int
        Minimum number of pixels above threshold of a detection.

    Returns
    -------
    SepMeasurement

    Raises
    ------
    ValueError
        ``data`` is not 2-D, has no valid pixel, or ``threshold`` is not positive.
    """
    import sep

    arr, bad, bkg = _background(data, mask, threshold, box_size, "sep_measure")
    back = bkg.back()
    sub = arr - back
    det = _detect(sep, sub, bad, threshold * bkg.globalrms, minarea, arr, saturation,
                  bkg.globalrms)
    stars = _measure_stars(sep, sub, bad, det, fwhm_guess, max_stars, min_snr, isolation)
    fwhm, err, ell, n = _frame_values(stars)
    return SepMeasurement(float(bkg.globalback), float(bkg.globalrms), fwhm, err, ell, n,
                          det, back, stars)


def sep_positions(data: ArrayLike, *, mask: ArrayLike | None = None, threshold: float = 5.0,
                  max_stars: int = 50, minarea: int = 5, border: int = 3,
                  box_size: int = 64) -> np.ndarray:
    """Positions of the brightest clean detections of a frame (for matching star patterns).

    The detection half of :func:`sep_measure` (sep's background mesh and ``sep.extract``,
    about 0.03 s a 1024 x 1024 frame, against 0.3-0.6 s for
    :func:`astrodart.sources.stars.find_stars`, which stays the finder for photometry:
    it keeps undersampled and faint stars that a pattern match does not need).

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image in data units.
    mask : array_like of bool, shape (ny, nx), optional
        True where pixels must be ignored (non-finite pixels are ignored too).
    threshold : float
        Detection threshold in units of the background's pixel rms (> 0).
    max_stars : int
        Return at most this many positions, brightest first.
    minarea : int
        Minimum number of pixels above threshold: 5 leaves out hot pixels and most
        cosmic-ray hits left in a frame.
    border : int
        Drop detections closer than this to the edge, pixels.
    box_size : int
        Background mesh size, pixels.

    Returns
    -------
    numpy.ndarray, shape (n, 2)
        ``x, y`` (0-based barycentres), brightest first; blended, truncated or
        deblended detections (sep flag set) left out.

    Raises
    ------
    ValueError
        ``data`` has no valid pixel or ``threshold`` is not positive.
    """
    import sep

    arr, bad, bkg = _background(data, mask, threshold, box_size, "sep_positions")
    sub = arr - bkg.back()
    obj = _extract(sep, sub, threshold * bkg.globalrms, bad if bad.any() else None, minarea)
    ny, nx = arr.shape
    keep = ((obj["flag"] == 0) & (obj["x"] >= border) & (obj["y"] >= border)
            & (obj["x"] < nx - border) & (obj["y"] < ny - border))
    obj = obj[keep]
    obj = obj[np.argsort(-obj["flux"], kind="stable")][:max_stars]
    return np.column_stack([obj["x"], obj["y"]]).astype(float)


def _background(data, mask, threshold, box_size: int, caller: str):
    """Checked inputs and sep's background mesh: ``(image with bad pixels zeroed, bad-pixel
    mask, sep.Background)``."""
    import sep

    if not threshold or threshold <= 0:
        raise ValueError(f"threshold must be a positive number of sigma, got {threshold!r}")
    arr = _native(data)
    m = _as_mask(mask, arr.shape)
    bad = ~np.isfinite(arr) if m is None else (m | ~np.isfinite(arr))
    if bad.all():
        raise ValueError(f"{caller}: no valid pixel in the image")
    if bad.any():
        arr = np.where(bad, np.float32(0.0), arr)
    bw = max(8, min(int(box_size), *arr.shape))
    bkg = sep.Background(arr, mask=bad if bad.any() else None, bw=bw, bh=bw, fw=3, fh=3)
    return arr, bad, bkg


def _detect(sep, sub, bad, thresh, minarea, raw, saturation, rms) -> Table:
    """sep.extract on ``sub`` -> the detections table (brightest first)."""
    obj = _extract(sep, sub, thresh, bad if bad.any() else None, minarea)
    obj = obj[np.argsort(-obj["flux"], kind="stable")]
    x, y = np.asarray(obj["x"], float), np.asarray(obj["y"], float)
    peak_raw = raw[obj["ypeak"], obj["xpeak"]] if len(obj) else np.zeros(0)
    sat = (np.zeros(len(obj), bool) if saturation is None
           else np.asarray(peak_raw >= saturation, bool))
    if len(obj) > 1:
        xy = np.column_stack([x, y])
        nn = cKDTree(xy).query(xy, k=2)[0][:, 1]
    else:
        nn = np.full(len(obj), np.inf)
    snr = np.asarray(obj["flux"], float) / (max(rms, 1e-30) * np.sqrt(np.maximum(obj["npix"], 1)))
    return Table({"x": x, "y": y, "flux": np.asarray(obj["flux"], float),
                  "peak": np.asarray(obj["peak"], float), "snr": snr, "saturated": sat,
                  "nn_dist": nn, "flag": np.asarray(obj["flag"], int)})


def _extract(sep, sub, thresh, mask, minarea):
    """sep.extract with its default pixel buffer (a bigger one costs ~35 ms a call); a
    crowded or huge source overflowing it is retried with buffers 4 and 16 x the frame."""
    default = sep.get_extract_pixstack()
    sizes = [default] + [max(default, k * sub.size) for k in (4, 16)]
    for i, size in enumerate(sizes):
        sep.set_extract_pixstack(size)
        try:
            return sep.extract(sub, thresh, mask=mask, minarea=minarea)
        except Exception as exc:  # sep raises a bare Exception when its buffer is full
            if "pixel buffer full" not in str(exc) or i == len(sizes) - 1:
                raise
        finally:
            sep.set_extract_pixstack(default)
    raise AssertionError("unreachable")  # pragma: no cover


def _measure_stars(sep, sub, bad, det, fwhm_guess, max_stars, min_snr, isolation) -> Table:
    """Adaptive moments of the brightest isolated, clean, unsaturated detections."""
    ny, nx = sub.shape
    clean = (~np.asarray(det["saturated"], bool)) & (np.asarray(det["flag"]) == 0)
    x, y = np.asarray(det["x"]), np.asarray(det["y"])
    guess = float(fwhm_guess) if fwhm_guess and np.isfinite(fwhm_guess) else None
    if guess is None:
        first = np.nonzero(clean)[0][:20]
        if len(first):
            rmax = np.full(len(first), 8.0)
            r50, _ = sep.flux_radius(sub, x[first], y[first], rmax, 0.5,
                                     mask=bad if bad.any() else None)
            r50 = r50[np.isfinite(r50) & (r50 > 0)]
            guess = float(2.0 * np.median(r50)) if len(r50) else None
    guess = min(max(guess or 3.0, 1.0), 20.0)
    edge = math.ceil(2 * guess) + 2
    iso = max(6.0 * guess, 12.0) if isolation is None else float(isolation)
    sel = (clean & (np.asarray(det["snr"]) >= min_snr) & (np.asarray(det["nn_dist"]) >= iso)
           & (x >= edge) & (y >= edge) & (x < nx - edge) & (y < ny - edge))
    idx = np.nonzero(sel)[0][:max_stars]
    img = np.where(bad, np.nan, sub) if bad.any() else sub
    fw, ell, cx, cy = adaptive_moments(img, x[idx], y[idx], guess)
    used = np.isfinite(fw) & (fw > 0.7) & (fw < 8 * guess + 5) & (ell < 0.8)
    if used.sum() >= 3:
        med, sd = np.median(fw[used]), mad_std(fw[used])
        if sd > 0:
            used &= np.abs(fw - med) <= 3 * sd
    return Table({"x": cx, "y": cy, "fwhm": fw, "ellipticity": ell, "used": used},
                 meta={"fwhm_guess": guess})


def _frame_values(stars: Table) -> tuple[float, float, float, int]:
    used = np.asarray(stars["used"], bool)
    n = int(used.sum())
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    f = np.asarray(stars["fwhm"], float)[used]
    err = 1.253 * float(mad_std(f)) / math.sqrt(n) if n > 1 else float("nan")
    return (float(np.median(f)), err, float(np.median(np.asarray(stars["ellipticity"])[used])),
            n)


def adaptive_moments(image: ArrayLike, x: ArrayLike, y: ArrayLike, fwhm_guess: float = 3.0,
                     max_iter: int = 30, tol: float = 1e-3
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FWHM and ellipticity of stars from adaptive (elliptical Gaussian-weighted) moments.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        Background-subtracted image (NaN marks pixels to ignore).
    x, y : array_like, shape (n,)
        0-based starting positions, good to about a pixel.
    fwhm_guess : float
        Starting FWHM, pixels; sets the cutout size (``2 ceil(1.7 fwhm_guess) + 5``
        pixels wide).
    max_iter : int
        Maximum iterations; stars not converged by then are NaN.
    tol : float
        Convergence: relative change of the weight's variances below this.

    Returns
    -------
    fwhm : numpy.ndarray
        ``2.3548 (l1 l2) ** 0.25`` of the pixel-corrected covariance (eigenvalues l1 >=
        l2), pixels; NaN where the iteration failed or did not converge.
    ellipticity : numpy.ndarray
        ``1 - sqrt(l2 / l1)``.
    x, y : numpy.ndarray
        Adaptive centres.

    Raises
    ------
    ValueError
        ``x`` and ``y`` differ in shape, or ``fwhm_guess`` is not positive.

    Notes
    -----
    Each iteration weighs the star by a Gaussian of the current covariance ``M`` at the
    current centre and sets ``M`` to twice the weighted second moments and moves the
    centre by twice the weighted first moment, the fixed point of which is the star's
    covariance and centre for a Gaussian star (Bernstein & Jarvis 2002). The pixel's box
    variance (1/12 px**2) is then subtracted on each axis.
    """
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {x.shape} vs {y.shape}")
    if not fwhm_guess or fwhm_guess <= 0:
        raise ValueError(f"fwhm_guess must be a positive number of pixels, got {fwhm_guess!r}")
    n = len(x)
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    sig0 = fwhm_guess / GAUSSIAN_SIGMA_TO_FWHM
    r = int(math.ceil(4 * sig0)) + 2
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    cut = np.asarray(_cutouts(np.asarray(image, float), ix, iy, r))
    cut = np.where(np.isfinite(cut), cut, 0.0)
    off = np.arange(-r, r + 1, dtype=float)
    gx = (ix[:, None, None] + off[None, None, :]).astype(float)
    gy = (iy[:, None, None] + off[None, :, None]).astype(float)
    m = np.empty((3, n))
    m[0], m[1], m[2] = sig0 ** 2, sig0 ** 2, 0.0
    cx, cy = x.copy(), y.copy()
    done = np.zeros(n, bool)
    failed = np.zeros(n, bool)
    for _ in range(max_iter):
        new, ex, ey, bad = _moment_step(cut, gx, gy, cx, cy, m, r)
        failed |= bad & ~done
        live = ~done & ~failed
        conv = live & (np.abs(new[0] - m[0]) < tol * m[0]) & (np.abs(new[1] - m[1]) < tol * m[1])
        m[:, live] = new[:, live]
        cx[live] += 2 * ex[live]
        cy[live] += 2 * ey[live]
        done |= conv
        if (done | failed).all():
            break
    return _shape(m, done & ~failed) + (cx, cy)


def _moment_step(cut, gx, gy, cx, cy, m, r):
    """One adaptive-moment iteration: the new covariance (3, n), centre shifts, failures."""
    det = m[0] * m[1] - m[2] ** 2
    ixx, iyy, ixy = m[1] / det, m[0] / det, -m[2] / det
    dx = gx - cx[:, None, None]
    dy = gy - cy[:, None, None]
    q = ixx[:, None, None] * dx * dx + 2 * ixy[:, None, None] * dx * dy + iyy[:, None, None] * dy * dy
    w = np.exp(-0.5 * q) * cut
    s = w.sum(axis=(1, 2))
    ok = s > 0
    s = np.where(ok, s, 1.0)
    ex = (w * dx).sum(axis=(1, 2)) / s
    ey = (w * dy).sum(axis=(1, 2)) / s
    new = np.empty_like(m)
    new[0] = 2 * ((w * dx * dx).sum(axis=(1, 2)) / s - ex ** 2)
    new[1] = 2 * ((w * dy * dy).sum(axis=(1, 2)) / s - ey ** 2)
    new[2] = 2 * ((w * dx * dy).sum(axis=(1, 2)) / s - ex * ey)
    bad = (~ok | (new[0] <= 0.05) | (new[1] <= 0.05) | (new[0] * new[1] - new[2] ** 2 <= 0)
           | (new[0] > r * r) | (new[1] > r * r) | (np.hypot(ex, ey) > r))
    return new, ex, ey, bad


def _shape(m, ok) -> tuple[np.ndarray, np.ndarray]:
    """FWHM and ellipticity from covariances ``m`` (3, n) after the pixel correction."""
    cxx, cyy, cxy = m[0] - _PIXEL_VARIANCE, m[1] - _PIXEL_VARIANCE, m[2]
    half_tr = (cxx + cyy) / 2
    disc = np.sqrt(np.maximum(half_tr ** 2 - (cxx * cyy - cxy ** 2), 0.0))
    l1, l2 = half_tr + disc, half_tr - disc
    good = ok & (l2 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fwhm = np.where(good, GAUSSIAN_SIGMA_TO_FWHM * (np.abs(l1 * l2)) ** 0.25, np.nan)
        ell = np.where(good, 1.0 - np.sqrt(np.abs(l2 / l1)), np.nan)
    return fwhm, ell
