"""Layer 2: the alignment ladder -- one frame onto a reference pixel grid.

Pure functions on arrays: no file I/O, no printing. Pixel convention is 0-based
throughout (the centre of the first pixel is ``(x, y) = (0, 0)``; ``x`` runs along
columns, ``y`` along rows), as in astropy and photutils.

A frame is aligned by a ladder of methods, tried in order until one gives a
transform that is verified and inside the user's limits (:func:`align_frame`):

1. ``'wcs'`` -- reprojection with ``reproject.reproject_interp`` when frame and
   reference both carry a celestial WCS (checked against the stars when there are
   enough of them, so a wrong plate solution is caught; :mod:`astrodart.alignment.wcs`);
2. ``'stars'`` -- star-pattern matching (:func:`astrodart.alignment.matching.match_stars`:
   the most common offset, else similar triangles by astroalign, Beroiz, Cabral &
   Sanchez 2020, Astronomy and Computing 32, 100384, with a mirrored attempt) followed
   by a least-squares similarity fit on every cross-matched star;
3. ``'fft'`` -- pure translation from the peak of the FFT phase correlation
   (:func:`astrodart.alignment.correlation.fft_translation`, for frames with too few
   stars for pattern matching).

The pixels are then resampled onto the reference grid
(:mod:`astrodart.alignment.resample`). A frame that no method can align raises
:class:`~astrodart.alignment.transforms.AlignmentError` naming every method tried and
why it failed; a transform outside
:class:`~astrodart.alignment.transforms.AlignmentLimits` raises
:class:`~astrodart.alignment.transforms.AlignmentLimitError`. Nothing is ever returned
"as if aligned".
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from astrodart.alignment.correlation import fft_translation
from astrodart.alignment.matching import crossmatch, match_stars
from astrodart.alignment.resample import invalid_pixels, reproject_to_reference, warp_to_reference
from astrodart.alignment.transforms import (
    AlignmentError,
    AlignmentLimitError,
    AlignmentLimits,
    PixelTransform,
    _clipped_rms,
)
from astrodart.alignment.wcs import _wcs_map, celestial_wcs, transform_from_wcs
from astrodart.sources.sep_measure import sep_positions
from astrodart.sources.stars import find_stars, positions_of

__all__ = [
    "METHODS",
    "ReferenceFrame",
    "AlignmentResult",
    "align_frame",
    "registration_offset",
    "stars_from_detections",
    "star_transform",
]

#: Fewer sep detections than this and the frame's stars come from the matched filter.
_MIN_SEP_STARS = 12

#: Alignment methods, in the default order of the ladder.
METHODS = ("wcs", "stars", "fft")


def _star_xy(data, mask, fwhm: float, max_stars: int) -> np.ndarray:
    """Positions ``(n, 2)`` of the brightest stars, hot pixels and cosmic rays dropped.

    sep's detection first (about 20x faster); a frame where it finds fewer than
    :data:`_MIN_SEP_STARS` (faint or undersampled stars) goes through
    :func:`~astrodart.sources.stars.find_stars` and its matched filter instead. The
    reference and every frame go through this same function, so both lists come from
    the same finder whenever the stars are plentiful.
    """
    xy = sep_positions(data, mask=mask, max_stars=max_stars)
    if len(xy) >= _MIN_SEP_STARS:
        return xy
    return positions_of(find_stars(data, fwhm, mask=mask, max_stars=max_stars, reject_sharp=True,
                                   border=3))


def stars_from_detections(x, y, flux, flag, shape: tuple[int, int], max_stars: int = 200,
                          border: int = 3) -> np.ndarray | None:
    """The alignment's star list from detections made elsewhere (the quality step's sep
    detections), chosen as :func:`~astrodart.sources.sep_measure.sep_positions` chooses.

    Parameters
    ----------
    x, y : (n,) array_like
        0-based barycentres of the detections, pixels.
    flux : (n,) array_like
        Their fluxes (any unit): the brightest are kept.
    flag : (n,) array_like of int
        sep's flags; blended, truncated or deblended detections (flag set) are left out.
    shape : (int, int)
        ``(ny, nx)`` of the frame.
    max_stars : int
        Keep at most this many, brightest first.
    border : int
        Drop detections closer than this to the edge, pixels.

    Returns
    -------
    (m, 2) ndarray or None
        ``x, y`` brightest first; None when fewer than :data:`_MIN_SEP_STARS` are left
        (the frame then needs the matched filter of :func:`_star_xy`, which works on
        pixels).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    flux, flag = np.asarray(flux, float), np.asarray(flag, int)
    ny, nx = shape
    keep = ((flag == 0) & (x >= border) & (y >= border) & (x < nx - border)
            & (y < ny - border) & np.isfinite(flux))
    order = np.argsort(-flux[keep], kind="stable")[:max_stars]
    xy = np.column_stack([x[keep][order], y[keep][order]])
    return xy if len(xy) >= _MIN_SEP_STARS else None


class ReferenceFrame:
    """The frame everything is aligned to, with its stars and WCS computed once.

    Parameters
    ----------
    data : (ny, nx) array_like
        Reference pixels.
    mask : bool array_like, optional
        True marks invalid pixels.
    wcs : astropy.wcs.WCS or astropy.io.fits.Header, optional
        The reference's WCS (only a celestial one is used).
    fwhm : float
        Expected stellar FWHM, pixels (for star detection).
    max_stars : int
        Stars kept for matching.
    stars : (n, 2) array_like, optional
        The reference's star positions when already known (e.g.
        :func:`stars_from_detections` of the quality step's detections); default: found
        on first use.
    """

    def __init__(self, data, mask=None, wcs=None, fwhm: float = 3.0, max_stars: int = 200,
                 stars=None):
        self.data = np.asarray(data, np.float32)
        if self.data.ndim != 2:
            raise ValueError(f"reference must be a 2-D image, got shape {self.data.shape}")
        self.mask = invalid_pixels(self.data, mask)
        self.wcs = celestial_wcs(wcs)
        self.fwhm = fwhm
        self.max_stars = max_stars
        self._stars: np.ndarray | None = (None if stars is None
                                          else np.asarray(stars, float).reshape(-1, 2))

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of the reference grid."""
        return self.data.shape

    @property
    def stars(self) -> np.ndarray:
        """Star positions ``(n, 2)`` of the reference, brightest first (given, or found on
        first use by sep, else :func:`astrodart.sources.stars.find_stars`)."""
        if self._stars is None:
            self._stars = _star_xy(self.data, self.mask, self.fwhm, self.max_stars)
        return self._stars


@dataclass
class AlignmentResult:
    """One frame aligned onto the reference grid.

    Parameters
    ----------
    data : (ny_ref, nx_ref) ndarray of float32
        Aligned pixels: NaN outside the footprint; where an invalid input pixel landed,
        the value repaired from its neighbours.
    invalid : (ny_ref, nx_ref) ndarray of bool
        Mask (True = invalid, CCDData convention): outside the footprint, and the output
        pixels an invalid input pixel landed on (not spread by the interpolation).
    method : str
        'wcs', 'stars', 'fft' or 'reference' (the reference itself).
    transform : PixelTransform
        Frame pixels -> reference pixels (affine fit of the WCS map for 'wcs').
    residual : float
        RMS distance of cross-matched stars after alignment, reference pixels (NaN when
        too few stars to verify).
    n_matches : int
        Number of cross-matched stars.
    overlap : float
        Fraction of the reference grid covered by valid aligned pixels.
    attempts : list of str
        Why earlier methods of the ladder were not used.
    uncertainty : ndarray or None
        Aligned standard deviation, when the input had one.
    """

    data: np.ndarray
    invalid: np.ndarray
    method: str
    transform: PixelTransform
    residual: float
    n_matches: int
    overlap: float
    attempts: list[str] = field(default_factory=list)
    uncertainty: np.ndarray | None = None

    def summary(self) -> dict:
        """Plain-number summary for logs.

        Returns
        -------
        dict
            ``method``, the transform (:meth:`PixelTransform.as_dict`), ``residual_px``,
            ``n_matches``, ``overlap`` and ``attempts``.
        """
        return {"method": self.method, **self.transform.as_dict(),
                "residual_px": None if not np.isfinite(self.residual) else round(self.residual, 4),
                "n_matches": int(self.n_matches), "overlap": round(float(self.overlap), 4),
                "attempts": list(self.attempts)}


def _verify(src_xy, ref_xy, mapped_xy, radius, min_matches) -> tuple[float, int, bool]:
    """Cross-match mapped frame stars with reference stars: (rms, n, verifiable)."""
    if len(src_xy) < min_matches or len(ref_xy) < min_matches:
        return float("nan"), 0, False
    ia, ib, d = crossmatch(mapped_xy, ref_xy, radius)
    return _clipped_rms(d), len(ia), True


@dataclass
class _Frame:
    """A frame on its way down the ladder: its pixels, WCS and (lazily) its stars."""

    data: np.ndarray
    bad: np.ndarray
    wcs: object
    reference: ReferenceFrame
    match_radius: float
    min_matches: int
    _stars: np.ndarray | None = None

    @property
    def stars(self) -> np.ndarray:
        if self._stars is None:
            self._stars = _star_xy(self.data, self.bad, self.reference.fwhm,
                                   self.reference.max_stars)
        return self._stars


def _by_wcs(frame: _Frame) -> tuple[PixelTransform, float, int]:
    """The 'wcs' rung: the WCS map, verified on the stars when there are enough."""
    ref = frame.reference
    if frame.wcs is None or ref.wcs is None:
        which = "frame" if frame.wcs is None else "reference"
        raise AlignmentError(f"no celestial WCS in the {which}")
    transform, _nonlin = transform_from_wcs(frame.wcs, ref.wcs, frame.data.shape)
    sxy = frame.stars
    mapped = _wcs_map(frame.wcs, ref.wcs, sxy) if len(sxy) else sxy
    resid, n, verifiable = _verify(sxy, ref.stars, mapped, frame.match_radius,
                                   frame.min_matches)
    if verifiable and n < frame.min_matches:
        raise AlignmentError(f"the WCS disagrees with the stars (only {n} of {len(sxy)} stars "
                             f"land within {frame.match_radius} px of a reference star): "
                             "wrong plate solution?")
    return transform, resid, n


def _by_stars(frame: _Frame, allow_mirror: bool,
              max_control_points: int) -> tuple[PixelTransform, float, int]:
    """The 'stars' rung: star-pattern matching."""
    return match_stars(frame.stars, frame.reference.stars, frame.data.shape,
                       allow_mirror=allow_mirror, max_control_points=max_control_points,
                       match_radius=frame.match_radius, min_matches=frame.min_matches)


def star_transform(stars, reference: ReferenceFrame, shape: tuple[int, int], *,
                   limits: AlignmentLimits | None = None, match_radius: float = 3.0,
                   min_matches: int = 6, max_control_points: int = 50
                   ) -> tuple[PixelTransform, float, int]:
    """The 'stars' rung of :func:`align_frame` alone, on a star list already known: the
    transform without touching the frame's pixels (which :func:`align_frame` resamples).

    Parameters
    ----------
    stars : (n, 2) array_like
        The frame's star positions, brightest first (e.g. :func:`stars_from_detections`).
    reference : ReferenceFrame
        Target grid and its stars.
    shape : (int, int)
        ``(ny, nx)`` of the frame.
    limits : AlignmentLimits, optional
        Rotation/scale/shift/mirror limits (default :class:`AlignmentLimits`; the overlap
        is checked once the frame is resampled).
    match_radius, min_matches, max_control_points
        As for :func:`align_frame`.

    Returns
    -------
    transform : PixelTransform
        Frame pixels -> reference pixels.
    residual : float
        RMS distance of the cross-matched stars after alignment, pixels.
    n_matches : int
        Cross-matched stars.

    Raises
    ------
    AlignmentLimitError
        The transform breaks ``limits``.
    AlignmentError
        The star patterns do not match.
    """
    limits = limits or AlignmentLimits()
    stars = np.asarray(stars, float).reshape(-1, 2)
    transform, resid, n = match_stars(stars, reference.stars, tuple(shape),
                                      allow_mirror=limits.allow_mirror,
                                      max_control_points=max_control_points,
                                      match_radius=match_radius, min_matches=min_matches)
    broken = limits.violations(transform, tuple(shape), reference.shape)
    if broken:
        why = f"stars: transform breaks limits ({'; '.join(broken)})"
        raise AlignmentLimitError(why, [why])
    return transform, resid, n


def _by_fft(frame: _Frame, min_ratio: float) -> tuple[PixelTransform, float, int]:
    """The 'fft' rung: phase-correlation shift, confirmed by the stars when there are enough."""
    ref = frame.reference
    dx, dy, _ratio = fft_translation(frame.data, ref.data, frame.bad, ref.mask,
                                     min_ratio=min_ratio)
    transform = PixelTransform.translation(dx, dy)
    sxy = frame.stars
    resid, n, verifiable = _verify(sxy, ref.stars, transform.apply(sxy), frame.match_radius,
                                   frame.min_matches)
    if verifiable and n < frame.min_matches:
        raise AlignmentError(f"cross-correlation shift ({dx:.1f}, {dy:.1f}) is not "
                             f"confirmed by the stars ({n} matches)")
    return transform, resid, n


def _resample(frame: _Frame, method: str, transform: PixelTransform, values, order: int,
              wcs_order: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` on the reference grid: reprojected through the WCSs (``wcs_order``) for
    'wcs', else warped through ``transform`` (spline ``order``)."""
    ref = frame.reference
    if method == "wcs":
        return reproject_to_reference(values, frame.wcs, ref.wcs, ref.shape, frame.bad,
                                      order=wcs_order)
    return warp_to_reference(values, transform, ref.shape, frame.bad, order=order)


def align_frame(data, reference: ReferenceFrame, *, mask=None, wcs=None, uncertainty=None,
                methods: Sequence[str] = METHODS, limits: AlignmentLimits | None = None,
                match_radius: float = 3.0, min_matches: int = 6, max_control_points: int = 50,
                order: int = 3, fft_min_ratio: float = 2.0, stars=None) -> AlignmentResult:
    """Align one frame onto ``reference`` by the first method of the ladder that works.

    Parameters
    ----------
    data : (ny, nx) array_like
        Frame pixels.
    reference : ReferenceFrame
        Target grid, its stars and WCS.
    mask : bool array_like, optional
        True marks invalid input pixels.
    wcs : astropy.wcs.WCS or astropy.io.fits.Header, optional
        The frame's WCS (the 'wcs' method needs a celestial one here and in the reference).
    uncertainty : (ny, nx) array_like, optional
        Standard deviation of ``data``; resampled with bilinear interpolation
        (an approximation: interpolation correlates neighbouring pixels).
    methods : sequence of {'wcs', 'stars', 'fft'}
        The ladder, in order.
    limits : AlignmentLimits, optional
        Rotation/scale/shift/mirror/overlap limits (default :class:`AlignmentLimits`).
    match_radius : float
        Star cross-match radius, reference pixels.
    min_matches : int
        Cross-matched stars needed to accept or verify a transform.
    max_control_points : int
        Brightest stars used for triangle matching.
    order : int
        Spline order for the affine resampling (3 = bicubic); 'wcs' uses bicubic too.
    fft_min_ratio : float
        Significance required of the phase-correlation peak (see :func:`fft_translation`).
    stars : (n, 2) array_like, optional
        The frame's star positions when already known (brightest first, e.g.
        :func:`stars_from_detections`); default: found on the pixels when a rung needs them.

    Returns
    -------
    AlignmentResult

    Raises
    ------
    AlignmentLimitError
        A method found a transform but every such transform broke ``limits``.
    AlignmentError
        No method aligned the frame (the message lists each attempt).
    ValueError
        Unknown method name.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown alignment method(s) {unknown}; choose from {METHODS}")
    limits = limits or AlignmentLimits()
    data = np.asarray(data, np.float32)
    frame = _Frame(data, invalid_pixels(data, mask), celestial_wcs(wcs), reference,
                   match_radius, min_matches,
                   None if stars is None else np.asarray(stars, float).reshape(-1, 2))
    _ = reference.stars  # found once, before any rung needs them
    rungs = {"wcs": lambda: _by_wcs(frame),
             "stars": lambda: _by_stars(frame, limits.allow_mirror, max_control_points),
             "fft": lambda: _by_fft(frame, fft_min_ratio)}
    attempts: list[str] = []
    limit_broken = False
    for method in methods:
        try:
            transform, resid, n = rungs[method]()
        except AlignmentError as exc:
            attempts.append(f"{method}: {exc}")
            continue
        broken = limits.violations(transform, data.shape, reference.shape)
        if broken:
            limit_broken = True
            attempts.append(f"{method}: transform breaks limits ({'; '.join(broken)})")
            continue
        out, invalid = _resample(frame, method, transform, data, order, "bicubic")
        overlap = float((~invalid).mean())
        if overlap < limits.min_overlap:
            limit_broken = True
            attempts.append(f"{method}: overlap {overlap:.2f} of the reference < min_overlap "
                            f"{limits.min_overlap}")
            continue
        unc = None
        if uncertainty is not None:
            var, _ = _resample(frame, method, transform,
                               np.asarray(uncertainty, np.float32) ** 2, 1, "bilinear")
            unc = np.sqrt(np.clip(var, 0, None)).astype(np.float32)
        return AlignmentResult(out, invalid, method, transform, resid, n, overlap, attempts, unc)
    err = AlignmentLimitError if limit_broken else AlignmentError
    raise err("could not align: " + " | ".join(attempts), attempts)


def registration_offset(data, reference: ReferenceFrame, mask=None,
                        match_radius: float = 2.0) -> tuple[float, int]:
    """How far a frame of the same shape is from being registered with ``reference``.

    Parameters
    ----------
    data : (ny, nx) array_like
        Frame on (supposedly) the reference grid.
    reference : ReferenceFrame
        The grid to compare with.
    mask : bool array_like, optional
        True marks invalid pixels.
    match_radius : float
        Cross-match radius, pixels.

    Returns
    -------
    offset : float
        Median distance between cross-matched stars, pixels (inf if none match).
    n_matches : int
        Number of cross-matched stars.
    """
    data = np.asarray(data, np.float32)
    if data.shape != reference.shape:
        return float("inf"), 0
    s = _star_xy(data, mask, reference.fwhm, reference.max_stars)
    ia, ib, d = crossmatch(s, reference.stars, match_radius)
    return (float(np.median(d)) if len(d) else float("inf")), int(len(d))
