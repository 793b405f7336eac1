"""Layer 2: the diagnostics a reducer looks at before trusting a light curve.

Pure functions on arrays and ``CCDData``: no file I/O, no printing. Pixel coordinates are
0-based (numpy/photutils/sep convention); fluxes in data units (electrons for calibrated
frames, which is what the noise model needs).

* :func:`background_mesh`: the 2-D background and rms of an image (sep's mesh, as in
  :func:`astrodart.sources.sep_measure.sep_measure`).
* :func:`growth_curves`: flux against aperture radius for bright isolated stars,
  normalised at the largest radius (one pass of
  :func:`astrodart.photometry.apertures.aperture_photometry_radii`).
* :func:`psf_stamp`: the median of sub-pixel-centred, flux-normalised star cut-outs.
* :func:`fwhm_map`: the FWHM of each star binned in a grid over the field.
* :func:`snr_magnitude`: signal-to-noise against instrumental magnitude.
* :func:`ccd_equation_noise`, :func:`sequence_photometry`, :func:`noise_vs_ccd_equation`:
  the measured scatter of star fluxes over a sequence of calibrated frames (after the
  ensemble's common trend is divided out) against the CCD equation.

Methods
-------
The CCD equation (Howell 2006, *Handbook of CCD Astronomy*, 2nd ed., eq. 4.4; Merline &
Howell 1995, Exp. Astron. 6, 163), all terms in electrons::

    sigma = sqrt(N* + npix (1 + npix / nsky) (Nsky + Ndark + RN**2 + G**2 sigma_f**2))

with ``sigma_f ~ 0.289`` ADU the digitisation noise of a uniform rounding error. The
measured noise of star ``j`` is the (5-sigma clipped) standard deviation over the frames
of its flux divided by the weighted mean of the other stars' normalised fluxes (a
leave-one-out ensemble, as differential photometry does): transparency and airmass
changes cancel. The weights are the inverse of each star's variance, predicted at first and
then measured (iterated, as Broeg et al. 2005 do), so a variable star or a blend barely
enters the others' ensemble; the ensemble's own noise (the same equation, propagated
through those weights) is added to the prediction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from astrodart.photometry.apertures import aperture_photometry_radii, instrumental_magnitude
from astrodart.photometry.centroids import recentre
from astrodart.sources._image import _as_image, _as_mask
from astrodart.sources.sep_measure import _background

__all__ = ["DIGITISATION_NOISE_ADU", "BackgroundMesh", "FWHMMap", "GrowthCurves",
           "NoiseComparison", "PSFStamp", "StarSequence", "background_mesh",
           "ccd_equation_noise", "fwhm_map", "growth_curves", "noise_vs_ccd_equation",
           "psf_stamp", "sequence_photometry", "snr_magnitude"]

#: Digitisation noise of an ADC, ADU: the rms of a uniform rounding error, 1/sqrt(12)
#: (Howell 2006, section 4.3, quotes ~0.289).
DIGITISATION_NOISE_ADU = 1.0 / math.sqrt(12.0)


@dataclass
class BackgroundMesh:
    """The background of an image and its noise, per pixel.

    Parameters
    ----------
    background, rms : numpy.ndarray, shape (ny, nx)
        Background level and its rms, data units (sep's mesh, bilinear-spline interpolated).
    box_size : int
        Mesh box side, pixels.
    level, noise : float
        Global background and rms (sep's ``globalback``, ``globalrms``).
    """

    background: np.ndarray = field(repr=False)
    rms: np.ndarray = field(repr=False)
    box_size: int
    level: float
    noise: float


def background_mesh(data: ArrayLike, *, mask: ArrayLike | None = None,
                    box_size: int = 64) -> BackgroundMesh:
    """The 2-D background and rms of an image on a mesh (SExtractor's method, via sep).

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image (a ``CCDData`` is accepted).
    mask : array_like of bool, shape (ny, nx), optional
        True for pixels to ignore (non-finite ones are ignored too).
    box_size : int
        Mesh box side, pixels (>= 8); a 3 x 3 median filter runs over the boxes.

    Returns
    -------
    BackgroundMesh

    Raises
    ------
    ValueError
        ``data`` is not 2-D or has no valid pixel, or ``box_size`` < 8.

    References
    ----------
    Bertin, E. & Arnouts, S. 1996, A&AS 117, 393; Barbary, K. 2016, JOSS 1, 58 (sep).
    """
    if not isinstance(box_size, (int, np.integer)) or box_size < 8:
        raise ValueError(f"box_size={box_size!r}: give a whole number of pixels >= 8")
    _, _, bkg = _background(data, mask, 5.0, int(box_size), "background_mesh")
    return BackgroundMesh(bkg.back(), bkg.rms(), int(box_size), float(bkg.globalback),
                          float(bkg.globalrms))


@dataclass
class GrowthCurves:
    """Flux against aperture radius of ``n`` stars at ``m`` radii.

    Parameters
    ----------
    radii : numpy.ndarray, shape (m,)
        Aperture radii, pixels.
    flux : numpy.ndarray, shape (n, m)
        Sky-subtracted flux in each aperture, data units.
    normalised : numpy.ndarray, shape (n, m)
        ``flux`` divided by the flux at the largest radius.
    x, y : numpy.ndarray, shape (n,)
        Star positions, pixels.
    """

    radii: np.ndarray
    flux: np.ndarray = field(repr=False)
    normalised: np.ndarray = field(repr=False)
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)

    @property
    def median(self) -> np.ndarray:
        """The median normalised growth curve over the stars, shape (m,)."""
        return np.nanmedian(self.normalised, axis=0)


def growth_curves(data: ArrayLike, positions: ArrayLike, radii: ArrayLike, *, r_in: float,
                  r_out: float, mask: ArrayLike | None = None) -> GrowthCurves:
    """Curves of growth: flux in circular apertures of growing radius, annulus sky removed.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image (a ``CCDData`` is accepted); use bright, isolated, unsaturated stars.
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of the stars.
    radii : array_like, shape (m,)
        Increasing aperture radii, pixels, each ``<= r_in``.
    r_in, r_out : float
        Sky annulus radii, pixels.
    mask : array_like of bool, shape (ny, nx), optional
        True for bad pixels.

    Returns
    -------
    GrowthCurves

    Raises
    ------
    ValueError
        ``radii`` not increasing and positive, radii out of order with the annulus, or
        badly shaped inputs.

    References
    ----------
    Stetson, P. B. 1990, PASP 102, 932 (aperture growth curves); photutils apertures.
    """
    r = np.asarray(radii, float).ravel()
    if r.size < 2 or not np.all(np.diff(r) > 0) or r[0] <= 0:
        raise ValueError(f"radii={radii!r}: give at least two increasing positive radii")
    res = aperture_photometry_radii(_as_image(data), positions, r, r_in, r_out, mask=mask)
    flux = np.column_stack([a.flux for a in res])
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = flux / np.where(flux[:, -1:] > 0, flux[:, -1:], np.nan)
    return GrowthCurves(r, flux, norm, res[0].x, res[0].y)


@dataclass
class PSFStamp:
    """The median stellar profile of an image.

    Parameters
    ----------
    stamp : numpy.ndarray, shape (size, size)
        Median of the star cut-outs, each sky-subtracted, shifted to centre on the middle
        pixel and normalised to unit sum (the median renormalised to unit sum).
    n_stars : int
        Cut-outs combined.
    """

    stamp: np.ndarray = field(repr=False)
    n_stars: int


def psf_stamp(data: ArrayLike, positions: ArrayLike, *, size: int = 21,
              background: ArrayLike | float = 0.0) -> PSFStamp:
    """Median-stack sub-pixel-centred cut-outs of stars into one PSF image.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image (a ``CCDData`` is accepted).
    positions : array_like, shape (n, 2)
        Accurate 0-based ``(x, y)`` centres (e.g. windowed centroids).
    size : int
        Odd side of the stamp, pixels (>= 5).
    background : float or array_like, shape (ny, nx)
        Background subtracted first.

    Returns
    -------
    PSFStamp

    Raises
    ------
    ValueError
        ``size`` not an odd integer >= 5, or no star fully inside the image.

    Notes
    -----
    Each cut-out is shifted by its sub-pixel offset with a cubic spline
    (``scipy.ndimage.shift``) before the median, as an empirical PSF is built from
    registered stamps (Anderson & King 2000, PASP 112, 1360, without oversampling).
    """
    from scipy import ndimage

    if not isinstance(size, (int, np.integer)) or size < 5 or size % 2 == 0:
        raise ValueError(f"size={size!r}: give an odd whole number of pixels >= 5")
    arr = _as_image(data) - np.asarray(background, float)
    xy = np.asarray(positions, float).reshape(-1, 2)
    h = size // 2 + 2
    stamps = []
    for x, y in xy:
        ix, iy = round(float(x)), round(float(y))
        if not (h <= ix < arr.shape[1] - h and h <= iy < arr.shape[0] - h):
            continue
        cut = arr[iy - h:iy + h + 1, ix - h:ix + h + 1]
        if not np.isfinite(cut).all():
            continue
        cut = ndimage.shift(cut, (iy - y, ix - x), order=3, mode="nearest")[2:-2, 2:-2]
        total = cut.sum()
        if total > 0:
            stamps.append(cut / total)
    if not stamps:
        raise ValueError(f"psf_stamp: none of the {len(xy)} positions has a full "
                         f"{size} x {size} cut-out inside the image")
    med = np.median(stamps, axis=0)
    return PSFStamp(med / med.sum(), len(stamps))


@dataclass
class FWHMMap:
    """The FWHM of the stars binned over the field.

    Parameters
    ----------
    median : numpy.ndarray, shape (ny_bins, nx_bins)
        Median FWHM of the stars in each cell, pixels (NaN where empty).
    count : numpy.ndarray of int, shape (ny_bins, nx_bins)
        Stars per cell.
    x_edges, y_edges : numpy.ndarray
        Cell edges, pixels.
    fwhm : float
        Median FWHM of all the stars, pixels.
    """

    median: np.ndarray
    count: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    fwhm: float


def fwhm_map(x: ArrayLike, y: ArrayLike, fwhm: ArrayLike, shape: tuple[int, int], *,
             bins: int | tuple[int, int] = 4) -> FWHMMap:
    """Bin the FWHM of stars into a grid over the image.

    Parameters
    ----------
    x, y, fwhm : array_like, shape (n,)
        Star positions and FWHM, pixels (non-finite values are dropped).
    shape : (int, int)
        Image shape ``(ny, nx)``.
    bins : int or (int, int)
        Cells along each axis (``(ny_bins, nx_bins)`` as a pair).

    Returns
    -------
    FWHMMap

    Raises
    ------
    ValueError
        Arrays of different lengths, or no finite FWHM.
    """
    from scipy.stats import binned_statistic_2d

    x, y, f = (np.asarray(v, float).ravel() for v in (x, y, fwhm))
    if not (x.size == y.size == f.size):
        raise ValueError(f"x, y and fwhm differ in length: {x.size}, {y.size}, {f.size}")
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(f)
    if not ok.any():
        raise ValueError("fwhm_map: no star with a finite position and FWHM")
    by, bx = (bins, bins) if np.isscalar(bins) else bins
    ye, xe = np.linspace(-0.5, shape[0] - 0.5, by + 1), np.linspace(-0.5, shape[1] - 0.5, bx + 1)
    med = binned_statistic_2d(y[ok], x[ok], f[ok], "median", bins=[ye, xe]).statistic
    cnt = binned_statistic_2d(y[ok], x[ok], f[ok], "count", bins=[ye, xe]).statistic
    return FWHMMap(med, cnt.astype(int), xe, ye, float(np.median(f[ok])))


def snr_magnitude(flux: ArrayLike, flux_err: ArrayLike, exptime: float,
                  zmag: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Signal-to-noise ratio against instrumental magnitude.

    Parameters
    ----------
    flux, flux_err : array_like, shape (n,)
        Fluxes and their 1-sigma errors, data units.
    exptime : float
        Exposure, seconds.
    zmag : float
        Magnitude of 1 data unit per second.

    Returns
    -------
    mag, snr : numpy.ndarray, shape (n,)
        :func:`~astrodart.photometry.apertures.instrumental_magnitude` and
        ``flux / flux_err`` (NaN where ``flux <= 0``).

    Raises
    ------
    ValueError
        ``exptime`` not positive.
    """
    if not (exptime and exptime > 0):
        raise ValueError(f"exptime={exptime!r}: give a positive exposure in seconds")
    mag, _ = instrumental_magnitude(flux, flux_err, exptime, zmag)
    f, e = np.asarray(flux, float), np.asarray(flux_err, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where((f > 0) & (e > 0), f / e, np.nan)
    return mag, snr


def ccd_equation_noise(n_star: ArrayLike, npix: ArrayLike, *, sky: ArrayLike,
                       read_noise: float, dark: ArrayLike = 0.0, n_sky_pix: ArrayLike = np.inf,
                       gain: float = 1.0,
                       sigma_f: float = DIGITISATION_NOISE_ADU) -> np.ndarray:
    """The noise of an aperture flux predicted by the CCD equation, electrons.

    Parameters
    ----------
    n_star : array_like
        Star electrons in the aperture (negative values count as 0).
    npix : array_like
        Aperture area, pixels.
    sky : array_like
        Sky electrons per pixel.
    read_noise : float
        Read noise, electrons per pixel (>= 0).
    dark : array_like
        Dark electrons per pixel in the exposure (removed by the calibration, its shot
        noise stays).
    n_sky_pix : array_like
        Pixels the sky level was estimated from (inf: a perfectly known sky).
    gain : float
        Electrons per ADU (> 0), for the digitisation term.
    sigma_f : float
        Digitisation noise, ADU.

    Returns
    -------
    numpy.ndarray
        ``sqrt(N* + npix (1 + npix/nsky) (Nsky + Ndark + RN**2 + G**2 sigma_f**2))``.

    Raises
    ------
    ValueError
        Negative read noise or non-positive gain.

    References
    ----------
    Howell, S. B. 2006, *Handbook of CCD Astronomy*, 2nd ed., eq. 4.4; Merline, W. J. &
    Howell, S. B. 1995, Exp. Astron. 6, 163.
    """
    if not (read_noise >= 0 and gain > 0):
        raise ValueError(f"read_noise={read_noise!r} must be >= 0 and gain={gain!r} > 0")
    n = np.asarray(npix, float)
    per_pix = (np.clip(np.asarray(sky, float), 0, None) + np.asarray(dark, float)
               + read_noise ** 2 + (gain * sigma_f) ** 2)
    return np.sqrt(np.clip(np.asarray(n_star, float), 0, None)
                   + n * (1 + n / np.asarray(n_sky_pix, float)) * per_pix)



@dataclass
class StarSequence:
    """Aperture photometry of ``n`` stars tracked over ``k`` frames (arrays (k, n)).

    Parameters
    ----------
    x, y : numpy.ndarray
        Aperture centres, pixels (re-centred on each frame).
    flux, sky, area, n_sky, flags : numpy.ndarray
        As :class:`~astrodart.photometry.apertures.ApertureResult` gives them per frame.
    r_ap, r_in, r_out : float
        Aperture and annulus radii, pixels.
    """

    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    flux: np.ndarray = field(repr=False)
    sky: np.ndarray = field(repr=False)
    area: np.ndarray = field(repr=False)
    n_sky: np.ndarray = field(repr=False)
    flags: np.ndarray = field(repr=False)
    r_ap: float
    r_in: float
    r_out: float


def sequence_photometry(frames, positions: ArrayLike, *, fwhm: float, r_ap: float,
                        r_in: float, r_out: float, saturation: float | None = None,
                        search_radius: float | None = None) -> StarSequence:
    """Track stars through a sequence of frames and measure them in one aperture.

    Parameters
    ----------
    frames : iterable of CCDData or array_like, each shape (ny, nx)
        Calibrated frames in electrons, in time order (a generator reading them one by
        one keeps memory low); a ``CCDData`` mask marks bad pixels.
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of the stars on the first frame.
    fwhm : float
        FWHM, pixels (the centroid window).
    r_ap, r_in, r_out : float
        Aperture radius and sky annulus radii, pixels.
    saturation : float, optional
        Level at or above which a pixel is saturated (flagged, see
        :class:`~astrodart.photometry.apertures.PhotFlag`).
    search_radius : float, optional
        How far a star may move between consecutive frames, pixels (default
        ``max(3, 1.5 fwhm)``).

    Returns
    -------
    StarSequence

    Raises
    ------
    ValueError
        No frame, or bad radii or positions.
    astrodart.alignment.transforms.AlignmentError
        A frame that cannot be registered on the first.

    Notes
    -----
    Each frame is registered on the first by star patterns
    (:func:`astrodart.alignment.matching.match_stars` on
    :func:`~astrodart.sources.sep_measure.sep_positions`), the first frame's positions
    are mapped onto it and re-centred (:func:`astrodart.photometry.centroids.recentre`);
    a star whose centroid fails keeps its mapped position.
    """
    from astrodart.alignment.matching import match_stars
    from astrodart.sources.sep_measure import sep_positions

    ref = np.asarray(positions, float).reshape(-1, 2)
    rows, ref_stars = [], None
    for frame in frames:
        data = _as_image(frame)
        mask = _as_mask(getattr(frame, "mask", None), data.shape)
        stars = sep_positions(data, mask=mask)
        if ref_stars is None:
            ref_stars, xy = stars, ref.copy()
        else:   # the frame -> first-frame map by star patterns, inverted onto this frame
            xy = match_stars(stars, ref_stars, data.shape, allow_mirror=False)[0].inverse().apply(ref)
        new, ok = recentre(data, xy, fwhm, search_radius=search_radius, mask=mask)
        xy = np.where(ok[:, None], new, xy)
        res = aperture_photometry_radii(data, xy, [r_ap], r_in, r_out, mask=mask,
                                        saturation=saturation)[0]
        rows.append((xy[:, 0].copy(), xy[:, 1].copy(), res.flux, res.sky, res.area,
                     res.n_sky, res.flags))
    if not rows:
        raise ValueError("sequence_photometry: no frame given")
    cols = [np.array(c) for c in zip(*rows)]
    return StarSequence(*cols, r_ap=float(r_ap), r_in=float(r_in), r_out=float(r_out))


@dataclass
class NoiseComparison:
    """Measured against predicted noise of stars over a sequence (arrays of shape (n,)).

    Parameters
    ----------
    flux : numpy.ndarray
        Mean flux of each star, electrons.
    measured : numpy.ndarray
        Measured scatter of each star's flux about the ensemble's trend, electrons.
    predicted : numpy.ndarray
        The CCD equation's noise with the ensemble's predicted noise added in quadrature,
        electrons.
    ccd : numpy.ndarray
        The CCD equation alone, electrons.
    ratio : numpy.ndarray
        ``measured / predicted``.
    x, y : numpy.ndarray
        Mean positions, pixels.
    n_frames : int
        Frames in the sequence.
    """

    flux: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    ccd: np.ndarray
    ratio: np.ndarray
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    n_frames: int = 0

    @property
    def median_ratio(self) -> float:
        """Median of ``measured / predicted`` over the stars."""
        return float(np.nanmedian(self.ratio)) if self.ratio.size else float("nan")


def noise_vs_ccd_equation(seq: StarSequence, *, read_noise: float, dark: float = 0.0,
                          gain: float = 1.0, clip: float = 5.0) -> NoiseComparison:
    """The scatter of star fluxes over a sequence against the CCD equation.

    Parameters
    ----------
    seq : StarSequence
        Stars measured over the frames (:func:`sequence_photometry`), electrons.
    read_noise : float
        Read noise, electrons.
    dark : float
        Dark electrons per pixel in one exposure.
    gain : float
        Electrons per ADU of the camera (the digitisation term).
    clip : float
        Frames further than ``clip`` sigma from a star's median are left out of its
        scatter (cosmic rays, satellites).

    Returns
    -------
    NoiseComparison
        For the stars measured without a flag in every frame.

    Raises
    ------
    ValueError
        Fewer than 5 frames or fewer than 3 stars clean in every frame.

    References
    ----------
    Howell, S. B. 2006, *Handbook of CCD Astronomy*, eq. 4.4 (the prediction); Broeg, C.
    et al. 2005, AN 326, 134 (the weighted ensemble of comparison stars).
    """
    from astropy.stats import sigma_clip

    f = np.asarray(seq.flux, float)
    good = np.all((np.asarray(seq.flags) == 0) & np.isfinite(f) & (f > 0), axis=0)
    if f.shape[0] < 5 or good.sum() < 3:
        raise ValueError(f"noise_vs_ccd_equation: {f.shape[0]} frames and {int(good.sum())} "
                         "stars clean in every frame; need at least 5 frames and 3 stars")
    f = f[:, good]
    mean = f.mean(axis=0)
    ccd = ccd_equation_noise(mean, seq.area[:, good].mean(axis=0),
                             sky=seq.sky[:, good].mean(axis=0), dark=dark,
                             read_noise=read_noise, n_sky_pix=seq.n_sky[:, good].mean(axis=0),
                             gain=gain)
    norm, rel = f / mean, ccd / mean
    w = rel ** -2.0
    for it in range(4):  # weights from the measured scatter: a variable or blend is damped
        others = w.sum() - w
        trend = ((norm @ w)[:, None] - norm * w) / others  # leave-one-out ensemble, (k, n)
        detrended = sigma_clip(norm / trend, sigma=clip, axis=0, maxiters=3)
        scatter = np.ma.std(detrended, axis=0, ddof=1).filled(np.nan)
        if it < 3:
            w = np.maximum(np.nan_to_num(scatter, nan=np.inf), rel) ** -2.0
    ensemble = ((w ** 2 * rel ** 2).sum() - w ** 2 * rel ** 2) / others ** 2
    measured, predicted = scatter * mean, mean * np.sqrt(rel ** 2 + ensemble)
    return NoiseComparison(mean, measured, predicted, ccd, measured / predicted,
                           seq.x[:, good].mean(axis=0), seq.y[:, good].mean(axis=0),
                           int(f.shape[0]))
