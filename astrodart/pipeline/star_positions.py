"""Layer 3: stars and positions on FITS frames, for photometry.

Reads frames and hands arrays to the pure photometry room (:mod:`astrodart.photometry`):
detecting and numbering the stars of a reference frame, converting positions between
pixels and the sky through each frame's WCS, and following positions from frame to frame.
The guide module :mod:`astrodart.third_stage_photometry` wraps these in AstroDART's
classes.

Pixel coordinates are 0-based (numpy/photutils convention); ``x`` is the column.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from astrodart.alignment.correlation import fft_translation
from astrodart.alignment.matching import match_stars
from astrodart.alignment.transforms import AlignmentError, PixelTransform
from astrodart.exceptions import AstrodartWarning, warn, quiet
from astrodart.frames.io import FrameError, read_frame
from astrodart.photometry.centroids import recentre
from astrodart.sources.psf import NoStarsWarning, fwhm_of_stars
from astrodart.sources.stars import find_stars, positions_of

__all__ = [
    "PhotometryWarning",
    "frame_wcs",
    "pixel_scale_arcsec",
    "numbered_stars",
    "xy_pairs",
    "as_file_lists",
    "select_stars",
    "pixels_to_world",
    "world_to_pixels",
    "track_positions",
    "track_stars",
    "star_positions_kind",
]

log = logging.getLogger("astrodart")


class PhotometryWarning(AstrodartWarning):
    """Something in the photometry the user should know about (a skipped frame, a missing
    gain, ...); the message names the file and what was done."""


# --------------------------------------------------------------------------- frames
def frame_wcs(header):
    """The celestial WCS of a header, or None when it has none.

    Parameters
    ----------
    header : astropy.io.fits.Header or dict-like
        A frame header.

    Returns
    -------
    astropy.wcs.WCS or None
        The 2-D celestial WCS; None without WCS keywords or when they are malformed.
    """
    if not any(k in header for k in ("CTYPE1", "CD1_1", "PC1_1")):
        return None
    from astropy.wcs import WCS, FITSFixedWarning

    with quiet(FITSFixedWarning):
        try:
            w = WCS(header, naxis=2)
        except Exception:  # malformed WCS keywords: treat as no WCS
            return None
    return w.celestial if w.has_celestial else None


def pixel_scale_arcsec(wcs) -> float:
    """Mean pixel scale of a celestial WCS, arcsec per pixel.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A celestial WCS.

    Returns
    -------
    float
        Mean of the two axes' scales, arcsec/pixel.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def numbered_stars(path, threshold: float) -> tuple[Table, float]:
    """The stars of a frame, brightest first, and its FWHM.

    Cached per file version (path, modification time and size), so that
    ``check_image``, ``from_index`` and ``from_image`` on the same frame detect once.

    Parameters
    ----------
    path : str or pathlib.Path
        A calibrated FITS frame.
    threshold : float
        Detection threshold in sigma (see :func:`astrodart.sources.stars.find_stars`).

    Returns
    -------
    stars : astropy.table.Table
        Detections, brightest first, with an ``id`` column (0-based) and ``x``, ``y``
        (0-based pixels) and ``flux``.
    fwhm : float
        FWHM of the frame, pixels (3 when it cannot be measured).

    Raises
    ------
    astrodart.frames.io.FrameError
        The file does not exist or cannot be read.
    ValueError
        No star above the threshold.
    """
    path = Path(path)
    if not path.exists():
        raise FrameError(path, "file does not exist")
    stat = path.stat()
    stars, fwhm = _detect_stars(str(path), stat.st_mtime_ns, stat.st_size, float(threshold))
    return stars.copy(), fwhm


@functools.lru_cache(maxsize=8)
def _detect_stars(path: str, mtime_ns: int, size: int, threshold: float) -> tuple[Table, float]:
    from astrodart.sources.psf import measure_fwhm
    from astrodart.sources.stars import find_stars

    ccd = read_frame(path)
    data = np.asarray(ccd.data, dtype=float)
    with quiet(NoStarsWarning), np.errstate(all="ignore"):  # no stars: handled below
        fw = measure_fwhm(data, mask=ccd.mask).fwhm
    if not np.isfinite(fw):
        fw = 3.0
        log.info("%s: FWHM not measurable, detecting with 3 px", path)
    stars = find_stars(data, fwhm=float(fw), threshold=threshold, mask=ccd.mask)
    if len(stars) == 0:
        raise ValueError(f"{path}: no star above {threshold} sigma; lower threshold=")
    stars = stars.copy()
    stars.add_column(np.arange(len(stars)), name="id", index=0)
    return stars, float(fw)


# ------------------------------------------------------------------------ positions
def xy_pairs(obj, what: str) -> tuple[np.ndarray, bool]:
    """An ``(n, 2)`` array from an ``(x, y)`` pair or a list of pairs.

    Parameters
    ----------
    obj : array_like, shape (2,) or (n, 2)
        Position(s), pixels.
    what : str
        Name used in the error message.

    Returns
    -------
    xy : numpy.ndarray, shape (n, 2)
        The positions.
    single : bool
        Whether ``obj`` was a single pair.

    Raises
    ------
    ValueError
        Any other shape.
    """
    arr = np.asarray(obj, dtype=float)
    if arr.shape == (2,):
        return arr[None, :], True
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr, False
    raise ValueError(
        f"{what} must be an (x, y) pair or a list of (x, y) pairs; got shape {arr.shape}"
    )


def as_file_lists(files) -> list[list[str]]:
    """Frames per filter from a path, a list of paths or a list of lists of paths.

    Parameters
    ----------
    files : str, pathlib.Path, list of paths or list of list of paths
        One frame, the frames of one filter, or the frames of each filter.

    Returns
    -------
    list of list of str
        ``files[filter][frame]``.

    Raises
    ------
    ValueError
        ``files`` is empty.
    """
    if files is None or len(files) == 0:
        raise ValueError("files must be a list of frames per filter (or one list of frames)")
    if isinstance(files, (str, Path)):
        return [[str(files)]]
    if all(isinstance(f, (str, Path)) for f in files):
        return [[str(f) for f in files]]
    return [[str(f) for f in fl] for fl in files]


def select_stars(positions: np.ndarray, reference: str, target_index, comparison_indices):
    """Target and comparisons picked by their numbers in a reference frame's star list.

    Parameters
    ----------
    positions : numpy.ndarray, shape (n, 2)
        The numbered stars of ``reference`` (0-based pixels, brightest first).
    reference : str
        The reference frame.
    target_index : int
        Number of the target.
    comparison_indices : list of int
        Numbers of the comparison stars.

    Returns
    -------
    target : astropy.coordinates.SkyCoord or tuple of float
        A SkyCoord when the reference frame has a WCS, else its ``(x, y)``.
    comparisons : list
        Likewise for each comparison.

    Raises
    ------
    IndexError
        A number beyond the stars found.
    ValueError
        A star chosen as both target and comparison.
    """
    n = len(positions)

    def check(i, what):
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(
                f"{what}={i!r} but check_image found {n} stars on {reference} "
                f"(valid 0..{n - 1}, the numbers on its plot)"
            )
        return int(i)

    t = check(target_index, "target_index")
    comps = [check(i, "comparison_stars_indeces entry") for i in comparison_indices]
    if t in comps:
        raise ValueError(f"star {t} is both the target and a comparison")
    wcs = frame_wcs(read_frame(reference).meta)
    if wcs is None:
        log.info("%s has no WCS: target and comparisons are returned as pixel positions",
                 reference)
        return (tuple(positions[t]), [tuple(positions[i]) for i in comps])
    world = wcs.pixel_to_world(positions[:, 0], positions[:, 1])
    return world[t], [world[i] for i in comps]


def _need_wcs(path: str, hint: str):
    wcs = frame_wcs(read_frame(path).meta)
    if wcs is None:
        raise ValueError(f"{path}: no WCS in the header ({hint})")
    return wcs


def pixels_to_world(files: Sequence[str], pixel_coordinates) -> list:
    """Sky positions of pixel positions, file by file.

    Parameters
    ----------
    files : list of str
        Frames with a WCS.
    pixel_coordinates : list
        One entry per file: an ``(x, y)`` pair or a list of pairs (0-based pixels).

    Returns
    -------
    list of astropy.coordinates.SkyCoord
        One entry per file (scalar for a pair, an array for a list of pairs).

    Raises
    ------
    ValueError
        A file without WCS, or not one entry per file.
    """
    pc = pixel_coordinates
    if pc is None or len(pc) != len(files):
        raise ValueError(
            f"px_to_world() needs pixel_coordinates with one (x, y) entry per "
            f"file ({len(files)} files)"
        )
    out = []
    for f, p in zip(files, pc):
        wcs = _need_wcs(f, "plate-solve it first; pixel positions cannot be converted to the sky")
        xy, single = xy_pairs(p, "pixel_coordinates entry")
        sky = wcs.pixel_to_world(xy[:, 0], xy[:, 1])
        out.append(sky[0] if single else sky)
    return out


def world_to_pixels(files: Sequence[str], world_coordinates) -> list:
    """Pixel positions of sky positions in every file.

    Parameters
    ----------
    files : list of str
        Frames with a WCS.
    world_coordinates : astropy.coordinates.SkyCoord or list of SkyCoord
        Sky positions.

    Returns
    -------
    list
        One entry per file: an ``(x, y)`` tuple (0-based) for a scalar SkyCoord, else a
        list of tuples.

    Raises
    ------
    ValueError
        A file without WCS, or no ``world_coordinates``.
    """
    wc = world_coordinates
    if wc is None:
        raise ValueError("world_to_px() needs world_coordinates= (a SkyCoord or a list of them)")
    single = isinstance(wc, SkyCoord) and wc.isscalar
    sky = wc if isinstance(wc, SkyCoord) else SkyCoord(list(wc))
    out = []
    for f in files:
        wcs = _need_wcs(f, "plate-solve it first, or use pixel positions with "
                           "phot_method='pixel'")
        x, y = wcs.world_to_pixel(sky)
        x, y = np.atleast_1d(x), np.atleast_1d(y)
        pairs = [(float(a), float(b)) for a, b in zip(x, y)]
        out.append(pairs[0] if single else pairs)
    return out


# ------------------------------------------------------------------------- tracking
def track_positions(
    files: Sequence,
    positions,
    reference=None,
    *,
    fwhm: float | None = None,
    n_stars: int = 40,
    bin_factor: int = 2,
) -> list[np.ndarray]:
    """Follow star positions from a reference frame through other frames of the field.

    Parameters
    ----------
    files : list of str
        Frames to follow the stars through.
    positions : (x, y) pair or array_like, shape (n, 2)
        0-based positions on the reference frame.
    reference : str, optional
        Reference frame path (default ``files[0]``).
    fwhm : float, optional
        FWHM in pixels for star detection (default: measured on the reference frame).
    n_stars : int
        Bright stars used to match each frame with the reference.
    bin_factor : int
        Stars are detected on frames block-averaged by this factor (faster), then
        re-centred at full resolution.

    Returns
    -------
    list of numpy.ndarray, shape (n, 2)
        Positions in each file (not yet re-centred: the photometry re-centres them).

    Notes
    -----
    For each frame a similarity transform (shift, rotation, scale) between its brightest
    stars and the reference's is found from star patterns
    (:func:`astrodart.alignment.matching.match_stars`); when too few stars match,
    the translation from phase correlation of the images is used (a
    :class:`PhotometryWarning` says so).
    """
    files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    xy0, _ = xy_pairs(positions, "positions")
    ref_path = str(reference) if reference is not None else files[0]
    ref = np.asarray(read_frame(ref_path).data, dtype=float)
    if fwhm is None:
        stars = _bright_stars(ref, 3.0, n_stars, 1)
        fwhm = fwhm_of_stars(ref, stars[:15]) if len(stars) else float("nan")
        fwhm = fwhm if np.isfinite(fwhm) else 3.0
    ref_xy = _bright_stars(ref, fwhm, n_stars, bin_factor)
    out = []
    for f in files:
        if f == ref_path:
            out.append(xy0.copy())
            continue
        data = np.asarray(read_frame(f).data, dtype=float)
        try:
            xy = _bright_stars(data, fwhm, n_stars, bin_factor)
            transform = match_stars(ref_xy, xy, ref.shape)[0]
        except (ValueError, AlignmentError) as exc:
            dx, dy, _ratio = fft_translation(ref, data, min_ratio=1.0)
            warn(f"{exc}; using the phase-correlation shift", PhotometryWarning,
                 item=f"{f} ({dx:.1f}, {dy:.1f}) px")
            transform = PixelTransform.translation(dx, dy)
        out.append(transform.apply(xy0))
    return out


def _bright_stars(data, fwhm: float, n: int, bin_factor: int) -> np.ndarray:
    """Positions ``(m, 2)`` of the ``n`` brightest stars (hot pixels dropped), detected on
    the image block-averaged by ``bin_factor`` (faster) and re-centred at full resolution."""
    k = int(bin_factor)
    if k <= 1:
        return positions_of(find_stars(data, fwhm, max_stars=n, reject_sharp=True))
    ny, nx = (data.shape[0] // k) * k, (data.shape[1] // k) * k
    with quiet(RuntimeWarning):  # all-NaN blocks stay NaN
        binned = np.nanmean(data[:ny, :nx].reshape(ny // k, k, nx // k, k), axis=(1, 3))
    xy = positions_of(find_stars(binned, max(fwhm / k, 1.0), max_stars=n, reject_sharp=True))
    return recentre(data, k * xy + (k - 1) / 2.0, fwhm, search_radius=float(k))[0]


def star_positions_kind(obj, what: str):
    """Whether star positions are pixel or sky positions, and the positions.

    Parameters
    ----------
    obj : (x, y) pair, list of pairs, SkyCoord or list of SkyCoord
        Positions as the user gave them.
    what : str
        Name of the argument, for the error message.

    Returns
    -------
    kind : {'pixel', 'sky'}
        What was given.
    positions : numpy.ndarray, shape (n, 2), or astropy.coordinates.SkyCoord
        Pixel positions as an array, or the sky positions as one (array) SkyCoord.

    Raises
    ------
    TypeError
        Anything else (the message names the argument, what it got and what is allowed).
    """
    if isinstance(obj, SkyCoord):
        return "sky", _icrs([obj])
    items = list(obj) if isinstance(obj, (list, tuple)) else None
    if items and all(isinstance(c, SkyCoord) for c in items):
        return "sky", _icrs(items)
    try:
        return "pixel", xy_pairs(obj, what)[0]
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} must be pixel positions (an (x, y) pair or a list of (x, y) pairs, "
            "0-based) or sky positions (an astropy SkyCoord or a list of SkyCoord); got "
            f"{type(obj).__name__} {_short(obj)} ({exc})"
        ) from None


def _icrs(coords) -> SkyCoord:
    """One ICRS SkyCoord array (n,) from SkyCoords (scalars or arrays, any frames)."""
    icrs = [c.icrs for c in coords]
    ra = np.concatenate([np.atleast_1d(c.ra.deg).ravel() for c in icrs])
    dec = np.concatenate([np.atleast_1d(c.dec.deg).ravel() for c in icrs])
    return SkyCoord(ra, dec, unit="deg", frame="icrs")


def _short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _sky_to_frames(per_filter, sky: SkyCoord) -> list[list[np.ndarray]]:
    """Pixel positions ``(n, 2)`` of sky positions in every frame, from each frame's WCS."""
    out = []
    for fl in per_filter:
        pos = []
        for f in fl:
            wcs = frame_wcs(read_frame(f).meta)
            if wcs is None:
                raise ValueError(
                    f"{f}: no celestial WCS in the header, so sky positions (SkyCoord) cannot "
                    "be converted to pixels; plate-solve the frames first "
                    "(astrodart.second_stage.astrometry) or give pixel positions, which "
                    "are tracked by star patterns"
                )
            x, y = wcs.world_to_pixel(sky)
            pos.append(np.column_stack([np.atleast_1d(x), np.atleast_1d(y)]).astype(float))
        out.append(pos)
    return out


def track_stars(files, target, comparisons, reference=None):
    """Pixel positions of a target and comparisons in every frame, in the ``'pixel'``
    layout of AstroDART's ``photometry``, from pixel or sky positions.

    Which kind was given is logged (``track_stars: got pixel positions ...`` or
    ``track_stars: got sky positions ...``, logger ``astrodart``, level INFO).

    - **Pixel positions** (on the reference frame) are followed from frame to frame by
      star patterns (:func:`track_positions`): no WCS needed.
    - **Sky positions** (:class:`~astropy.coordinates.SkyCoord`) are converted to pixels
      with each frame's own WCS; every frame must be plate-solved.

    Parameters
    ----------
    files : list of list of str (or a list of str for one filter)
        Frames per filter.
    target : (x, y) pair or SkyCoord
        Target position: 0-based pixels on the reference frame, or on the sky.
    comparisons : list of (x, y) pairs, SkyCoord or list of SkyCoord
        Comparison positions, of the same kind as ``target``.
    reference : str, optional
        Reference frame for pixel positions (default the first frame of the first filter).

    Returns
    -------
    target_coord : list
        ``target_coord[filter][file] = (x, y)``.
    comparison_coord : list
        ``comparison_coord[star][filter][file] = (x, y)``.

    Raises
    ------
    TypeError
        ``target`` or ``comparisons`` is neither pixel nor sky positions, or they are of
        different kinds.
    ValueError
        Sky positions and a frame without a celestial WCS (the message names the file).
    """
    per_filter = as_file_lists(files)
    kind, tpos = star_positions_kind(target, "target")
    if len(tpos) != 1:
        raise TypeError(f"target must be one position (an (x, y) pair or a scalar SkyCoord); "
                        f"got {len(tpos)} positions")
    none = comparisons is None or (
        isinstance(comparisons, (list, tuple, np.ndarray)) and len(comparisons) == 0)
    ckind, cpos = (kind, None) if none else star_positions_kind(comparisons, "comparisons")
    if ckind != kind:
        raise TypeError(f"target is given as {kind} positions but comparisons as {ckind} "
                        "positions: give both in pixels or both as SkyCoord")
    n_comp = 0 if cpos is None else len(cpos)
    if kind == "sky":
        log.info("track_stars: got sky positions (SkyCoord) for 1 target and %d comparisons: "
                 "converting them with each frame's WCS", n_comp)
        sky = tpos if cpos is None else _icrs([tpos, cpos])
        tracked = _sky_to_frames(per_filter, sky)
    else:
        ref = str(reference) if reference is not None else per_filter[0][0]
        log.info("track_stars: got pixel positions for 1 target and %d comparisons on %s: "
                 "tracking them by star patterns", n_comp, ref)
        allxy = tpos if cpos is None else np.vstack([tpos, cpos])
        tracked = [track_positions(fl, allxy, reference=ref) for fl in per_filter]
    target_coord = [[tuple(p[0]) for p in tr] for tr in tracked]
    comparison_coord = [
        [[tuple(p[k + 1]) for p in tr] for tr in tracked] for k in range(n_comp)
    ]
    return target_coord, comparison_coord
