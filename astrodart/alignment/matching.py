"""Layer 2: the one star matcher -- which star of one list is which star of another.

Every job that pairs the stars of two lists goes through this module:

* :func:`crossmatch` -- one-to-one nearest-neighbour pairs of two point lists already on
  one pixel grid (closest pairs first);
* :func:`match_stars` -- the transform between two star lists of the same field: the
  most common offset between their brightest stars (fast path for a night's drift),
  else star-pattern matching by similar triangles (astroalign; Beroiz, Cabral &
  Sanchez 2020, Astronomy and Computing 32, 100384), tried on a mirrored copy too; each
  answer refined by a least-squares similarity fit on every cross-matched star;
* :func:`pair_stars` -- both: the pairs of the same stars in two frames of a field,
  whatever their shift, rotation or flip.

Stars in a catalogue are paired through a WCS by
:func:`astrodart.alignment.wcs.pair_with_catalog`, which uses :func:`crossmatch`.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from astrodart.alignment.transforms import AlignmentError, PixelTransform, _clipped_rms, fit_similarity

__all__ = [
    "crossmatch",
    "match_stars",
    "pair_stars",
]


def crossmatch(xy_a, xy_b, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest-neighbour match of two point lists.

    Parameters
    ----------
    xy_a, xy_b : (N, 2) and (M, 2) array_like
        Point coordinates, same pixel grid.
    radius : float
        Largest accepted distance, pixels.

    Returns
    -------
    ia, ib : ndarray of int
        Indices of matched pairs (each point used at most once, closest pairs first).
    dist : ndarray of float
        Pair distances, pixels.
    """
    xy_a, xy_b = np.asarray(xy_a, float).reshape(-1, 2), np.asarray(xy_b, float).reshape(-1, 2)
    if len(xy_a) == 0 or len(xy_b) == 0:
        e = np.zeros(0, int)
        return e, e, np.zeros(0)
    d, j = cKDTree(xy_b).query(xy_a, distance_upper_bound=radius)
    ok = np.isfinite(d)
    i, j, d = np.nonzero(ok)[0], j[ok], d[ok]
    order = np.argsort(d)
    used_b, ia, ib, dd = set(), [], [], []
    for k in order:
        if j[k] not in used_b:
            used_b.add(j[k])
            ia.append(i[k]), ib.append(j[k]), dd.append(d[k])
    return np.array(ia, int), np.array(ib, int), np.array(dd)


def _refine(transform: PixelTransform, src_xy, ref_xy, radius: float, min_matches: int,
            pre: PixelTransform) -> tuple[PixelTransform, float, int]:
    """Cross-match all stars under ``transform`` and refit a similarity on the pairs
    (in the ``pre``-mapped source coordinates, so a mirror stays a mirror)."""
    src_pre = pre.apply(src_xy)
    for _ in range(3):
        ia, ib, d = crossmatch(transform.apply(src_xy), ref_xy, radius)
        if len(ia) < min_matches:
            raise AlignmentError(f"only {len(ia)} stars match within {radius} px after the "
                                 f"pattern match (need {min_matches})")
        # faint stars and blends centroid poorly: clip outlying pairs before refitting
        keep = d <= max(0.5, 3.0 * np.median(d))
        if keep.sum() < 3:
            keep[:] = True
        transform = fit_similarity(src_pre[ia[keep]], ref_xy[ib[keep]]) @ pre
    ia, ib, d = crossmatch(transform.apply(src_xy), ref_xy, radius)
    if len(ia) < min_matches:
        raise AlignmentError(f"only {len(ia)} stars match after refinement (need {min_matches})")
    return transform, _clipped_rms(d), len(ia)


def _offset_vote(src_xy, ref_xy, radius: float) -> tuple[float, float] | None:
    """Most common offset ``ref - src`` between two star lists, or None when no offset is
    shared by at least 4 pairs.

    Every pair votes for its offset in a cell ``radius`` wide; a true offset may straddle
    cell borders, so each occupied cell is scored with its 8 neighbours; the offset is
    the median of the votes in the best cell and its neighbours.
    """
    if len(src_xy) < 4 or len(ref_xy) < 4:
        return None
    d = (ref_xy[None, :, :] - src_xy[:, None, :]).reshape(-1, 2)
    idx = np.floor(d / radius).astype(np.int64)
    idx -= idx.min(0) - 1  # >= 1, so that a neighbour code never wraps to another row
    width = int(idx[:, 1].max()) + 2
    keys, counts = np.unique(idx[:, 0] * width + idx[:, 1], return_counts=True)
    score = np.zeros(len(keys), np.int64)
    for step in (-width - 1, -width, -width + 1, -1, 0, 1, width - 1, width, width + 1):
        pos = np.minimum(np.searchsorted(keys, keys + step), len(keys) - 1)
        score += np.where(keys[pos] == keys + step, counts[pos], 0)
    if score.max() < 4:
        return None
    best = np.array(divmod(int(keys[np.argmax(score)]), width))
    sel = (np.abs(idx - best) <= 1).all(1)
    return tuple(float(v) for v in np.median(d[sel], axis=0))


def _pattern_match(src_xy, ref_xy, pre: PixelTransform, max_control_points: int,
                   radius: float, min_matches: int) -> tuple[PixelTransform, float, int]:
    """astroalign's triangle match of the ``pre``-mapped source list, then :func:`_refine`."""
    import astroalign

    pts = pre.apply(src_xy)
    try:
        t, _pairs = astroalign.find_transform(pts[:max_control_points],
                                              ref_xy[:max_control_points])
    except (astroalign.MaxIterError, ValueError, TypeError, IndexError) as exc:
        raise AlignmentError(f"astroalign found no match ({type(exc).__name__}: "
                             f"{exc})") from None
    return _refine(PixelTransform(np.asarray(t.params)) @ pre, src_xy, ref_xy, radius,
                   min_matches, pre)


def _shift_match(src_xy, ref_xy, max_control_points: int, radius: float, min_matches: int):
    """The most common offset between the brightest stars, refined; None if none."""
    shift = _offset_vote(src_xy[:max_control_points], ref_xy[:max_control_points], radius)
    if shift is None:
        return None
    try:
        return _refine(PixelTransform.translation(*shift), src_xy, ref_xy, radius, min_matches,
                       PixelTransform.identity())
    except AlignmentError:
        return None


def _better(found, best) -> bool:
    """More matched stars, then a smaller residual."""
    return best is None or (found[2], -found[1]) > (best[2], -best[1])


def match_stars(src_xy, ref_xy, src_shape: tuple[int, int] | None = None, *, allow_mirror: bool = True,
                max_control_points: int = 50, match_radius: float = 3.0,
                min_matches: int = 6) -> tuple[PixelTransform, float, int]:
    """Star-pattern match of two star lists (astroalign triangles + similarity refit).

    First, a fast path for the usual drift of a night: the most common offset between
    the brightest stars of both lists; if, after refinement, it matches at least half
    the stars (up to 25), it is the answer. Otherwise astroalign (Beroiz et al. 2020)
    matches asterisms of the ``max_control_points`` brightest stars by their invariant
    side ratios and fits a similarity by RANSAC. Either result is refined by
    cross-matching every star within ``match_radius`` and refitting a similarity by
    least squares (iterated, with outlying pairs clipped). Because the triangle
    invariants are mirror-symmetric but a similarity is not, a left-right flipped
    source list is also tried when the direct match fails or matches fewer than half
    the stars; the best match wins.

    Parameters
    ----------
    src_xy, ref_xy : (N, 2), (M, 2) array_like
        Star centroids (0-based ``x, y``), brightest first.
    src_shape : (int, int), optional
        Shape ``(ny, nx)`` of the source frame: the mirror is ``x -> nx - 1 - x`` (any
        width gives the same final transform, as the similarity refit absorbs the
        shift; default: the largest ``x`` of the source list).
    allow_mirror : bool
        Try the mirrored source list too.
    max_control_points : int
        Brightest stars used for the triangle match.
    match_radius : float
        Cross-match radius for refinement and verification, reference pixels.
    min_matches : int
        Minimum number of cross-matched stars for success.

    Returns
    -------
    transform : PixelTransform
        Source pixels -> reference pixels (mirrored if the flip matched better).
    residual : float
        RMS distance of cross-matched stars after the fit, reference pixels.
    n_matches : int
        Number of cross-matched stars.

    Raises
    ------
    AlignmentError
        Fewer than 3 stars in either list, or no acceptable match.

    References
    ----------
    Beroiz, M., Cabral, J. B. & Sanchez, B. 2020, Astronomy and Computing 32, 100384
    (astroalign). Umeyama, S. 1991, IEEE TPAMI 13, 376 (least-squares similarity).
    """
    src_xy = np.asarray(src_xy, float).reshape(-1, 2)
    ref_xy = np.asarray(ref_xy, float).reshape(-1, 2)
    if len(src_xy) < 3 or len(ref_xy) < 3:
        raise AlignmentError(f"too few stars for pattern matching ({len(src_xy)} in frame, "
                             f"{len(ref_xy)} in reference; need 3)")
    min_matches = max(3, min(min_matches, len(src_xy), len(ref_xy)))
    n_good = 0.5 * min(len(src_xy), len(ref_xy), 50)
    # fast path for the common case (a night's drift: shift plus a small rotation): the
    # most common offset between bright stars, verified and refined like a triangle match
    best = _shift_match(src_xy, ref_xy, max_control_points, match_radius, min_matches)
    if best is not None and best[2] >= n_good:
        return best
    width = src_shape[1] if src_shape is not None else int(np.ceil(src_xy[:, 0].max())) + 1
    tries = [("direct", PixelTransform.identity())]
    if allow_mirror:
        tries.append(("mirrored", PixelTransform.mirror_x(width)))
    errors = []
    for label, pre in tries:
        if label == "mirrored" and best is not None and best[2] >= n_good:
            break  # the direct match is good: no need for the flip
        try:
            found = _pattern_match(src_xy, ref_xy, pre, max_control_points, match_radius,
                                   min_matches)
        except AlignmentError as exc:
            errors.append(f"{label}: {exc}")
            continue
        if _better(found, best):
            best = found
    if best is None:
        raise AlignmentError("; ".join(errors))
    return best


def pair_stars(src_xy, ref_xy, radius: float = 3.0, *, min_matches: int = 3,
               **match_options) -> tuple[np.ndarray, np.ndarray, PixelTransform | None]:
    """Pairs of the same stars in two star lists of one field, whatever the transform.

    The lists are matched by :func:`match_stars` (shift, rotation, scale, mirror), then
    cross-matched one-to-one under the transform found (:func:`crossmatch`).

    Parameters
    ----------
    src_xy, ref_xy : (N, 2), (M, 2) array_like
        Star positions (0-based ``x, y``) on two frames, brightest first.
    radius : float
        Pairing radius after the transform, pixels of ``ref_xy``.
    min_matches : int
        Fewest pairs accepted as a match.
    **match_options
        Further options of :func:`match_stars` (``allow_mirror``, ``max_control_points``,
        ``src_shape``).

    Returns
    -------
    i_src, i_ref : (K,) ndarray of int
        Indices of paired stars in ``src_xy`` and ``ref_xy`` (closest pairs first); empty
        when the lists do not match.
    transform : PixelTransform or None
        ``src`` pixels -> ``ref`` pixels; None when the lists do not match.
    """
    src_xy = np.asarray(src_xy, float).reshape(-1, 2)
    ref_xy = np.asarray(ref_xy, float).reshape(-1, 2)
    try:
        transform, _resid, _n = match_stars(src_xy, ref_xy, match_radius=radius,
                                            min_matches=min_matches, **match_options)
    except AlignmentError:
        empty = np.zeros(0, int)
        return empty, empty, None
    ia, ib, _d = crossmatch(transform.apply(src_xy), ref_xy, radius)
    return ia, ib, transform
