"""Layer 2: colour composites from three registered images (pure array functions).

The chain used by :class:`astrodart.third_stage_astrophotography.rgb_image`:

1. :func:`neutralise_background` -- subtract a smooth sky map from each channel, so
   the sky is zero (black, colour-neutral) in all three;
2. :func:`match_psf` -- blur the sharper channels to the broadest one's FWHM, so a
   star's colour does not depend on where the stretch cuts its profile;
3. :func:`star_colour_balance` -- scale the channels so that the field stars are
   white on average (median of their flux ratios), the usual white reference of
   astrophotography when no photometric calibration is available;
4. :func:`stretch_rgb` -- map linear fluxes to display values with the colour-
   preserving asinh stretch of Lupton et al. (2004, PASP 116, 133) through
   :func:`astropy.visualization.make_lupton_rgb`, or per-channel asinh/linear
   stretches;
5. :func:`to_uint8` / :func:`to_uint16` -- quantise for PNG (8-bit) or TIFF (16-bit).

Arrays are ``(ny, nx)`` per channel and ``(ny, nx, 3)`` for RGB, row 0 at the bottom
(FITS order) unless a function says otherwise. No file I/O, no plotting here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from astrodart.sources.background import estimate_background, sky_stats
from astrodart.sources.psf import fwhm_of_stars
from astrodart.sources.stars import find_stars, positions_of
from astrodart.exceptions import quiet

__all__ = [
    "STRETCHES",
    "ColourBalance",
    "neutralise_background",
    "select_field_stars",
    "channel_fwhm",
    "match_psf",
    "star_fluxes",
    "star_colour_balance",
    "auto_stretch_parameters",
    "stretch_rgb",
    "to_uint8",
    "to_uint16",
]

log = logging.getLogger("astrodart")

#: Stretches understood by :func:`stretch_rgb`.
STRETCHES = ("lupton", "asinh", "linear")


def _channels(r, g, b) -> list[np.ndarray]:
    chans = [np.asarray(c, dtype=np.float32) for c in (r, g, b)]
    if any(c.ndim != 2 for c in chans) or len({c.shape for c in chans}) != 1:
        raise ValueError("the three channels must be 2-D images of one shape; got shapes "
                         f"{[c.shape for c in chans]} (align them first)")
    return chans


def neutralise_background(r, g, b, mask=None, box_size: int = 64
                          ) -> tuple[list[np.ndarray], list[float]]:
    """Subtract each channel's smooth sky map, making the sky zero in all channels.

    A sky of equal (zero) level in the three channels is neutral (black); gradients
    from moonlight or light pollution, which differ per band, are removed with it.

    Parameters
    ----------
    r, g, b : (ny, nx) array_like
        Registered channel images (any unit).
    mask : (ny, nx) bool array_like, optional
        True marks invalid pixels (ignored in the sky estimate, kept as NaN).
    box_size : int
        Sky box size, pixels (see :func:`astrodart.sources.background.estimate_background`);
        it should be several times larger than the stars.

    Returns
    -------
    channels : list of three (ny, nx) ndarray of float32
        Sky-subtracted channels; invalid pixels are NaN.
    sigmas : list of three float
        Sky noise of each channel after subtraction (channel units).
    """
    chans = _channels(r, g, b)
    bad = np.zeros(chans[0].shape, bool) if mask is None else np.asarray(mask, bool).copy()
    for c in chans:
        bad |= ~np.isfinite(c)
    out, sigmas = [], []
    for c in chans:
        bkg, sigma = estimate_background(c, bad, box_size=box_size)
        s = (c - bkg).astype(np.float32)
        s[bad] = np.nan
        out.append(s)
        sigmas.append(float(sigma))
    return out, sigmas


def star_fluxes(channels, xy, radius: float, annulus: tuple[float, float] | None = None
                ) -> np.ndarray:
    """Aperture fluxes of stars in each channel, with a local sky from an annulus.

    Parameters
    ----------
    channels : sequence of (ny, nx) array_like
        Images (NaN = invalid).
    xy : (N, 2) array_like
        Star positions, 0-based ``x, y``.
    radius : float
        Aperture radius, pixels.
    annulus : (float, float), optional
        Inner and outer radius of the local-sky annulus (default ``2r`` to ``3r``).

    Returns
    -------
    (N, n_channels) ndarray
        Sky-subtracted fluxes (channel units x pixels); NaN where the aperture touches
        an invalid pixel.
    """
    from photutils.aperture import (
        ApertureStats,
        CircularAnnulus,
        CircularAperture,
        aperture_photometry,
    )

    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros((0, len(channels)))
    rin, rout = annulus if annulus is not None else (2 * radius, 3 * radius)
    ap = CircularAperture(xy, r=radius)
    an = CircularAnnulus(xy, r_in=rin, r_out=rout)
    out = np.empty((len(xy), len(channels)))
    for k, c in enumerate(channels):
        c = np.asarray(c, float)
        bad = ~np.isfinite(c)
        clean = np.where(bad, 0.0, c)
        with quiet():
            sky = np.asarray(ApertureStats(clean, an, mask=bad, sum_method="exact").median, float)
            phot = aperture_photometry(clean, ap)
            nbad = aperture_photometry(bad.astype(float), ap)["aperture_sum"]
        flux = np.asarray(phot["aperture_sum"], float) - np.nan_to_num(sky) * ap.area
        flux[np.asarray(nbad, float) > 0] = np.nan
        out[:, k] = flux
    return out


def _union_mask(chans, mask) -> np.ndarray:
    bad = np.zeros(chans[0].shape, bool) if mask is None else np.asarray(mask, bool).copy()
    for c in chans:
        bad |= ~np.isfinite(c)
    return bad


def select_field_stars(r, g, b, mask=None, saturation=None, max_stars: int = 200,
                       fwhm: float | None = None) -> tuple[np.ndarray, float]:
    """Isolated, unsaturated stars seen in all three channels, for colour work.

    Stars are detected on the sum of the noise-normalised channels
    (:func:`astrodart.sources.stars.find_stars`); those near an edge or an invalid pixel,
    with a brighter neighbour within 4 FWHM, or reaching ``saturation`` in any channel
    are dropped.

    Parameters
    ----------
    r, g, b : (ny, nx) array_like
        Registered, sky-subtracted channels (NaN = invalid).
    mask : bool array_like, optional
        True marks invalid pixels.
    saturation : float or sequence of three float, optional
        Saturation level per channel (channel units). Default: 80 % of each channel's
        99.99th percentile, which drops the stars whose cores reach the flat tops of
        saturated stars (and, on unsaturated images, only the very brightest).
    max_stars : int
        Detect at most this many stars.
    fwhm : float, optional
        Stellar FWHM, pixels (default: measured on the sum image).

    Returns
    -------
    xy : (N, 2) ndarray
        Star positions, 0-based ``x, y``, brightest first.
    fwhm : float
        FWHM used (pixels).
    """
    chans = _channels(r, g, b)
    bad = _union_mask(chans, mask)
    sig = [sky_stats(c, mask=bad).rms or 1.0 for c in chans]
    total = sum(np.where(bad, 0.0, c) / s for c, s in zip(chans, sig))
    xy = _field_star_xy(total, bad, fwhm or 3.0, max_stars)
    if fwhm is None and len(xy) >= 3:
        fwhm = fwhm_of_stars(total, xy[:30], mask=bad, fwhm_guess=3.0)
        fwhm = fwhm if np.isfinite(fwhm) else 3.0
        xy = _field_star_xy(total, bad, fwhm, max_stars)
    fwhm = float(fwhm or 3.0)
    if saturation is None:
        sat = [0.8 * float(np.percentile(c[~bad], 99.99)) for c in chans]
    else:
        sat = list(np.broadcast_to(np.asarray(saturation, float), (3,)))
    keep = np.ones(len(xy), bool)
    for i in range(1, len(xy)):  # sorted brightest first: no brighter source within 4 FWHM
        if (np.hypot(*(xy[:i] - xy[i]).T) < 4 * fwhm).any():
            keep[i] = False
    ny, nx = bad.shape
    half = int(np.ceil(max(2.0, 2.0 * fwhm))) + 1
    for i, (x, y) in enumerate(xy):
        ix, iy = int(round(x)), int(round(y))
        if not keep[i]:
            continue
        if ix < half or iy < half or ix >= nx - half or iy >= ny - half:
            keep[i] = False
            continue
        box = [c[iy - half:iy + half + 1, ix - half:ix + half + 1] for c in chans]
        if any(np.nanmax(bx) >= s for bx, s in zip(box, sat)) or \
                bad[iy - half:iy + half + 1, ix - half:ix + half + 1].any():
            keep[i] = False
    return xy[keep], fwhm


def _field_star_xy(image, bad, fwhm: float, max_stars: int) -> np.ndarray:
    """Positions ``(n, 2)`` of the brightest stars, hot pixels and cosmic rays dropped."""
    return positions_of(find_stars(image, fwhm, mask=bad, max_stars=max_stars,
                                   reject_sharp=True, border=3))


def channel_fwhm(channels, xy, mask=None) -> list[float]:
    """FWHM of each channel measured on the same stars
    (:func:`astrodart.sources.psf.fwhm_of_stars`).

    Parameters
    ----------
    channels : sequence of (ny, nx) array_like
        Sky-subtracted images.
    xy : (N, 2) array_like
        Isolated, unsaturated star positions (e.g. from :func:`select_field_stars`).
    mask : bool array_like, optional
        True marks invalid pixels.

    Returns
    -------
    list of float
        FWHM per channel, pixels (NaN where no fit succeeded).
    """
    xy = np.asarray(xy, float).reshape(-1, 2)[:40]
    return [fwhm_of_stars(np.nan_to_num(np.asarray(c, float)), xy, mask=mask) for c in channels]


def match_psf(channels, fwhms, mask=None) -> tuple[list[np.ndarray], float]:
    """Blur the sharper channels to the broadest channel's FWHM (Gaussian kernels).

    Bands observed in different seeing give stars of different widths; any non-linear
    stretch then compresses the sharper band's core more, so stars get false colour
    rims and a colour that depends on the stretch. Convolving each channel with a
    Gaussian of FWHM ``sqrt(target**2 - fwhm**2)`` equalises the (approximately
    Gaussian) PSFs; invalid pixels are left out by normalised convolution.

    Parameters
    ----------
    channels : sequence of (ny, nx) array_like
        Images (NaN = invalid).
    fwhms : sequence of float
        FWHM of each channel, pixels (NaN entries are left unblurred).
    mask : bool array_like, optional
        True marks invalid pixels.

    Returns
    -------
    channels : list of ndarray of float32
        PSF-matched images (NaN where invalid).
    target : float
        The common FWHM, pixels.
    """
    from scipy import ndimage

    f = np.asarray(fwhms, float)
    target = float(np.nanmax(f)) if np.isfinite(f).any() else float("nan")
    out = []
    for c, fw in zip(channels, f):
        c = np.asarray(c, np.float32)
        if not (np.isfinite(fw) and np.isfinite(target)) or target - fw < 0.05:
            out.append(c)
            continue
        sigma = np.sqrt(target ** 2 - fw ** 2) / 2.3548
        bad = ~np.isfinite(c) if mask is None else (~np.isfinite(c) | np.asarray(mask, bool))
        valid = (~bad).astype(np.float32)
        num = ndimage.gaussian_filter(np.where(bad, 0.0, c).astype(np.float32), sigma)
        den = ndimage.gaussian_filter(valid, sigma)
        with np.errstate(invalid="ignore", divide="ignore"):
            blurred = np.where(den > 0.5, num / den, np.nan).astype(np.float32)
        blurred[bad] = np.nan
        out.append(blurred)
    return out, target


@dataclass
class ColourBalance:
    """Result of :func:`star_colour_balance`.

    Parameters
    ----------
    factors : (3,) ndarray
        Multipliers for the red, green and blue channels (green = 1).
    xy : (N, 2) ndarray
        Positions of the stars used.
    fluxes : (N, 3) ndarray
        Their fluxes in the input (unbalanced) channels.
    fwhm : float
        FWHM used for the apertures, pixels.
    scatter : (2,) ndarray
        Robust scatter (1.4826 MAD) of ln(G/R) and ln(G/B) over the stars: the spread of
        intrinsic star colours, not an error.
    """

    factors: np.ndarray
    xy: np.ndarray
    fluxes: np.ndarray
    fwhm: float
    scatter: np.ndarray

    @property
    def n_stars(self) -> int:
        """Number of stars used."""
        return len(self.xy)


def star_colour_balance(r, g, b, mask=None, saturation=None, max_stars: int = 200,
                        min_snr: float = 30.0, fwhm: float | None = None,
                        xy=None) -> ColourBalance:
    """Channel multipliers that make the field stars white on average.

    Isolated, unsaturated stars (:func:`select_field_stars`) are measured in an aperture
    of radius 2 FWHM with a local sky annulus (2 to 3 radii); stars below ``min_snr`` in
    any channel are dropped. The red and blue factors are the medians of G/R and G/B
    over the stars, so the median field star becomes white -- the usual white reference
    of astrophotography when no photometric calibration is at hand.

    Parameters
    ----------
    r, g, b : (ny, nx) array_like
        Registered, sky-subtracted channels (NaN = invalid), e.g. from
        :func:`neutralise_background`.
    mask : bool array_like, optional
        True marks invalid pixels.
    saturation : float or sequence of three float, optional
        Saturation level per channel (see :func:`select_field_stars`).
    max_stars : int
        Detect at most this many stars.
    min_snr : float
        Minimum aperture signal-to-noise ratio in every channel (sky noise only).
    fwhm : float, optional
        Stellar FWHM, pixels (default: measured on the stars).
    xy : (N, 2) array_like, optional
        Star positions to use instead of selecting them (``fwhm`` should then be given).

    Returns
    -------
    ColourBalance

    Raises
    ------
    ValueError
        Fewer than 3 usable stars.
    """
    chans = _channels(r, g, b)
    bad = _union_mask(chans, mask)
    if xy is None:
        xy, fwhm = select_field_stars(*chans, mask=bad, saturation=saturation,
                                      max_stars=max_stars, fwhm=fwhm)
    fwhm = float(fwhm or 3.0)
    xy = np.asarray(xy, float).reshape(-1, 2)
    radius = max(2.0, 2.0 * fwhm)
    flux = star_fluxes(chans, xy, radius)
    noise = np.array([sky_stats(c, mask=bad).rms for c in chans]) * np.sqrt(np.pi) * radius
    good = np.isfinite(flux).all(1) & (flux / noise > min_snr).all(1)
    xy, flux = xy[good], flux[good]
    if len(xy) < 3:
        raise ValueError(f"colour balance needs at least 3 isolated, unsaturated stars with "
                         f"S/N > {min_snr} in every channel; found {len(xy)}")
    lr = np.log(flux[:, 1] / flux[:, 0])
    lb = np.log(flux[:, 1] / flux[:, 2])
    factors = np.array([np.exp(np.median(lr)), 1.0, np.exp(np.median(lb))])
    scatter = np.array([1.4826 * np.median(np.abs(v - np.median(v))) for v in (lr, lb)])
    log.info("colour balance on %d stars: factors R %.4g, G 1, B %.4g", len(xy), factors[0],
             factors[2])
    return ColourBalance(factors, xy, flux, fwhm, scatter)


def auto_stretch_parameters(r, g, b, sigmas=None) -> dict:
    """Display parameters for :func:`stretch_rgb` chosen from the data.

    With ``sky`` the mean of the channels' sky noise, the black point sits one ``sky``
    below zero in all three channels, so the sky is a dark, neutral grey with its noise
    just visible; the Lupton ``stretch`` (linear range) is 20 sky sigmas and ``Q = 8``;
    the linear/asinh white point is the 99.9th percentile of the mean channel.

    Parameters
    ----------
    r, g, b : (ny, nx) array_like
        Sky-subtracted, balanced channels.
    sigmas : sequence of three float, optional
        Sky noise of each channel (measured, 1.4826 x MAD, if not given).

    Returns
    -------
    dict
        ``minimum`` (list of three floats), ``stretch``, ``Q`` and ``white`` (floats).
    """
    chans = _channels(r, g, b)
    if sigmas is None:
        sigmas = []
        for c in chans:
            v = c[np.isfinite(c)]
            sigmas.append(1.4826 * float(np.median(np.abs(v - np.median(v)))) if v.size else 0.0)
    sky = float(np.mean(sigmas)) or 1.0
    with quiet(RuntimeWarning):  # pixels invalid in every channel
        mean = np.nanmean(np.stack(chans), axis=0)
    v = mean[np.isfinite(mean)]
    white = float(np.percentile(v, 99.9)) if v.size else 10 * sky
    return {"minimum": [-sky] * 3, "stretch": 20.0 * sky, "Q": 8.0, "white": max(white, 10 * sky)}


def stretch_rgb(r, g, b, method: str = "lupton", minimum=None, stretch: float | None = None,
                Q: float | None = None, white: float | None = None,
                softening: float = 0.02) -> np.ndarray:
    """Map three linear channels to display values in ``[0, 1]``.

    Parameters
    ----------
    r, g, b : (ny, nx) array_like
        Registered, sky-subtracted, colour-balanced channels (NaN = invalid, shown black).
    method : {'lupton', 'asinh', 'linear'}
        ``'lupton'``: asinh of the mean intensity applied equally to the three
        channels (Lupton et al. 2004), which keeps the colour of bright stars instead
        of bleaching them (astropy ``make_lupton_rgb``); ``'asinh'``: astropy
        ``AsinhStretch`` per channel between ``minimum`` and ``white``; ``'linear'``:
        linear per channel between ``minimum`` and ``white``.
    minimum : float or sequence of three float, optional
        Black point per channel (default from :func:`auto_stretch_parameters`).
    stretch : float, optional
        Lupton linear range (channel units).
    Q : float, optional
        Lupton asinh softening (default 8).
    white : float, optional
        White point for 'asinh'/'linear' (channel units).
    softening : float
        ``a`` of astropy's ``AsinhStretch`` for 'asinh' (smaller = stronger stretch).

    Returns
    -------
    (ny, nx, 3) ndarray of float64
        Display values in ``[0, 1]``, row 0 at the bottom (FITS order).

    Raises
    ------
    ValueError
        Unknown ``method`` or mismatched channel shapes.
    """
    if method not in STRETCHES:
        raise ValueError(f"stretch method {method!r} unknown; choose from {STRETCHES}")
    chans = _channels(r, g, b)
    auto = auto_stretch_parameters(*chans)
    if minimum is None:
        minimum = auto["minimum"]
    else:
        minimum = list(np.broadcast_to(np.asarray(minimum, float), (3,)))
    chans = [np.nan_to_num(c, nan=float(m)) for c, m in zip(chans, minimum)]
    if method == "lupton":
        from astropy.visualization import make_lupton_rgb

        with quiet(RuntimeWarning):  # 0/0 where the intensity is 0
            return make_lupton_rgb(*chans, minimum=minimum, stretch=stretch or auto["stretch"],
                                   Q=auto["Q"] if Q is None else Q, output_dtype=float)
    from astropy.visualization import AsinhStretch, LinearStretch, ManualInterval

    white = auto["white"] if white is None else float(white)
    fn = AsinhStretch(a=softening) if method == "asinh" else LinearStretch()
    out = [fn(ManualInterval(m, white)(c, clip=True), clip=True) for c, m in zip(chans, minimum)]
    return np.clip(np.dstack(out), 0.0, 1.0)


def to_uint8(rgb, flip: bool = True) -> np.ndarray:
    """Quantise display values in ``[0, 1]`` to 8 bits.

    Parameters
    ----------
    rgb : (ny, nx, 3) array_like
        Display values (clipped to ``[0, 1]``).
    flip : bool
        Put FITS row 0 (the bottom) last, as image files expect (top row first).

    Returns
    -------
    (ny, nx, 3) ndarray of uint8
    """
    a = np.clip(np.nan_to_num(np.asarray(rgb, float)), 0, 1)
    a = np.round(a * 255).astype(np.uint8)
    return a[::-1] if flip else a


def to_uint16(rgb, flip: bool = True) -> np.ndarray:
    """Quantise display values in ``[0, 1]`` to 16 bits (see :func:`to_uint8`).

    Parameters
    ----------
    rgb : array_like
        Display values, any shape (one channel or RGB).
    flip : bool
        Put FITS row 0 (the bottom) last.

    Returns
    -------
    ndarray of uint16
    """
    a = np.clip(np.nan_to_num(np.asarray(rgb, float)), 0, 1)
    a = np.round(a * 65535).astype(np.uint16)
    return a[::-1] if flip else a
