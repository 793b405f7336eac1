"""Layer 2: pixel-by-pixel combination of a stack of frames, with rejection.

The engine works on one *band* of the stack at a time: a 3-D array of shape
``(nframes, ny, nx)`` (``ny`` may be a few rows of the full frames) in which NaN marks
a missing value (masked, NaN or infinite input). :mod:`astrodart.combine.files` reads the
band from the files and calls :func:`combine_band`; no file I/O or printing happens here.

Why our own numerics instead of :func:`ccdproc.combine`
--------------------------------------------------------
``ccdproc.combine`` is the reference we test against, but (ccdproc 2.5) it re-reads every
file for every memory chunk, works in float64, median-combines with
``bottleneck.nanmedian`` along the frame axis (about 1.3 s for 20 frames of 2048x2048
here) and its default mean/std sigma clipping cannot reject a single outlier among
five frames (the largest possible z-score of one value among ``n`` is
``(n - 1) / sqrt(n)``, 1.79 for ``n = 5``). This module instead:

* sorts the values of each pixel with a Batcher odd-even merge sorting network
  evaluated plane by plane with ``numpy.minimum``/``numpy.maximum`` on cache-sized
  blocks (about 0.2 s for the same stack on an idle core: every comparator is one
  vectorised pass, ~2 x 103 ufunc calls per block for 20 frames, whatever the data);
* takes the median from the sorted planes and the median absolute deviation (MAD)
  from a pruned bitonic selection (the absolute deviations of sorted values from their
  median form a bitonic sequence, so Batcher's half-cleaner finds the middle one in
  ~25 passes);
* settles every pixel whose first sigma-clipping pass rejects nothing (about 80% of
  the pixels of 20 Gaussian frames at 3 sigma) from those planes. The others keep
  iterating in the sorted domain, on compact copies of just those pixels: clipping at
  ``median -/+ k s`` only ever removes values from the ends of a sorted column, so the
  kept values stay a contiguous range, the new median is read in its middle and the
  deviations (bitonic again) are sorted by Batcher's bitonic merger (~40 comparators
  for 20 frames instead of 103). Pixels with missing values and the modes without a
  fast path (extrema clipping, mean/std clipping, > 64 frames) go to a general
  NaN-aware bottleneck path on compact pieces of bounded size.

Conventions (shared with ccdproc so results can be compared to <= 1e-5)
-----------------------------------------------------------------------
* ``median``: uncertainty ``1.4826 * MAD / sqrt(n)`` (ccdproc's ``sigma_func``), ``n``
  values kept.
* ``average`` (optionally weighted): uncertainty ``sqrt(sum w_i^2 (x_i - m)^2) / sum w_i``,
  which for equal weights is ccdproc's ``std(ddof=0) / sqrt(n)``.
* ``sum`` (optionally weighted): the sum of the kept values (ccdproc's "pure sum"; a
  rejected value is missing from it, see ``nrejected``) with uncertainty
  ``average uncertainty * sum w_i``, i.e. ``std * sqrt(n)`` for equal weights.
* A pixel with no value left is NaN with NaN uncertainty; a pixel with one value left
  has NaN uncertainty (no scatter to measure).

References
----------
* K. E. Batcher, "Sorting networks and their applications", AFIPS 1968 (odd-even
  merge sort and bitonic merging).
* IRAF ``imcombine`` help (rejection algorithms ``minmax``, ``sigclip``, thresholds applied
  to unscaled input values; ``nlow``/``nhigh`` scaled to the values left).
* Siril documentation, "Stacking: rejection" (median-centred sigma clipping iterated
  until no pixel changes).
* ``astropy.stats.sigma_clip`` (strict ``<``/``>`` bounds; ``mad_std`` =
  1.482602218505602 x MAD). Rejections here are cumulative (a rejected value is never
  re-admitted), as in IRAF, Siril and astropy's general path; astropy's fast C path
  re-applies only the final bounds to all values, which can re-admit one, so with
  ``maxiters > 1`` it may keep a value this module rejects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import bottleneck as bn
import numpy as np

__all__ = [
    "CLIPPING_METHODS",
    "MAD_TO_STD",
    "METHODS",
    "CombineResult",
    "Rejection",
    "batcher_comparators",
    "combine_band",
]

#: Combination methods of :func:`combine_band` (weights apply to 'average' and 'sum').
METHODS = ("median", "average", "sum")
#: Rejection algorithms of :class:`Rejection`, applied in this order when combined.
CLIPPING_METHODS = ("minmax", "extrema_clipping", "sigclip")
#: Scale from the median absolute deviation to the standard deviation of a Gaussian
#: (1 / Phi^-1(3/4)), as in astropy's ``mad_std`` and ccdproc's ``sigma_func``.
MAD_TO_STD = 1.482602218505602

_CENTERS = ("median", "mean")
_SPREADS = ("mad_std", "std")
#: Above this many frames the sorting network costs more than bottleneck's selection.
_FAST_MAX_FRAMES = 64
#: Pixels per block of the sorting network (20 planes of 16384 float32 fit in L2 cache).
_BLOCK_PIXELS = 16384


@dataclass(frozen=True)
class Rejection:
    """Which values of each pixel's stack to reject before combining.

    Parameters
    ----------
    minmax : bool
        Reject values below ``min_value`` or above ``max_value`` (IRAF ``lthreshold``/
        ``hthreshold``, ccdproc ``minmax_clip``). Applied first, to the *unscaled* values.
    min_value, max_value : float or None
        Limits of ``minmax`` in the unit of the data; None = no limit on that side
        (at least one is required when ``minmax`` is True).
    extrema : bool
        Reject the ``nlow`` lowest and ``nhigh`` highest values of each pixel (IRAF
        ``minmax`` rejection, ccdproc ``clip_extrema``). When a pixel has only ``n``
        of ``N`` values left (masked/NaN/minmax), IRAF's rule is used:
        ``int(nlow * n / N + 0.001)`` lowest and likewise highest are dropped.
    nlow, nhigh : int
        Numbers for ``extrema``.
    sigclip : bool
        Iterative sigma clipping: reject ``x < c - sigma_low * s`` or ``x > c + sigma_high * s``
        with ``c`` the centre and ``s`` the spread of the values still kept, repeated
        until nothing changes or ``maxiters`` passes (rejections accumulate, as in
        ``astropy.stats.sigma_clip``).
    sigma_low, sigma_high : float
        Thresholds in units of the spread (positive).
    center : {'median', 'mean'}
        Centre ``c``. 'median' is robust; 'mean' reproduces ccdproc's default.
    spread : {'mad_std', 'std'}
        ``s``: ``1.4826 * median(|x - median(x)|)`` (robust) or the standard deviation
        about the mean with ``ddof=0`` (ccdproc's default).
    maxiters : int
        Cap on the number of clipping passes (ccdproc does exactly one).

    Raises
    ------
    ValueError
        Unknown ``center``/``spread`` names, negative counts or thresholds, or ``minmax``
        without any limit.
    """

    minmax: bool = False
    min_value: float | None = None
    max_value: float | None = None
    extrema: bool = False
    nlow: int = 1
    nhigh: int = 1
    sigclip: bool = False
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    center: str = "median"
    spread: str = "mad_std"
    maxiters: int = 10

    def __post_init__(self):
        if self.center not in _CENTERS:
            raise ValueError(
                f"sigma-clipping center {self.center!r} unknown; use one of {_CENTERS}"
            )
        if self.spread not in _SPREADS:
            raise ValueError(
                f"sigma-clipping spread {self.spread!r} unknown; use one of {_SPREADS}"
            )
        if self.minmax and self.min_value is None and self.max_value is None:
            raise ValueError("minmax clipping needs min_value and/or max_value")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError(
                f"minmax limits reversed: min_value={self.min_value} > max_value={self.max_value}"
            )
        for name in ("nlow", "nhigh", "maxiters"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")
        if self.maxiters < 1:
            raise ValueError("maxiters must be >= 1")
        for name in ("sigma_low", "sigma_high"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a positive number of sigma")

    @property
    def names(self) -> tuple[str, ...]:
        """The active algorithms, in the order they are applied."""
        flags = (self.minmax, self.extrema, self.sigclip)
        return tuple(n for n, f in zip(CLIPPING_METHODS, flags) if f)


@dataclass
class CombineResult:
    """Output of :func:`combine_band`; every array has the shape ``(ny, nx)`` of the band.

    Attributes
    ----------
    data : numpy.ndarray
        Combined values (dtype of the band), NaN where no value was left.
    uncertainty : numpy.ndarray
        Standard error of ``data`` (same unit and dtype), NaN where fewer than 2 values
        were left.
    nrejected : numpy.ndarray
        int16 (int32 beyond 32767 frames): values rejected by the clipping algorithms
        (missing inputs - NaN or masked - are not counted).
    ncombined : numpy.ndarray
        Same integer dtype: values that entered the combination.
    """

    data: np.ndarray
    uncertainty: np.ndarray
    nrejected: np.ndarray
    ncombined: np.ndarray


@cache
def batcher_comparators(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort for ``n`` inputs.

    The network for the next power of two is generated and comparators touching an
    index ``>= n`` are dropped (those inputs act as +infinity, so the comparators would
    be no-ops). Applying ``(min, max)`` to each pair in order sorts any ``n`` values.
    103 comparators for ``n = 20``.
    """
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


@cache
def _bitonic_comparators(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators of Batcher's bitonic merger, which sorts a *bitonic* sequence of ``n``
    values (padded with +inf to a power of two; comparators with the padding dropped)."""
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    h = size // 2
    while h >= 1:
        for start in range(0, size, 2 * h):
            pairs += [(i, i + h) for i in range(start, start + h) if i + h < n]
        h //= 2
    return tuple(pairs)


def _sort_planes(src: list, scratch: list, spare: np.ndarray, pairs=None) -> list:
    """Sort value-wise the planes ``src`` (list of equal-shape arrays, left untouched) using
    the buffers ``scratch`` (same length) and ``spare``; returns the list of buffers holding
    the sorted planes, lowest first. A NaN reaches every output plane of its pixel.

    Each comparator writes ``min`` into the spare buffer and ``max`` in place, then swaps
    buffer references, so no plane is ever copied; an input is read from ``src`` the first
    time a comparator touches it (saving one copy pass per plane).
    """
    planes = [None] * len(src)
    for i, j in pairs or batcher_comparators(len(src)):
        a = src[i] if planes[i] is None else planes[i]
        b = src[j] if planes[j] is None else planes[j]
        np.minimum(a, b, out=spare)
        if planes[j] is None:
            planes[j] = scratch[j]
        np.maximum(a, b, out=planes[j])
        if planes[i] is None:
            planes[i], spare = spare, scratch[i]
        else:
            planes[i], spare = spare, planes[i]
    for j, p in enumerate(planes):  # inputs no comparator touched
        if p is None:
            planes[j] = scratch[j]
            np.copyto(planes[j], src[j])
    return planes


def _bitonic_select(seq: list, ks: Sequence[int]) -> dict:
    """Order statistics ``ks`` (0-based) of a bitonic sequence of planes, by Batcher's
    half-cleaner recursion. ``seq`` has a power-of-two length; ``None`` stands for +inf."""
    if len(seq) == 1:
        return {ks[0]: seq[0]}
    h = len(seq) // 2
    lo_ks = [k for k in ks if k < h]
    hi_ks = [k - h for k in ks if k >= h]
    lo, hi = [], []
    for a, b in zip(seq[:h], seq[h:]):
        if a is None or b is None:
            lo.append(b if a is None else a)
            hi.append(None)
        else:
            lo.append(np.minimum(a, b) if lo_ks else None)
            hi.append(np.maximum(a, b) if hi_ks else None)
    out = {}
    if lo_ks:
        out.update(_bitonic_select(lo, lo_ks))
    if hi_ks:
        out.update({k + h: v for k, v in _bitonic_select(hi, hi_ks).items()})
    return out


def _median_mad_sorted(planes: list) -> tuple[np.ndarray, np.ndarray]:
    """Median and median absolute deviation of sorted planes (no missing values)."""
    n = len(planes)
    med = planes[(n - 1) // 2] + planes[n // 2]
    med *= 0.5
    # |x - median| of sorted values decreases then increases: a bitonic sequence, whose
    # two halves need no abs().
    dev = [np.subtract(med, p) for p in planes[: (n + 1) // 2]]
    dev += [np.subtract(p, med) for p in planes[(n + 1) // 2 :]]
    dev += [None] * ((1 << max(0, (n - 1).bit_length())) - n)
    ks = sorted({(n - 1) // 2, n // 2})
    sel = _bitonic_select(dev, ks)
    mad = sel[ks[0]] + sel[ks[-1]]
    mad *= 0.5
    return med, mad


def _weighted_stats(
    x: np.ndarray, w: np.ndarray | None, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Average or sum of the non-NaN values of ``x`` (N, m) and its standard error, with
    float64 accumulation; ``w`` are per-frame weights (None = equal)."""
    valid = ~np.isnan(x)
    wv = valid.astype(np.float64) if w is None else valid * w[:, None].astype(np.float64)
    sw = wv.sum(axis=0)
    xs = np.where(valid, x, 0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (wv * xs).sum(axis=0) / sw
        var = (wv * wv * (xs - mean) ** 2).sum(axis=0)
        err = np.sqrt(var) / sw
    n = valid.sum(axis=0)
    err[n < 2] = np.nan
    if method == "sum":
        return np.where(n > 0, mean * sw, np.nan), err * sw
    return mean, err


def _dense_stats(planes: list, w: np.ndarray | None, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_weighted_stats` for planes without missing values, plane by plane
    (float64 accumulators of one plane; no stack-sized temporaries)."""
    w = np.ones(len(planes)) if w is None else w
    acc = np.zeros(planes[0].shape, dtype=np.float64)
    for p, wi in zip(planes, w):
        acc += p if wi == 1.0 else wi * p.astype(np.float64)
    sw = float(w.sum())
    mean = acc / sw
    var = np.zeros_like(acc)
    tmp = np.empty_like(acc)
    for p, wi in zip(planes, w):
        np.subtract(p, mean, out=tmp)
        tmp *= tmp
        var += tmp if wi == 1.0 else (wi * wi) * tmp
    err = np.sqrt(var) / sw
    if method == "sum":
        return mean * sw, err * sw
    return mean, err


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


def _sorted_columns(x: np.ndarray, bitonic: bool = False) -> np.ndarray:
    """Column-wise ascending sort of a 2-D array (N, m) with a sorting network; with
    ``bitonic`` every column must be bitonic and the 3x smaller bitonic merger is used."""
    pairs = _bitonic_comparators(x.shape[0]) if bitonic else None
    planes = _sort_planes(list(x), list(np.empty_like(x)), np.empty(x.shape[1], x.dtype), pairs)
    return np.stack(planes)


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(a, idx[None, :], axis=0)[0]


def _clip_sorted(
    srt: np.ndarray, lo: np.ndarray, hi: np.ndarray, rej: Rejection, first_pass: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Median/MAD sigma clipping of sorted columns ``srt`` (N, m; missing values +inf).

    Clipping at ``median -/+ k * s`` removes values from the ends of a sorted column, so
    the kept values are always a contiguous range ``[lo, hi)`` of it (updated in place):
    the median is read at the middle of the range and the MAD is the middle of the
    sorted deviations. ``first_pass`` passes were already made (every column given
    changed in the last of them). Returns (median, MAD) of the kept values.
    """
    nframes, m = srt.shape
    med = np.full(m, np.nan, dtype=srt.dtype)
    mad = np.full(m, np.nan, dtype=srt.dtype)
    rows = np.arange(nframes)[:, None]
    active = np.nonzero(hi > lo)[0]
    for it in range(first_pass, rej.maxiters + 1):  # the last pass only measures
        if active.size == 0:
            break
        if active.size == m:
            s_a, lo_a, hi_a = srt, lo.copy(), hi.copy()
        else:
            s_a, lo_a, hi_a = srt[:, active], lo[active], hi[active]
        k = hi_a - lo_a
        med_a = _take(s_a, lo_a + (k - 1) // 2) + _take(s_a, lo_a + k // 2)
        med_a *= 0.5
        dev = np.abs(s_a - med_a)
        dev[(rows < lo_a) | (rows >= hi_a)] = np.inf
        # Deviations of a sorted column from its median, with +inf outside the kept
        # range, are bitonic: the bitonic merger sorts them.
        dev = _sorted_columns(dev, bitonic=True)
        mad_a = _take(dev, (k - 1) // 2) + _take(dev, k // 2)
        mad_a *= 0.5
        med[active], mad[active] = med_a, mad_a
        if it == rej.maxiters:
            break
        sig = mad_a * MAD_TO_STD
        new_lo = np.maximum(lo_a, (s_a < med_a - rej.sigma_low * sig).sum(axis=0))
        new_hi = np.minimum(hi_a, (s_a <= med_a + rej.sigma_high * sig).sum(axis=0))
        changed = (new_lo != lo_a) | (new_hi != hi_a)
        lo[active], hi[active] = new_lo, new_hi
        active = active[changed & (new_hi > new_lo)]
    return med, mad


def _keep_range(x: np.ndarray, srt: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Set to NaN the values of ``x`` (N, m, any order) outside the sorted range [lo, hi)."""
    nframes = srt.shape[0]
    kept = hi > lo
    vmin = np.where(kept, _take(srt, np.minimum(lo, nframes - 1)), np.inf)
    vmax = np.where(kept, _take(srt, np.clip(hi - 1, 0, nframes - 1)), -np.inf)
    with np.errstate(invalid="ignore"):
        x[(x < vmin) | (x > vmax)] = np.nan


def _general(x: np.ndarray, method: str, weights, rej: Rejection, ninvalid=None):
    """Reject and combine the columns of the compact stack ``x`` (N, m), modified in place.

    Returns data, uncertainty, nrejected, ncombined (1-D, length m)."""
    nframes = x.shape[0]
    bad = ~np.isfinite(x)
    x[bad] = np.nan
    if ninvalid is None:
        ninvalid = bad.sum(axis=0)
    if rej.extrema:
        _reject_extrema(x, rej.nlow, rej.nhigh)
    stats = None
    if rej.sigclip:
        if (rej.center, rej.spread) == ("median", "mad_std"):
            srt = _sorted_columns(np.where(np.isnan(x), np.array(np.inf, x.dtype), x))
            lo = np.zeros(x.shape[1], dtype=np.intp)
            hi = np.isfinite(srt).sum(axis=0)
            stats = _clip_sorted(srt, lo, hi, rej)
            _keep_range(x, srt, lo, hi)
        else:
            _sigma_clip(x, rej)
    nkept = (~np.isnan(x)).sum(axis=0)
    if method == "median":
        if stats is None:
            data = bn.nanmedian(x, axis=0)
            mad = bn.nanmedian(np.abs(x - data), axis=0)
        else:
            data, mad = stats
        with np.errstate(invalid="ignore", divide="ignore"):
            err = MAD_TO_STD * mad / np.sqrt(nkept)
        err[nkept < 2] = np.nan
    else:
        data, err = _weighted_stats(x, weights, method)
    return data, err, nframes - ninvalid - nkept, nkept


class _Chunk:
    """Combination of a row range of the band into the matching rows of the outputs."""

    #: Clipped pixels collected before their sorted-domain iterations run.
    flush_threshold = 65536  # capped by general_pixels, which bounds the memory

    def __init__(
        self, band, out: CombineResult, method, weights, rej, ninv_plane, general_pixels: int
    ):
        self.band, self.out, self.method, self.w, self.rej = band, out, method, weights, rej
        self.nframes, self.nrows, self.nx = band.shape
        self.flat = band.reshape(self.nframes, -1)
        self.ninv = None if ninv_plane is None else ninv_plane.reshape(-1)
        self.general_pixels = general_pixels
        self.pending = []  # (flat index, sorted columns, lo, hi) of clipped pixels
        self.npending = 0

    def _put(self, idx, data, err, nrej, ncomb):
        for arr, val in zip(
            (self.out.data, self.out.uncertainty, self.out.nrejected, self.out.ncombined),
            (data, err, nrej, ncomb),
        ):
            arr.reshape(-1)[idx] = val

    def general(self, idx: np.ndarray | None = None) -> None:
        """Run the general path on flat pixel indices ``idx`` (None = every pixel)."""
        n = self.nrows * self.nx if idx is None else idx.size
        for p in range(0, n, self.general_pixels):
            q = min(n, p + self.general_pixels)
            sub = np.arange(p, q) if idx is None else idx[p:q]
            x = self.flat[:, p:q].copy() if idx is None else self.flat[:, sub]
            ninv = None if self.ninv is None else self.ninv[sub]
            self._put(sub, *_general(x, self.method, self.w, self.rej, ninv))

    def flush(self) -> None:
        """Finish the sigma clipping of the pixels collected by :meth:`fast`."""
        if not self.pending:
            return
        idx, srt, lo, hi = (np.concatenate(a, axis=-1) for a in zip(*self.pending))
        self.pending, self.npending = [], 0
        med, mad = _clip_sorted(srt, lo, hi, self.rej, first_pass=1)
        nk = hi - lo
        if self.method == "median":
            with np.errstate(invalid="ignore", divide="ignore"):
                err = MAD_TO_STD * mad / np.sqrt(nk)
            data = med
        else:
            x = self.flat[:, idx]
            _keep_range(x, srt, lo, hi)
            data, err = _weighted_stats(x, self.w, self.method)
        err[nk < 2] = np.nan
        self._put(idx, data, err, self.nframes - nk, nk)

    def fast(self, block_pixels: int) -> None:
        """Sorting-network path (see module notes); leftovers go to the general path."""
        nf, nx, rej, out = self.nframes, self.nx, self.rej, self.out
        brows = max(1, block_pixels // nx)
        scratch = list(np.empty((nf, brows, nx), dtype=self.band.dtype))
        spare = np.empty((brows, nx), dtype=self.band.dtype)
        leftovers = []
        for a in range(0, self.nrows, brows):
            b = min(self.nrows, a + brows)
            blk = self.band[:, a:b]
            planes = _sort_planes(list(blk), [p[: b - a] for p in scratch], spare[: b - a])
            med, mad = _median_mad_sorted(planes)
            finite = np.isfinite(planes[0]) & np.isfinite(planes[-1])
            if self.method == "median":
                out.data[a:b] = med
                out.uncertainty[a:b] = mad * (MAD_TO_STD / math.sqrt(nf))
            else:
                out.data[a:b], out.uncertainty[a:b] = _dense_stats(list(blk), self.w, self.method)
            out.nrejected[a:b] = 0
            out.ncombined[a:b] = nf
            offset = a * nx
            leftovers.append(np.flatnonzero(~finite) + offset)
            if not rej.sigclip:
                continue
            sig = mad * MAD_TO_STD
            lo_b = med - rej.sigma_low * sig
            hi_b = med + rej.sigma_high * sig
            clip = finite & ((planes[0] < lo_b) | (planes[-1] > hi_b))
            sel = np.flatnonzero(clip)
            if sel.size == 0:
                continue
            srt = np.empty((nf, sel.size), dtype=self.band.dtype)
            for j, p in enumerate(planes):
                srt[j] = p.reshape(-1)[sel]
            lo = (srt < lo_b.reshape(-1)[sel]).sum(axis=0)
            hi = (srt <= hi_b.reshape(-1)[sel]).sum(axis=0)
            self.pending.append((sel + offset, srt, lo, hi))
            self.npending += sel.size
            if self.npending >= min(self.general_pixels, self.flush_threshold):
                self.flush()
        self.flush()
        if nf < 2:
            out.uncertainty[...] = np.nan
        leftovers = np.concatenate(leftovers)
        if leftovers.size:
            self.general(leftovers)


def combine_band(
    band: np.ndarray,
    method: str = "median",
    *,
    mask: np.ndarray | None = None,
    scale: Sequence[float] | np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
    rejection: Rejection | None = None,
    threads: int = 1,
    general_pixels: int | None = None,
) -> CombineResult:
    """Combine a band of a stack of frames pixel by pixel, after rejection.

    Parameters
    ----------
    band : numpy.ndarray
        ``(nframes, ny, nx)`` float32 (or float64) values in the data unit; NaN and
        +/-inf are missing values. **Used as scratch space and modified in place**
        (masked values become NaN, values are scaled, rejected values become NaN), so a
        band never needs a second copy in memory.
    method : {'median', 'average', 'sum'}
        Combination of the kept values; see the module notes for the uncertainties.
    mask : numpy.ndarray, optional
        Boolean ``(nframes, ny, nx)``; True marks a bad value (excluded, not counted as
        rejected).
    scale : sequence of float, optional
        ``nframes`` factors each frame is multiplied by before rejection and combination
        (e.g. inverse medians to normalise flats). ``minmax`` limits apply to unscaled values.
    weights : sequence of float, optional
        ``nframes`` non-negative weights for 'average' and 'sum'.
    rejection : Rejection, optional
        Rejection settings; None = keep every valid value.
    threads : int
        Row chunks combined concurrently (numpy releases the GIL in the sorting network).
    general_pixels : int, optional
        Pixels per piece in the general path (bounds its temporaries; default keeps a
        piece near 16 MB).

    Returns
    -------
    CombineResult
        ``data``, ``uncertainty``, ``nrejected``, ``ncombined`` of shape ``(ny, nx)``.

    Raises
    ------
    ValueError
        Unknown method, a band that is not 3-D floating point, or ``scale``/``weights``/
        ``mask`` of the wrong length or shape, weights given for 'median', negative or
        all-zero weights.
    """
    if method not in METHODS:
        raise ValueError(f"combination method {method!r} unknown; use one of {METHODS}")
    band = np.asarray(band)
    if band.ndim != 3 or not np.issubdtype(band.dtype, np.floating):
        raise ValueError(
            f"band must be a 3-D floating-point array (nframes, ny, nx), got "
            f"{band.ndim}-D {band.dtype}"
        )
    nframes, ny, nx = band.shape
    rej = rejection or Rejection()
    w = None
    if weights is not None:
        if method == "median":
            raise ValueError("weights apply to 'average' and 'sum', not to 'median'")
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size != nframes:
            raise ValueError(f"{w.size} weights for {nframes} frames")
        if not np.all(np.isfinite(w)) or (w < 0).any() or not (w > 0).any():
            raise ValueError("weights must be finite, non-negative and not all zero")
    s = None
    if scale is not None:
        s = np.asarray(scale, dtype=np.float64).ravel()
        if s.size != nframes:
            raise ValueError(f"{s.size} scale factors for {nframes} frames")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"scale factors must be finite, got {s}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != band.shape:
            raise ValueError(f"mask shape {mask.shape} differs from band shape {band.shape}")
        band[mask] = np.nan

    itype = np.int16 if nframes < 32768 else np.int32
    out = CombineResult(
        np.empty((ny, nx), band.dtype),
        np.empty((ny, nx), band.dtype),
        np.empty((ny, nx), itype),
        np.empty((ny, nx), itype),
    )
    ninv = None
    if rej.minmax:
        # Thresholds are for the raw values, so they are applied before scaling; the
        # values missing beforehand are counted so they are not reported as rejected.
        ninv = np.zeros((ny, nx), dtype=itype)
        for i in range(nframes):
            f = band[i]
            ninv += ~np.isfinite(f)
            with np.errstate(invalid="ignore"):
                if rej.min_value is not None:
                    f[f < rej.min_value] = np.nan
                if rej.max_value is not None:
                    f[f > rej.max_value] = np.nan
    if s is not None:
        for i in range(nframes):
            band[i] *= band.dtype.type(s[i])
    fast = (
        nframes <= _FAST_MAX_FRAMES
        and not rej.extrema
        and not rej.minmax
        and (not rej.sigclip or (rej.center, rej.spread) == ("median", "mad_std"))
        and (method == "median" or rej.sigclip)
    )
    if general_pixels is None:
        # ~40 bytes per value of temporaries in the general path (float64 sums, masks).
        general_pixels = int(min(262144, max(256, 16e6 / (40 * nframes))))
    threads = max(1, min(int(threads), ny))
    bounds = np.linspace(0, ny, threads + 1).astype(int)

    def run(k):
        r0, r1 = bounds[k], bounds[k + 1]
        if r1 <= r0:
            return
        view = CombineResult(
            out.data[r0:r1], out.uncertainty[r0:r1], out.nrejected[r0:r1], out.ncombined[r0:r1]
        )
        chunk = _Chunk(
            band[:, r0:r1],
            view,
            method,
            w,
            rej,
            None if ninv is None else ninv[r0:r1],
            general_pixels,
        )
        if fast:
            chunk.fast(_BLOCK_PIXELS)
        else:
            chunk.general()

    if threads == 1:
        run(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(threads)))
    return out
