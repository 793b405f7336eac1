"""Layer 2: the rejection algorithms of the stacking engine, on compact pieces of a stack.

Each function works on ``x`` of shape ``(nframes, m)`` - the values of ``m`` pixels - or
on those values sorted per pixel, and marks rejected values NaN (or narrows the kept
range of a sorted column). :func:`astrodart.combine.engine.combine_band` chooses which
to run; the settings are a :class:`astrodart.combine.methods.Rejection`.

References
----------
* IRAF ``imcombine`` help (``minmax`` rejection: ``nlow``/``nhigh`` scaled to the values
  left; ``sigclip``).
* Siril documentation, "Stacking: rejection" (median-centred sigma clipping iterated
  until no pixel changes).
* ``astropy.stats.sigma_clip`` (strict ``<``/``>`` bounds). Rejections here are cumulative
  (a rejected value is never re-admitted), as in IRAF, Siril and astropy's general path.
"""

from __future__ import annotations

import bottleneck as bn
import numpy as np

from astrodart.combine.methods import MAD_TO_STD, Rejection
from astrodart.combine.sorting import (
    _BLOCK_PIXELS,
    _median_mad_sorted,
    _sort_planes,
    _count_rows,
    _sorted_columns,
    _take,
)

__all__ = ["floored_sigma", "spread_floor"]


def _centre(x: np.ndarray, how: str) -> np.ndarray:
    return bn.nanmedian(x, axis=0) if how == "median" else bn.nanmean(x, axis=0)


def _spread(x: np.ndarray, how: str) -> np.ndarray:
    if how == "std":
        return bn.nanstd(x, axis=0)
    med = bn.nanmedian(x, axis=0)
    return MAD_TO_STD * bn.nanmedian(np.abs(x - med), axis=0)


def _reject_extrema(x: np.ndarray, nlow: int, nhigh: int) -> None:
    """Set to NaN the ``nlow`` lowest and ``nhigh`` highest values of each column of ``x``."""
    nframes = x.shape[0]
    n = (~np.isnan(x)).sum(axis=0)
    nl = np.floor(nlow * n / nframes + 0.001).astype(np.intp)
    nh = np.floor(nhigh * n / nframes + 0.001).astype(np.intp)
    order = np.argsort(x, axis=0, kind="stable")  # NaN sort last
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(nframes)[:, None], axis=0)
    drop = (rank < nl) | ((rank >= n - nh) & (rank < n))
    x[drop] = np.nan


def _sigma_clip(x: np.ndarray, rej: Rejection) -> None:
    """Iterative sigma clipping of the columns of ``x`` (N, m) with bottleneck statistics;
    rejected values -> NaN. Only columns that changed in the previous pass are recomputed."""
    active = np.arange(x.shape[1])
    for _ in range(rej.maxiters):
        xa = x[:, active]
        c = _centre(xa, rej.center)
        s = _spread(xa, rej.spread)
        with np.errstate(invalid="ignore"):
            out = (xa < c - rej.sigma_low * s) | (xa > c + rej.sigma_high * s)
        changed = out.any(axis=0)
        if not changed.any():
            return
        xa[out] = np.nan
        x[:, active] = xa
        active = active[changed]


def _clip_sorted(
    srt: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    rej: Rejection,
    first_pass: int = 0,
    floor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Median/MAD sigma clipping of sorted columns ``srt`` (N, m; missing values +inf).

    Clipping at ``median -/+ k * s`` removes values from the ends of a sorted column, so
    the kept values are always a contiguous range ``[lo, hi)`` of it (updated in place):
    the median is read at the middle of the range and the MAD is the middle of the
    sorted deviations. ``first_pass`` passes were already made (every column given
    changed in the last of them). ``floor`` (m,) is the spread floor of each column
    (see :func:`floored_sigma`). Returns (median, MAD) of the kept values.
    """
    med = np.full(srt.shape[1], np.nan, dtype=srt.dtype)
    mad = np.full(srt.shape[1], np.nan, dtype=srt.dtype)
    nframes = srt.shape[0]
    rows = np.arange(nframes)[:, None]
    inf = srt.dtype.type(np.inf)
    active = np.flatnonzero(hi > lo)
    s_a = None
    for it in range(first_pass, rej.maxiters + 1):  # the last pass only measures
        if active.size == 0:
            break
        # compact copy of the active columns (from the previous copy once it exists)
        s_a = np.take(srt if s_a is None else s_a, active if s_a is None else keep, axis=1)
        lo_a, hi_a = lo[active], hi[active]
        k = hi_a - lo_a
        med_a = _take(s_a, lo_a + (k - 1) // 2) + _take(s_a, lo_a + k // 2)
        med_a *= 0.5
        dev = np.subtract(s_a, med_a)
        np.abs(dev, out=dev)
        np.copyto(dev, inf, where=(rows < lo_a) | (rows >= hi_a))
        # Deviations of a sorted column from its median, with +inf outside the kept
        # range, are bitonic: the bitonic merger sorts them.
        dev = _sorted_columns(dev, bitonic=True)
        mad_a = _take(dev, (k - 1) // 2) + _take(dev, k // 2)
        mad_a *= 0.5
        med[active], mad[active] = med_a, mad_a
        if it == rej.maxiters:
            break
        sig = floored_sigma(mad_a, None if floor is None else floor[active])
        new_lo = np.maximum(lo_a, _count_rows(s_a < med_a - rej.sigma_low * sig))
        new_hi = np.minimum(hi_a, _count_rows(s_a <= med_a + rej.sigma_high * sig))
        lo[active], hi[active] = new_lo, new_hi
        keep = np.flatnonzero(((new_lo != lo_a) | (new_hi != hi_a)) & (new_hi > new_lo))
        active = active[keep]
    return med, mad


def _keep_range(x: np.ndarray, srt: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Set to NaN the values of ``x`` (N, m, any order) outside the sorted range [lo, hi)."""
    nframes = srt.shape[0]
    kept = hi > lo
    vmin = np.where(kept, _take(srt, np.minimum(lo, nframes - 1)), np.inf)
    vmax = np.where(kept, _take(srt, np.clip(hi - 1, 0, nframes - 1)), -np.inf)
    with np.errstate(invalid="ignore"):
        np.copyto(x, np.nan, where=(x < vmin) | (x > vmax))


def floored_sigma(mad: np.ndarray, floor: np.ndarray | None) -> np.ndarray:
    """Clipping spread ``1.4826 * MAD``, at least ``floor``; +inf (no clipping) where 0.

    Parameters
    ----------
    mad : numpy.ndarray
        Median absolute deviations, any shape.
    floor : numpy.ndarray or None
        Lower bound of the spread, same shape (None = no floor, and no special case
        for a zero spread).

    Returns
    -------
    numpy.ndarray
        The spread, same shape and dtype as ``mad``.
    """
    sig = mad * MAD_TO_STD
    if floor is None:
        return sig
    sig = np.maximum(sig, floor)
    sig[sig == 0] = np.inf
    return sig


def _block_median(a: np.ndarray, box: int) -> np.ndarray:
    """Median of each ``box`` x ``box`` block, repeated over the block (edge blocks
    padded by reflection); ``(ny, nx)`` float32."""
    ny, nx = a.shape
    py, px = (-ny) % box, (-nx) % box
    p = np.pad(np.asarray(a, np.float32), ((0, py), (0, px)), mode="reflect") if (py or px) else a
    by, bx = p.shape[0] // box, p.shape[1] // box
    blocks = p.reshape(by, box, bx, box).transpose(0, 2, 1, 3).reshape(by, bx, box * box)
    med = bn.median(blocks, axis=2)
    return np.repeat(np.repeat(med, box, axis=0), box, axis=1)[:ny, :nx].astype(np.float32)


def spread_floor(band: np.ndarray, box: int) -> np.ndarray:
    """Lower bound of the sigma-clipping spread of each pixel of a stack.

    The spread ``1.4826 * MAD`` of each pixel's values (missing values ignored, 0 where
    none is left), then the median of it over ``box`` x ``box`` blocks of pixels: the
    MAD of a few values scatters widely, the noise of a detector varies slowly.

    Parameters
    ----------
    band : numpy.ndarray
        ``(nframes, ny, nx)`` floating-point stack; NaN = missing value. Not modified.
    box : int
        Block size in pixels (edge blocks are padded by reflection).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 floor, in the unit of the data.
    """
    nf, ny, nx = band.shape
    spread = np.empty((ny, nx), np.float32)
    brows = max(1, _BLOCK_PIXELS // nx)
    scratch = list(np.empty((nf, brows, nx), band.dtype))
    spare = np.empty((brows, nx), band.dtype)
    for a in range(0, ny, brows):
        b = min(ny, a + brows)
        blk = band[:, a:b]
        planes = _sort_planes(list(blk), [p[: b - a] for p in scratch], spare[: b - a])
        s = _median_mad_sorted(planes)[1] * MAD_TO_STD
        bad = ~np.isfinite(s)  # missing values reach every sorted plane of their pixel
        if bad.any():
            sub = blk[:, bad]
            sub[~np.isfinite(sub)] = np.nan
            med = bn.nanmedian(sub, axis=0)
            s[bad] = MAD_TO_STD * bn.nanmedian(np.abs(sub - med), axis=0)
        spread[a:b] = s
    return _block_median(np.nan_to_num(spread), box)
