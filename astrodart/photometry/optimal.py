"""Layer 2: optimal (profile-weighted) extraction of stars, after Naylor (1998).

For faint stars an aperture sum is dominated by the noise of its outer pixels, where
there is little starlight. Naylor's optimal extraction weights every pixel by the share
of the star's light it is expected to hold over its variance, which for a sky-limited
star gains about 10 % in signal-to-noise over the best aperture (Naylor 1998, section 3),
as the HiPERCAM pipeline offers it. The estimator (Naylor 1998, MNRAS 296, 339, eqs. 9-10)::

    W_i = (P_i / V_i) / sum_j (P_j**2 / V_j)          F = sum_i W_i (D_i - S)
    sigma_F**2 = sum_i W_i**2 V_i  (+ the error of the sky level, (sum_i W_i)**2 sigma_S**2)

with ``P`` the star's profile normalised to a sum of 1 (a pixel-integrated circular
Gaussian of the frame's FWHM), ``D`` the data, ``S`` the annulus sky and ``V`` the
variance each pixel is *expected* to have, ``(S + F0 P_i) / g + RN**2 / g**2`` from a
first aperture estimate ``F0`` (not from the pixel's own value, which would bias faint
stars low). ``F`` estimates the star's whole flux when the profile is right; when it is
not, target and comparison stars measured with the same profile share the error, which
a differential light curve divides out (Naylor 1998, section 2.3). Masked or non-finite
pixels get no weight (the weights renormalise over the rest) instead of being repaired.

The pure function here works on arrays; :class:`astrodart.pipeline.photometry.PhotometryRun`
uses it for ``aperture_type='optimal'``.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from astrodart.photometry._arrays import _as_image, _as_positions
from astrodart.photometry.apertures import ApertureResult, PhotFlag, _off_image, _sky_of_stars

__all__ = ["gaussian_profile", "optimal_photometry"]

_SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def gaussian_profile(x0: float, y0: float, fwhm: float, xs: np.ndarray,
                     ys: np.ndarray) -> np.ndarray:
    """A circular Gaussian integrated over each pixel, normalised to a total of 1.

    Parameters
    ----------
    x0, y0 : float
        Centre, 0-based pixels (pixel ``i`` spans ``i - 0.5`` to ``i + 0.5``).
    fwhm : float
        Full width at half maximum, pixels (> 0).
    xs, ys : numpy.ndarray of int, shape (nx,) and (ny,)
        Column and row indices of the cut-out.

    Returns
    -------
    numpy.ndarray, shape (ny, nx)
        The share of the star's light falling in each pixel (the product of the two
        one-dimensional integrals, from the error function).
    """
    s = fwhm * _SIGMA_PER_FWHM * np.sqrt(2.0)
    px = 0.5 * (erf((xs + 0.5 - x0) / s) - erf((xs - 0.5 - x0) / s))
    py = 0.5 * (erf((ys + 0.5 - y0) / s) - erf((ys - 0.5 - y0) / s))
    return np.outer(py, px)


def _star_cutout(arr, bad, unc, x, y, radius):
    """Pixel index ranges, data, bad map, uncertainty and in-disc map around one star."""
    ny, nx = arr.shape
    half = int(np.ceil(radius)) + 1
    ix, iy = int(round(x)), int(round(y))
    xs = np.arange(max(ix - half, 0), min(ix + half + 1, nx))
    ys = np.arange(max(iy - half, 0), min(iy + half + 1, ny))
    disc = ((xs[None, :] - x) ** 2 + (ys[:, None] - y) ** 2) <= radius ** 2
    cut = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)) if xs.size and ys.size else None
    if cut is None:
        return xs, ys, None, None, None, disc
    return xs, ys, arr[cut], bad[cut], None if unc is None else unc[cut], disc


def _extract_one(arr, bad, unc, x, y, fwhm, radius, sky, sky_var, gain, rn2):
    """Optimal flux, its variance, the weight share lost to bad pixels and their count."""
    xs, ys, d, b, u, disc = _star_cutout(arr, bad, unc, x, y, radius)
    if d is None or not disc.any():
        return np.nan, np.nan, 1.0, 0.0
    prof = gaussian_profile(x, y, fwhm, xs, ys) * disc
    good = disc & ~b & np.isfinite(d)
    resid = np.where(good, d - sky, 0.0)
    f0 = float(resid.sum() / max(prof[good].sum(), 1e-12))  # first estimate, aperture-like
    if u is not None:
        var = np.where(good, u ** 2, np.inf)
    else:
        var = np.clip(sky + max(f0, 0.0) * prof, 0.0, None) / gain + rn2 / gain ** 2
        var = np.where(good, np.maximum(var, 1e-12), np.inf)
    w = np.where(good, prof / var, 0.0)
    norm = float((w * prof).sum())
    if norm <= 0:
        return np.nan, np.nan, 1.0, float((disc & ~good).sum())
    w /= norm
    flux = float((w * resid).sum())
    fvar = float((w ** 2 * np.where(good, var, 0.0)).sum()) + float(w.sum()) ** 2 * sky_var
    lost = float(prof[disc & ~good].sum() / max(prof[disc].sum(), 1e-12))
    return flux, fvar, lost, float((disc & ~good).sum())


def optimal_photometry(data, positions, fwhm: float, r_in: float, r_out: float, *,
                       radius: float | None = None, gain: float = 1.0,
                       read_noise: float | None = None, uncertainty=None, mask=None,
                       saturation: float | None = None, sigma: float = 3.0,
                       min_sky_pixels: int = 20, max_lost_weight: float = 0.1
                       ) -> ApertureResult:
    """Optimal extraction (Naylor 1998) of stars with an annulus sky.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Calibrated image in data units (ADU, or electrons with ``gain=1``).
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of the stars (re-centred beforehand).
    fwhm : float
        The frame's FWHM, pixels: the width of the Gaussian profile of the weights.
    r_in, r_out : float
        Inner and outer radius of the sky annulus, pixels.
    radius : float, optional
        Pixels farther than this from a star get no weight; default ``r_in`` (the
        weights themselves fall off with the profile, so a wide disc costs no noise).
    gain : float
        Electrons per data unit (1 for data in electrons).
    read_noise : float, optional
        Read noise, electrons. Without it and without ``uncertainty`` the pixel variance
        is the annulus's measured scatter.
    uncertainty : array_like or NDUncertainty, optional
        1-sigma plane in data units; when given, it is each pixel's variance.
    mask : array_like of bool, optional
        True = bad pixel (no weight).
    saturation : float, optional
        Level (data units) at or above which a pixel of the disc flags the star.
    sigma : float
        Clipping threshold of the annulus sky.
    min_sky_pixels : int
        Fewer kept annulus pixels flag ``SKY``.
    max_lost_weight : float
        Bad pixels that would have carried more than this share of the profile's weight
        in the disc flag the star ``BAD_PIXEL`` (allowed 0 to 1).

    Returns
    -------
    ApertureResult
        ``flux`` and ``flux_err`` are the optimal estimate of the whole star's flux and
        its 1-sigma error; ``r_ap`` is ``radius``; ``area`` the disc's good pixels;
        ``n_repaired`` the bad pixels given no weight and ``repaired_fraction`` the share
        of the profile they held.

    Raises
    ------
    ValueError
        Non-positive ``fwhm`` or gain, radii out of order, ``max_lost_weight`` outside
        0-1, or badly shaped inputs.

    References
    ----------
    Naylor, T. 1998, MNRAS 296, 339, "An optimal extraction algorithm for imaging
    photometry".
    """
    arr = _as_image(data)
    xy = _as_positions(positions)
    radius = float(r_in if radius is None else radius)
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise ValueError(f"fwhm must be a positive number of pixels, got {fwhm!r}")
    if not 0 < radius <= r_in < r_out:
        raise ValueError(f"radii must satisfy 0 < radius <= r_in < r_out, got {radius}, "
                         f"{r_in}, {r_out}")
    if not (gain and gain > 0):
        raise ValueError(f"gain must be positive (e-/data unit), got {gain!r}")
    if not 0 <= max_lost_weight <= 1:
        raise ValueError(f"max_lost_weight={max_lost_weight!r}: allowed 0 to 1")
    bad, unc, skies = _sky_of_stars(arr, xy, mask, uncertainty, r_in, r_out, sigma)
    return _measure_all(arr, bad, unc, xy, fwhm, radius, skies,
                        gain, read_noise, saturation, min_sky_pixels, max_lost_weight,
                        (float(r_in), float(r_out)))


def _measure_all(arr, bad, unc, xy, fwhm, radius, skies, gain, read_noise, saturation,
                 min_sky_pixels, max_lost_weight, annulus) -> ApertureResult:
    """Extract every star and flag it (see :func:`optimal_photometry`)."""
    sky, sky_std, n_sky, sky_unc2 = skies
    n = len(xy)
    flux, err, lost, n_bad, area = (np.full(n, np.nan) for _ in range(5))
    flags = np.zeros(n, dtype=np.int64)
    flags[_off_image(xy, radius, arr.shape)] |= PhotFlag.OFF_IMAGE
    flags[n_sky < min_sky_pixels] |= PhotFlag.SKY
    for i, (x, y) in enumerate(xy):
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(sky[i])):
            flags[i] |= PhotFlag.SKY if not np.isfinite(sky[i]) else PhotFlag.OFF_IMAGE
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            nsky = n_sky[i] if n_sky[i] > 0 else np.nan
            per_pix = sky_unc2[i] if unc is not None else sky_std[i] ** 2
            sky_var = (np.pi / 2) * per_pix / nsky
        rn2 = float(read_noise) ** 2 if read_noise is not None else (sky_std[i] ** 2 * gain ** 2
                                                                       - max(sky[i], 0) * gain)
        f, v, lw, nb = _extract_one(arr, bad, unc, x, y, fwhm, radius, sky[i],
                                    sky_var if np.isfinite(sky_var) else 0.0, gain, max(rn2, 0.0))
        flux[i], err[i], lost[i], n_bad[i] = f, np.sqrt(v) if v >= 0 else np.nan, lw, nb
        xs, ys, d, b, _, disc = _star_cutout(arr, bad, None, x, y, radius)
        if d is not None:
            area[i] = float((disc & ~b).sum())
            if saturation is not None and np.any(np.where(b | ~disc, -np.inf, d) >= saturation):
                flags[i] |= PhotFlag.SATURATED
    flags[~(lost <= max_lost_weight)] |= PhotFlag.BAD_PIXEL
    flags[~(flux > 0)] |= PhotFlag.NONPOSITIVE
    return ApertureResult(x=xy[:, 0].copy(), y=xy[:, 1].copy(), flux=flux, flux_err=err,
                          sky=sky, sky_std=sky_std, area=area, n_sky=n_sky, flags=flags,
                          r_ap=radius, r_in=annulus[0], r_out=annulus[1],
                          n_repaired=n_bad, repaired_fraction=lost)
