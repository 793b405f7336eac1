"""Layer 2: stars, sky and one synthetic CCD frame with known truth (pure: no file I/O).

Every function takes its random numbers from a :class:`numpy.random.Generator` passed in
by the caller, so a frame is a deterministic function of its arguments and seed. These
are the pieces :func:`astrodart.datasets.simulated_night.simulate_night` assembles into a raw
night (with the detector signatures of :mod:`astrodart.datasets.detector`), and
the pieces a test of another module uses to make one frame whose truth it knows::

    rng = np.random.default_rng(1)
    frame = simulate_frame((256, 256), exptime=30.0, gain=1.5, read_noise=8.0, bias=1000.0,
                           x=[100.3], y=[120.8], flux=[2e5], fwhm=3.0, sky=200.0, rng=rng)
    frame.data        # uint16 ADU, as a camera writes it

Conventions
-----------
* Arrays are ``(ny, nx)`` (numpy order). Pixel coordinates ``x, y`` are 0-based with the
  centre of the first pixel at ``(0, 0)`` (astropy's ``origin=0``; FITS/DS9 coordinates are
  these plus 1).
* Light and charge are in electrons (e-) at the detector until :func:`digitise` turns them
  into ADU through the gain (e-/ADU); read noise is in electrons, bias in ADU.
* A star's *flux* is the total number of electrons it deposits during the exposure (before
  the flat-field response, before noise): the rendered profile is integrated over each
  pixel and normalised so that it sums to exactly this flux (the far wings, below
  ``floor`` e-/px, are folded into the stamp; flux falling off the image edge is lost).

Methods and sources
-------------------
* PSF: Moffat (1969, A&A 3, 455) profile ``(1 + r^2/alpha^2)^-beta`` with
  ``FWHM = 2 alpha sqrt(2^(1/beta) - 1)``; ``beta`` near 3 fits ground-based stars with
  optical and tracking wings (Trujillo et al. 2001, MNRAS 328, 977, find 4.765 for pure
  Kolmogorov turbulence). Gaussian profiles are integrated over pixels exactly (error
  functions); Moffat profiles by sub-pixel sampling.
* Noise: photon (Poisson) noise on sky, stars and dark current, Gaussian read noise in
  electrons, conversion to ADU through the gain and rounding to integers (the CCD
  equation; Howell, *Handbook of CCD Astronomy*, 2nd ed., 2006, ch. 4).
* Scintillation: Young (1967, AJ 72, 747) as usually quoted,
  ``0.09 D^(-2/3) X^1.75 exp(-h/8000 m) (2 t)^(-1/2)`` with ``D`` in cm.
* Transit: the uniform-disc occultation of Mandel & Agol (2002, ApJ 580, L171, their
  eq. 1, the overlap area of two discs), with a straight chord across the star.
* Airmass: :func:`astrodart.photometry.timing.airmass` (Hardie 1962), the one the
  photometry uses.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS
from scipy.special import erf

from astrodart.datasets.detector import bleed_columns, cosmic_rays, digitise

__all__ = [
    "PSF_MODELS",
    "SimulatedFrame",
    "gaussian_sigma",
    "magnitude_to_rate",
    "moffat_alpha",
    "psf_radius",
    "render_stars",
    "scintillation_sigma",
    "simulate_frame",
    "sky_plane",
    "tan_wcs",
    "transit_model",
]

log = logging.getLogger("astrodart")

#: Star profiles understood by :func:`render_stars`.
PSF_MODELS = ("moffat", "gaussian")

_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


# ---------------------------------------------------------------------------------------
# stars
# ---------------------------------------------------------------------------------------
def moffat_alpha(fwhm, beta: float):
    """Moffat core width ``alpha`` (same unit as ``fwhm``) for a given FWHM and ``beta``.

    Parameters
    ----------
    fwhm : float or array_like
        Full width at half maximum (pixels).
    beta : float
        Moffat power index (> 1).

    Returns
    -------
    float or numpy.ndarray
        ``fwhm / (2 sqrt(2^(1/beta) - 1))`` (Moffat 1969).
    """
    if beta <= 1:
        raise ValueError(f"Moffat beta must be > 1 (no finite flux otherwise), got {beta}")
    return np.asarray(fwhm, dtype=float) / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def gaussian_sigma(fwhm):
    """Gaussian standard deviation for a FWHM.

    Parameters
    ----------
    fwhm : float or array_like
        Full width at half maximum (pixels).

    Returns
    -------
    float or numpy.ndarray
        ``fwhm / (2 sqrt(2 ln 2))``, in pixels.
    """
    return np.asarray(fwhm, dtype=float) * _SIGMA_PER_FWHM


def psf_radius(flux, fwhm, psf: str = "moffat", beta: float = 3.0, floor: float = 0.02,
               max_radius: float = 200.0) -> np.ndarray:
    """Radius (pixels) beyond which a star's profile falls below ``floor`` e-/px.

    Parameters
    ----------
    flux : float or array_like
        Total flux of each star (e-).
    fwhm : float or array_like
        FWHM of each star (pixels).
    psf : {'moffat', 'gaussian'}
        Profile.
    beta : float
        Moffat index.
    floor : float
        Surface brightness (e-/px) at which the stamp stops.
    max_radius : float
        Upper bound (pixels).

    Returns
    -------
    numpy.ndarray
        Radius per star, at least ``1.5 * fwhm`` and at most ``max_radius``.
    """
    flux = np.maximum(np.asarray(flux, dtype=float), 0.0)
    fwhm = np.asarray(fwhm, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if psf == "moffat":
            alpha = moffat_alpha(fwhm, beta)
            peak = flux * (beta - 1.0) / (np.pi * alpha ** 2)
            r = alpha * np.sqrt(np.maximum((peak / floor) ** (1.0 / beta) - 1.0, 0.0))
        elif psf == "gaussian":
            sigma = gaussian_sigma(fwhm)
            peak = flux / (2.0 * np.pi * sigma ** 2)
            r = sigma * np.sqrt(2.0 * np.log(np.maximum(peak / floor, 1.0)))
        else:
            raise ValueError(f"unknown psf {psf!r}; use one of {PSF_MODELS}")
    return np.clip(np.nan_to_num(r), 1.5 * fwhm, max_radius)


def _moffat(q: np.ndarray, beta: float) -> np.ndarray:
    """``(1 + q)^-beta``; integer ``beta`` by multiplication (3x faster than a float power)."""
    u = 1.0 + q
    if float(beta).is_integer() and 1 <= beta <= 8:
        p = u
        for _ in range(int(beta) - 1):
            p = p * u
        return 1.0 / p
    return u ** (-beta)


def _stamp(dx: np.ndarray, dy: np.ndarray, fwhm: float, psf: str, beta: float,
           oversample: int) -> np.ndarray:
    """Unnormalised profile integrated over the pixels whose centres are at offsets
    ``dx`` (nx,) and ``dy`` (ny,) from the star; returns (ny, nx)."""
    if psf == "gaussian":
        s = math.sqrt(2.0) * float(gaussian_sigma(fwhm))
        px = 0.5 * (erf((dx + 0.5) / s) - erf((dx - 0.5) / s))
        py = 0.5 * (erf((dy + 0.5) / s) - erf((dy - 0.5) / s))
        return py[:, None] * px[None, :]
    a2 = float(moffat_alpha(fwhm, beta)) ** 2
    # pixel-centre values are exact to < 0.1 % where the profile is smooth on the pixel
    # scale; only the core (|d| < 2 FWHM + 1) is integrated by sub-pixel sampling.
    # dx, dy are consecutive integers minus the star position, so the core is a slice.
    out = _moffat((dy[:, None] ** 2 + dx[None, :] ** 2) / a2, beta)
    if oversample > 1:
        core = 2.0 * fwhm + 1.0
        kx = np.flatnonzero(np.abs(dx) < core)
        ky = np.flatnonzero(np.abs(dy) < core)
        if kx.size and ky.size:
            sub = (np.arange(oversample) + 0.5) / oversample - 0.5
            sx = (dx[kx[0]:kx[-1] + 1, None] + sub).ravel()
            sy = (dy[ky[0]:ky[-1] + 1, None] + sub).ravel()
            prof = _moffat((sy[:, None] ** 2 + sx[None, :] ** 2) / a2, beta)
            out[ky[0]:ky[-1] + 1, kx[0]:kx[-1] + 1] = prof.reshape(
                ky.size, oversample, kx.size, oversample).mean(axis=(1, 3))
    return out


def render_stars(shape: tuple[int, int], x, y, flux, fwhm, *, psf: str = "moffat",
                 beta: float = 3.0, oversample: int = 5, floor: float = 0.02,
                 max_radius: float = 200.0) -> np.ndarray:
    """Noise-free image of point sources with integrated fluxes.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    x, y : array_like, shape (n,)
        0-based pixel positions of the star centres (sub-pixel).
    flux : array_like, shape (n,)
        Total electrons of each star (see the module notes).
    fwhm : float or array_like, shape (n,)
        FWHM in pixels, one for all stars or one per star.
    psf : {'moffat', 'gaussian'}
        Profile (Moffat 1969, or a Gaussian).
    beta : float
        Moffat power index.
    oversample : int
        Sub-pixel samples per axis for the Moffat integration over a pixel.
    floor : float
        Each stamp extends to where the profile falls below this many e-/px
        (see :func:`psf_radius`).
    max_radius : float
        Largest stamp radius in pixels.

    Returns
    -------
    numpy.ndarray
        float64 image of shape ``shape`` in electrons; the stamp of a star wholly inside
        the image sums to its ``flux`` (to rounding).
    """
    if psf not in PSF_MODELS:
        raise ValueError(f"unknown psf {psf!r}; use one of {PSF_MODELS}")
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    ny, nx = (int(s) for s in shape)
    x, y, flux = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, flux))
    if not (x.shape == y.shape == flux.shape) or x.ndim != 1:
        raise ValueError("x, y and flux must be 1-D of one length, got "
                         f"{x.shape}, {y.shape}, {flux.shape}")
    fwhm = np.broadcast_to(np.asarray(fwhm, dtype=float), x.shape)
    if np.any(fwhm <= 0):
        raise ValueError("fwhm must be > 0")
    image = np.zeros((ny, nx))
    radius = np.ceil(psf_radius(flux, fwhm, psf, beta, floor, max_radius)).astype(int)
    for xi, yi, fi, wi, ri in zip(x, y, flux, fwhm, radius):
        if fi <= 0:
            continue
        cx, cy = round(xi), round(yi)
        if cx + ri < 0 or cy + ri < 0 or cx - ri >= nx or cy - ri >= ny:
            continue
        xs = np.arange(cx - ri, cx + ri + 1)
        ys = np.arange(cy - ri, cy + ri + 1)
        stamp = _stamp(xs - xi, ys - yi, wi, psf, beta, oversample)
        stamp *= fi / stamp.sum()
        x0, x1 = max(cx - ri, 0), min(cx + ri + 1, nx)
        y0, y1 = max(cy - ri, 0), min(cy + ri + 1, ny)
        image[y0:y1, x0:x1] += stamp[y0 - (cy - ri):y1 - (cy - ri), x0 - (cx - ri):x1 - (cx - ri)]
    return image


def magnitude_to_rate(mag, zero_point: float):
    """Detected electrons per second of a source of magnitude ``mag``.

    Parameters
    ----------
    mag : float or array_like
        Magnitude(s) above the atmosphere.
    zero_point : float
        Magnitude that gives 1 e-/s with this telescope, camera and filter.

    Returns
    -------
    float or numpy.ndarray
        ``10 ** (-0.4 (mag - zero_point))`` e-/s.
    """
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


# ---------------------------------------------------------------------------------------
# sky background
# ---------------------------------------------------------------------------------------
def sky_plane(shape: tuple[int, int], level: float,
              gradient: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A tilted plane of sky background.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    level : float
        Value at the image centre (e.g. e-/px over the exposure).
    gradient : tuple of float
        ``(d/dx, d/dy)`` in the unit of ``level`` per pixel.

    Returns
    -------
    numpy.ndarray
        float64 ``(ny, nx)``.
    """
    ny, nx = shape
    gx, gy = gradient
    xx = np.arange(nx) - (nx - 1) / 2.0
    yy = np.arange(ny) - (ny - 1) / 2.0
    return level + gy * yy[:, None] + gx * xx[None, :]


# ---------------------------------------------------------------------------------------
# atmosphere and geometry
# ---------------------------------------------------------------------------------------
def scintillation_sigma(diameter: float, airmass_value, exptime: float, height: float = 0.0):
    """Relative scintillation noise of a star's flux (Young 1967).

    Parameters
    ----------
    diameter : float
        Telescope aperture (m).
    airmass_value : float or array_like
        Airmass.
    exptime : float
        Exposure time (s).
    height : float
        Site altitude (m).

    Returns
    -------
    float or numpy.ndarray
        Fractional standard deviation.
    """
    d_cm = diameter * 100.0
    return (0.09 * d_cm ** (-2.0 / 3.0) * np.asarray(airmass_value, dtype=float) ** 1.75
            * math.exp(-height / 8000.0) / math.sqrt(2.0 * max(exptime, 1e-9)))


def transit_model(t, t0: float, duration: float, depth: float, impact: float = 0.3) -> np.ndarray:
    """Relative flux of a star occulted by a dark planet (uniform stellar disc).

    Parameters
    ----------
    t : float or array_like
        Times (any unit, e.g. JD).
    t0 : float
        Mid-transit time (same unit).
    duration : float
        Total duration, first to fourth contact (same unit).
    depth : float
        Fractional depth at mid-transit: the planet-to-star radius ratio is
        ``sqrt(depth)`` (uniform disc, ``impact < 1 - sqrt(depth)``).
    impact : float
        Impact parameter in stellar radii.

    Returns
    -------
    numpy.ndarray
        Flux relative to out of transit (1 outside, ``1 - depth`` at full occultation).
    """
    p = math.sqrt(depth)
    if not 0 <= impact < 1 - p:
        raise ValueError(f"impact parameter {impact} must be in [0, 1 - sqrt(depth)) "
                         f"= [0, {1 - p:.3f})")
    half_chord = math.sqrt((1 + p) ** 2 - impact ** 2)
    s = 2.0 * half_chord * (np.asarray(t, dtype=float) - t0) / duration
    z = np.sqrt(impact ** 2 + s ** 2)
    area = np.zeros_like(z)
    inside = z <= 1 - p
    area[inside] = p ** 2
    part = (z > 1 - p) & (z < 1 + p)
    zp = z[part]
    k0 = np.arccos(np.clip((p ** 2 + zp ** 2 - 1) / (2 * p * zp), -1, 1))
    k1 = np.arccos(np.clip((1 - p ** 2 + zp ** 2) / (2 * zp), -1, 1))
    root = np.sqrt(np.clip(4 * zp ** 2 - (1 + zp ** 2 - p ** 2) ** 2, 0, None))
    area[part] = (p ** 2 * k0 + k1 - 0.5 * root) / np.pi
    return 1.0 - area


def tan_wcs(shape: tuple[int, int], ra: float, dec: float, pixel_scale: float,
            rotation: float = 0.0) -> WCS:
    """A gnomonic (TAN) WCS with its reference pixel at the image centre.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    ra, dec : float
        Sky position of the image centre (degrees, ICRS).
    pixel_scale : float
        arcsec per pixel.
    rotation : float
        Angle (degrees) from North to the image's +y axis, counted through East: 0 puts
        North up and East left (+x toward the west), as a sky image seen on a display.

    Returns
    -------
    astropy.wcs.WCS
        Celestial WCS (``CD`` matrix, ``RADESYS='ICRS'``).
    """
    ny, nx = shape
    s = pixel_scale / 3600.0
    th = math.radians(rotation)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cd = [[-s * math.cos(th), s * math.sin(th)], [s * math.sin(th), s * math.cos(th)]]
    w.wcs.radesys = "ICRS"
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.set()
    return w


# ---------------------------------------------------------------------------------------
# one frame
# ---------------------------------------------------------------------------------------
@dataclass
class SimulatedFrame:
    """A synthetic raw frame and what went into it.

    Parameters
    ----------
    data : numpy.ndarray
        uint16 ``(ny, nx)``: the frame as the camera writes it (ADU).
    expected : numpy.ndarray
        float32 ``(ny, nx)``: the noise-free charge (e-) from sky, stars (after the flat
        response) and dark current, before cosmic rays, saturation and read-out.
    cosmic_ray_mask : numpy.ndarray
        bool ``(ny, nx)``: pixels hit by a cosmic ray.
    saturated_mask : numpy.ndarray
        bool ``(ny, nx)``: pixels at full well or at the converter's maximum.
    info : dict
        ``n_cosmic_rays`` and ``n_saturated`` (pixels).
    """

    data: np.ndarray
    expected: np.ndarray
    cosmic_ray_mask: np.ndarray
    saturated_mask: np.ndarray
    info: dict = field(default_factory=dict)


def simulate_frame(shape: tuple[int, int], *, rng: np.random.Generator, exptime: float,
                   gain: float, read_noise: float, bias=1000.0, x=(), y=(), flux=(),
                   fwhm=3.0, psf: str = "moffat", beta: float = 3.0, sky=0.0, dark_rate=0.0,
                   flat: np.ndarray | None = None, n_cosmic_rays: int = 0,
                   full_well: float = 100000.0, adc_max: int = 65535,
                   bleed: bool = True) -> SimulatedFrame:
    """Synthesise one raw CCD frame with known truth.

    The charge in a pixel is ``Poisson(flat * (sky + stars) + dark_rate * exptime)`` plus
    cosmic rays, capped at full well (the excess bleeds along the column when ``bleed``),
    then read out with Gaussian read noise and converted to ADU with the gain on top of
    the bias (Howell 2006, ch. 4).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    rng : numpy.random.Generator
        Source of all random numbers (keyword-only, required: frames are reproducible).
    exptime : float
        Exposure time (s); scales ``dark_rate`` only (``flux`` and ``sky`` are totals).
    gain : float
        e-/ADU.
    read_noise : float
        e- (Gaussian, per read).
    bias : float or numpy.ndarray
        Bias level or ``(ny, nx)`` structure (ADU).
    x, y, flux : array_like, shape (n,)
        Star positions (0-based pixels) and total electrons during the exposure.
    fwhm : float or array_like
        Star FWHM (pixels).
    psf : {'moffat', 'gaussian'}
        Star profile.
    beta : float
        Moffat index.
    sky : float or numpy.ndarray
        Sky electrons per pixel during the exposure (scalar or ``(ny, nx)``).
    dark_rate : float or numpy.ndarray
        Dark current (e-/s/px).
    flat : numpy.ndarray, optional
        ``(ny, nx)`` relative response applied to sky and stars (not to dark current).
    n_cosmic_rays : int
        Cosmic-ray events (:func:`cosmic_rays`).
    full_well : float
        Pixel capacity (e-).
    adc_max : int
        Converter maximum (ADU).
    bleed : bool
        Let charge above full well bleed along columns (:func:`bleed_columns`); otherwise
        it is clipped.

    Returns
    -------
    SimulatedFrame

    Raises
    ------
    ValueError
        Negative exposure, non-positive gain, unknown PSF, or arrays of the wrong shape.
    """
    shape = (int(shape[0]), int(shape[1]))
    if exptime < 0:
        raise ValueError(f"exptime must be >= 0 s, got {exptime}")
    for name, arr in (("bias", bias), ("sky", sky), ("dark_rate", dark_rate), ("flat", flat)):
        if arr is not None and np.ndim(arr) == 2 and np.shape(arr) != shape:
            raise ValueError(f"{name} has shape {np.shape(arr)}, expected {shape}")
    light = np.broadcast_to(np.asarray(sky, dtype=float), shape).copy()
    if len(np.atleast_1d(flux)):
        light += render_stars(shape, x, y, flux, fwhm, psf=psf, beta=beta)
    if flat is not None:
        light *= flat
    expected = light + np.asarray(dark_rate, dtype=float) * exptime
    charge = rng.poisson(np.maximum(expected, 0.0)).astype(np.float64)
    cr_img, cr_mask = cosmic_rays(shape, n_cosmic_rays, rng)
    charge += cr_img
    if bleed:
        charge = bleed_columns(charge, full_well)
    np.minimum(charge, full_well, out=charge)
    saturated = charge >= full_well
    data = digitise(charge, gain, read_noise, bias, rng, adc_max)
    saturated |= data >= adc_max
    info = {"n_cosmic_rays": int(n_cosmic_rays), "n_saturated": int(saturated.sum())}
    return SimulatedFrame(data, expected.astype(np.float32), cr_mask, saturated, info)
