"""Layer 2: sorting networks that sort a stack of frames pixel by pixel, plane by plane.

A comparator ``(i, j)`` writes ``min`` of planes ``i`` and ``j`` into ``i`` and ``max``
into ``j``: one vectorised pass over the pixels, whatever the data. Batcher's odd-even
merge sort sorts any ``n`` values with ~``n log^2 n / 4`` comparators (103 for 20), which
on cache-sized blocks of pixels beats a per-pixel selection (``bottleneck.nanmedian``)
several times for the few to a few dozen frames of a night. Used by
:mod:`astrodart.combine.engine` and :mod:`astrodart.combine.rejection`.

References
----------
* K. E. Batcher, "Sorting networks and their applications", AFIPS 1968 (odd-even
  merge sort and bitonic merging).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

__all__ = ["batcher_comparators"]

#: Pixels per block of the sorting network (20 planes of 16384 float32 fit in L2 cache).
_BLOCK_PIXELS = 16384


@cache
def batcher_comparators(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort for ``n`` inputs.

    The network for the next power of two is generated and comparators touching an
    index ``>= n`` are dropped (those inputs act as +infinity, so the comparators would
    be no-ops). Applying ``(min, max)`` to each pair in order sorts any ``n`` values.
    103 comparators for ``n = 20``.

    Parameters
    ----------
    n : int
        Number of values (frames) to sort.

    Returns
    -------
    tuple of tuple of int
        The comparators, in the order they must be applied.

    References
    ----------
    K. E. Batcher, "Sorting networks and their applications", AFIPS 1968.
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


def _sorted_columns(x: np.ndarray, bitonic: bool = False) -> np.ndarray:
    """Column-wise ascending sort of a 2-D array (N, m) with a sorting network; with
    ``bitonic`` every column must be bitonic and the 3x smaller bitonic merger is used."""
    pairs = _bitonic_comparators(x.shape[0]) if bitonic else None
    planes = _sort_planes(list(x), list(np.empty_like(x)), np.empty(x.shape[1], x.dtype), pairs)
    return np.stack(planes)


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx[k], k]`` for every column ``k`` of the 2-D array ``a``.

    A flat gather (``numpy.take_along_axis`` builds broadcast index arrays and costs
    ~10x more per value)."""
    m = a.shape[1]
    flat = np.ascontiguousarray(a).reshape(-1)
    return flat[np.asarray(idx, dtype=np.intp) * m + np.arange(m)]


def _count_rows(mask: np.ndarray) -> np.ndarray:
    """Number of True values in each column of the boolean 2-D array ``mask`` (N, m).

    Sums the bytes in a small integer type (a boolean ``sum`` converts every value to
    int64 first and costs ~10x more)."""
    small = np.uint8 if mask.shape[0] < 256 else np.int32
    return mask.view(np.uint8).sum(axis=0, dtype=small).astype(np.intp)
