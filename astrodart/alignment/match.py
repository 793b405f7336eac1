"""Layer 2: image alignment (registration) onto a reference pixel grid.

Pure functions on arrays: no file I/O, no printing. Pixel convention is 0-based
throughout (the centre of the first pixel is ``(x, y) = (0, 0)``; ``x`` runs along
columns, ``y`` along rows), as in astropy and photutils.

A frame is aligned by a ladder of methods, tried in order until one gives a
transform that is verified and inside the user's limits (:func:`align_frame`):

1. ``'wcs'`` -- reprojection with ``reproject.reproject_interp`` when frame and
   reference both carry a celestial WCS (checked against the stars when there are
   enough of them, so a wrong plate solution is caught);
2. ``'stars'`` -- star-pattern matching by similar triangles (astroalign, Beroiz,
   Cabral & Sanchez 2020, Astronomy and Computing 32, 100384) followed by a
   least-squares similarity fit on every cross-matched star. Similarity transforms
   cannot mirror, so a mirrored copy of the star list is also tried when the direct
   match fails or is weak;
3. ``'fft'`` -- pure translation from the peak of the FFT phase correlation
   (for frames with too few stars for pattern matching).

A frame that no method can align raises :class:`AlignmentError` naming every
method tried and why it failed; a transform outside :class:`AlignmentLimits` raises
:class:`AlignmentLimitError`. Nothing is ever returned "as if aligned".
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import bottleneck as bn
import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "METHODS",
    "AlignmentError",
    "AlignmentLimitError",
    "PixelTransform",
    "AlignmentLimits",
    "StarList",
    "ReferenceFrame",
    "AlignmentResult",
    "estimate_background",
    "detect_stars",
    "crossmatch",
    "fit_similarity",
    "fit_affine",
    "match_stars",
    "fft_translation",
    "transform_from_wcs",
    "celestial_wcs",
    "warp_to_reference",
    "reproject_to_reference",
    "registration_offset",
    "align_frame",
]

log = logging.getLogger("astrodart")

#: Alignment methods, in the default order of the ladder.
METHODS = ("wcs", "stars", "fft")


class AlignmentError(RuntimeError):
    """No method could align a frame; the message lists every method tried and why."""

    def __init__(self, message: str, attempts: Sequence[str] = ()):
        self.attempts = list(attempts)
        super().__init__(message)


class AlignmentLimitError(AlignmentError):
    """A transform was found but breaks the user's limits on rotation, scale, shift or
    overlap (so the frame is left out rather than stacked)."""


# --------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelTransform:
    """A 2-D affine map from source pixels to reference pixels (0-based ``x, y``).

    Parameters
    ----------
    matrix : (3, 3) array_like
        Homogeneous matrix ``M`` with ``[x_ref, y_ref, 1] = M @ [x_src, y_src, 1]``.
    """

    matrix: np.ndarray

    def __post_init__(self):
        m = np.asarray(self.matrix, dtype=float)
        if m.shape != (3, 3):
            raise ValueError(f"PixelTransform needs a 3x3 matrix, got shape {m.shape}")
        object.__setattr__(self, "matrix", m)

    @classmethod
    def identity(cls) -> "PixelTransform":
        """The identity transform."""
        return cls(np.eye(3))

    @classmethod
    def translation(cls, dx: float, dy: float) -> "PixelTransform":
        """A pure shift: ``x_ref = x_src + dx``, ``y_ref = y_src + dy`` (pixels)."""
        m = np.eye(3)
        m[0, 2], m[1, 2] = dx, dy
        return cls(m)

    @classmethod
    def mirror_x(cls, width: int) -> "PixelTransform":
        """Left-right flip of a frame ``width`` pixels wide: ``x -> width - 1 - x``."""
        m = np.eye(3)
        m[0, 0], m[0, 2] = -1.0, width - 1.0
        return cls(m)

    def __matmul__(self, other: "PixelTransform") -> "PixelTransform":
        """Composition: ``(self @ other)(p) = self(other(p))``."""
        return PixelTransform(self.matrix @ other.matrix)

    def inverse(self) -> "PixelTransform":
        """The inverse map (reference pixels to source pixels)."""
        return PixelTransform(np.linalg.inv(self.matrix))

    def apply(self, xy) -> np.ndarray:
        """Map points.

        Parameters
        ----------
        xy : (N, 2) array_like
            Source pixel coordinates ``(x, y)``, 0-based.

        Returns
        -------
        (N, 2) ndarray
            Reference pixel coordinates.
        """
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        return xy @ self.matrix[:2, :2].T + self.matrix[:2, 2]

    @property
    def mirrored(self) -> bool:
        """True if the map reverses handedness (negative determinant)."""
        return bool(np.linalg.det(self.matrix[:2, :2]) < 0)

    def _proper(self) -> np.ndarray:
        a = self.matrix[:2, :2]
        return a @ np.diag([-1.0, 1.0]) if self.mirrored else a

    @property
    def scale(self) -> float:
        """Linear scale factor (reference pixels per source pixel), ``sqrt(|det A|)``."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))

    @property
    def rotation(self) -> float:
        """Rotation in degrees, in ``(-180, 180]``, counter-clockwise in ``x, y``; for a
        mirrored map, the rotation that follows a flip of source ``x``."""
        a = self._proper()
        return float(math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))

    @property
    def offset(self) -> tuple[float, float]:
        """Translation part ``(dx, dy)`` of the matrix, in reference pixels."""
        return float(self.matrix[0, 2]), float(self.matrix[1, 2])

    def shift_of_centre(self, src_shape: tuple[int, int], ref_shape: tuple[int, int]) -> float:
        """Distance (reference pixels) between where the source frame's centre lands and
        the reference frame's centre: the "translation" that limits are checked on
        (independent of where the rotation centre is)."""
        c_src = np.array([(src_shape[1] - 1) / 2, (src_shape[0] - 1) / 2])
        c_ref = np.array([(ref_shape[1] - 1) / 2, (ref_shape[0] - 1) / 2])
        return float(np.hypot(*(self.apply(c_src)[0] - c_ref)))

    def as_dict(self) -> dict:
        """Plain-number summary for logs: matrix rows, rotation, scale, offset, mirror."""
        dx, dy = self.offset
        return {"matrix": self.matrix[:2].round(6).tolist(),
                "rotation_deg": round(self.rotation, 5), "scale": round(self.scale, 6),
                "dx": round(dx, 4), "dy": round(dy, 4), "mirrored": self.mirrored}


@dataclass(frozen=True)
class AlignmentLimits:
    """Limits a transform must respect, else the frame is left out.

    Parameters
    ----------
    max_rotation : float or None
        Largest allowed absolute rotation, degrees (None: any rotation, e.g. after a
        meridian flip).
    scale_range : (float, float) or None
        Allowed range of the linear scale (reference pixels per source pixel). The
        default ``(0.9, 1.1)`` suits frames of one camera; widen it to combine cameras.
    max_shift : float or None
        Largest allowed displacement of the frame centre, reference pixels.
    allow_mirror : bool
        Accept mirrored frames (and try mirrored matches at all).
    min_overlap : float
        Smallest fraction of the reference grid the aligned frame must cover.
    """

    max_rotation: float | None = None
    scale_range: tuple[float, float] | None = (0.9, 1.1)
    max_shift: float | None = None
    allow_mirror: bool = True
    min_overlap: float = 0.2

    def violations(self, transform: PixelTransform, src_shape, ref_shape,
                   overlap: float | None = None) -> list[str]:
        """Describe every limit ``transform`` breaks.

        Parameters
        ----------
        transform : PixelTransform
            Frame pixels -> reference pixels.
        src_shape, ref_shape : (int, int)
            Shapes ``(ny, nx)`` of the frame and the reference (for the centre shift).
        overlap : float, optional
            Fraction of the reference grid covered by the aligned frame.

        Returns
        -------
        list of str
            One human-readable sentence per broken limit (empty if none).
        """
        out = []
        if self.max_rotation is not None and abs(transform.rotation) > self.max_rotation:
            out.append(f"rotation {transform.rotation:.2f} deg > max_rotation {self.max_rotation}")
        if self.scale_range is not None:
            lo, hi = self.scale_range
            if not lo <= transform.scale <= hi:
                out.append(f"scale {transform.scale:.4f} outside scale_range "
                           f"{tuple(self.scale_range)}")
        if self.max_shift is not None:
            s = transform.shift_of_centre(src_shape, ref_shape)
            if s > self.max_shift:
                out.append(f"shift {s:.1f} px > max_shift {self.max_shift}")
        if transform.mirrored and not self.allow_mirror:
            out.append("frame is mirrored and allow_mirror is False")
        if overlap is not None and overlap < self.min_overlap:
            out.append(f"overlap {overlap:.2f} of the reference < min_overlap {self.min_overlap}")
        return out


# --------------------------------------------------------------------------------------
# background and stars
# --------------------------------------------------------------------------------------
def _invalid(data: np.ndarray, mask) -> np.ndarray:
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    return bad


def _linear_weights(n: int, centres: np.ndarray) -> np.ndarray:
    """(n, len(centres)) matrix interpolating linearly between box centres (and
    extrapolating linearly beyond the outermost ones, so a gradient reaches the edges)."""
    nb = len(centres)
    w = np.zeros((n, nb))
    if nb == 1:
        w[:, 0] = 1.0
        return w
    p = np.arange(n, dtype=float)
    j0 = np.clip(np.searchsorted(centres, p) - 1, 0, nb - 2)
    f = (p - centres[j0]) / (centres[j0 + 1] - centres[j0])
    w[np.arange(n), j0] = 1 - f
    w[np.arange(n), j0 + 1] = f
    return w


def estimate_background(data, mask=None, box_size: int = 64,
                        filter_size: int = 3) -> tuple[np.ndarray, float]:
    """Smooth sky background map and sky noise of an image.

    The image is cut into boxes of about ``box_size`` pixels (equal sizes that tile the
    image exactly); each box's sky is its median after two rounds of 3-sigma clipping
    (MAD-based, so stars barely bias it; at most ~1000 pixels per box are sampled); boxes
    with less than 20 % valid pixels take their nearest valid neighbour's value; the box
    values are median-filtered and interpolated bilinearly (extrapolated linearly to the
    edges) back to full resolution.

    Parameters
    ----------
    data : (ny, nx) array_like
        Image, any unit.
    mask : (ny, nx) bool array_like, optional
        True marks invalid pixels (ignored, as are non-finite values).
    box_size : int
        Box side, pixels (clamped to the image size).
    filter_size : int
        Size of the median filter applied to the grid of box values.

    Returns
    -------
    background : (ny, nx) ndarray of float32
        Sky level, same unit as ``data``.
    sigma : float
        Robust standard deviation of the sky (1.4826 x MAD of ``data - background``).

    Raises
    ------
    ValueError
        ``data`` is not 2-D or has no valid pixel.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"estimate_background needs a 2-D image, got shape {data.shape}")
    bad = _invalid(data, mask)
    if bad.all():
        raise ValueError("estimate_background: no valid pixel in the image")
    ny, nx = data.shape
    work = np.where(bad, np.nan, data)
    ey = np.linspace(0, ny, max(1, int(round(ny / max(box_size, 4)))) + 1).round().astype(int)
    ex = np.linspace(0, nx, max(1, int(round(nx / max(box_size, 4)))) + 1).round().astype(int)
    grid = np.full((len(ey) - 1, len(ex) - 1), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN boxes are handled below
        for i in range(len(ey) - 1):
            for j in range(len(ex) - 1):
                cell = work[ey[i]:ey[i + 1], ex[j]:ex[j + 1]].ravel()
                cell = cell[::max(1, cell.size // 1024)]  # ~1000 samples per box are plenty
                if np.isfinite(cell).sum() < 0.2 * cell.size:
                    continue
                for _ in range(2):
                    med = bn.nanmedian(cell)
                    mad = 1.4826 * bn.nanmedian(np.abs(cell - med))
                    cell = np.where(np.abs(cell - med) > 3 * max(mad, 1e-12), np.nan, cell)
                grid[i, j] = bn.nanmedian(cell)
    empty = ~np.isfinite(grid)
    if empty.all():
        grid[:] = float(np.nanmedian(work))
    elif empty.any():
        idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        grid = grid[tuple(idx)]
    if filter_size > 1 and min(grid.shape) >= filter_size:
        # pad by point reflection, which keeps a linear gradient linear up to the edges
        h = filter_size // 2
        padded = np.pad(grid, h, mode="reflect", reflect_type="odd")
        grid = ndimage.median_filter(padded, size=filter_size)[h:-h, h:-h]
    cy = (ey[:-1] + ey[1:] - 1) / 2
    cx = (ex[:-1] + ex[1:] - 1) / 2
    bkg = (_linear_weights(ny, cy) @ grid @ _linear_weights(nx, cx).T).astype(np.float32)
    resid = (data - bkg)[~bad]
    resid = resid[::max(1, resid.size // 250_000)]
    med = np.median(resid)
    sigma = 1.4826 * np.median(np.abs(resid - med))
    resid = resid[np.abs(resid - med) < 5 * max(sigma, 1e-12)]
    if resid.size:
        sigma = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    sigma = float(sigma)
    return bkg, sigma


@dataclass
class StarList:
    """Point sources found by :func:`detect_stars`, brightest first.

    Attributes
    ----------
    xy : (N, 2) ndarray
        Centroids ``(x, y)``, 0-based pixels.
    flux : (N,) ndarray
        Background-subtracted flux in the centroid window (image units x pixels).
    peak : (N,) ndarray
        Highest background-subtracted pixel value.
    sigma : float
        Sky noise of the image (image units).
    """

    xy: np.ndarray
    flux: np.ndarray
    peak: np.ndarray
    sigma: float

    def __len__(self) -> int:
        return len(self.xy)


def detect_stars(data, mask=None, fwhm: float = 3.0, threshold: float = 5.0,
                 max_stars: int = 200, min_area: int = 5, border: int = 3,
                 box_size: int = 64) -> StarList:
    """Find stars: background subtraction, Gaussian matched filter, connected regions.

    Regions of at least ``min_area`` pixels above ``threshold`` sigma in the smoothed
    image are kept; centroids are refined by two rounds of a flux-weighted centroid
    in a window of radius ``1.5 * fwhm``. Cosmic-ray hits and
    hot pixels (more than 60 % of the window flux in one pixel, or a peak pixel whose
    four neighbours are below 10 % of it: stars narrower than ~1.1 px FWHM are lost
    too) are rejected, as are sources within ``border`` pixels of the edge or of an
    invalid pixel.

    Parameters
    ----------
    data : (ny, nx) array_like
        Image.
    mask : (ny, nx) bool array_like, optional
        True marks invalid pixels.
    fwhm : float
        Expected stellar FWHM, pixels (sets the smoothing kernel and centroid window).
    threshold : float
        Detection threshold in units of the smoothed image's noise.
    max_stars : int
        Keep at most this many sources, brightest first.
    min_area : int
        Minimum number of connected pixels above threshold.
    border : int
        Exclusion zone around the edge and invalid pixels, pixels.
    box_size : int
        Background box size, pixels (see :func:`estimate_background`).

    Returns
    -------
    StarList
        Sources sorted by decreasing flux (possibly empty).
    """
    data = np.asarray(data, dtype=np.float32)
    bad = _invalid(data, mask)
    bkg, sigma = estimate_background(data, bad, box_size=box_size)
    img = np.where(bad, 0.0, data - bkg).astype(np.float32)
    smooth = ndimage.gaussian_filter(img, max(fwhm, 1.0) / 2.3548)
    ref = smooth[~bad]
    ref = ref[::max(1, ref.size // 250_000)]
    noise = 1.4826 * np.median(np.abs(ref - np.median(ref))) if ref.size else 0.0
    empty = StarList(np.zeros((0, 2)), np.zeros(0), np.zeros(0), sigma)
    if not noise > 0:
        return empty
    labels, n = ndimage.label(smooth > threshold * noise)
    if n == 0:
        return empty
    area = np.bincount(labels.ravel(), minlength=n + 1)
    idx = np.nonzero(area >= min_area)[0]
    idx = idx[idx > 0]
    if idx.size == 0:
        return empty
    slices = ndimage.find_objects(labels)
    peaks = []
    for i in idx:  # peak of each region, (row, col)
        sl = slices[i - 1]
        sub = np.where(labels[sl] == i, smooth[sl], -np.inf)
        r, c = np.unravel_index(np.argmax(sub), sub.shape)
        peaks.append((sl[0].start + r, sl[1].start + c))
    ny, nx = data.shape
    r = max(2, int(math.ceil(1.5 * fwhm)))
    near_bad = ndimage.binary_dilation(bad, iterations=border) if bad.any() else bad
    xy, flux, peak = [], [], []
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx ** 2 + yy ** 2) <= r * r
    for row, col in peaks:
        cy, cx = row, col
        ok = True
        for _ in range(2):
            iy, ix = int(round(cy)), int(round(cx))
            if iy - r < border or ix - r < border or iy + r >= ny - border or ix + r >= nx - border:
                ok = False
                break
            win = img[iy - r:iy + r + 1, ix - r:ix + r + 1] * disk
            w = np.clip(win, 0, None)
            tot = w.sum()
            if tot <= 0:
                ok = False
                break
            cy = iy + (w * yy).sum() / tot
            cx = ix + (w * xx).sum() / tot
        if not ok or near_bad[int(round(cy)), int(round(cx))]:
            continue
        iy, ix = int(round(cy)), int(round(cx))
        py, px = np.unravel_index(np.argmax(img[iy - 1:iy + 2, ix - 1:ix + 2]), (3, 3))
        py, px = iy + py - 1, ix + px - 1
        top = img[py, px]
        side = np.median([img[py - 1, px], img[py + 1, px], img[py, px - 1], img[py, px + 1]])
        if w.max() > 0.6 * tot or side < 0.1 * top:  # cosmic ray / hot pixel, not a PSF
            continue
        xy.append((cx, cy))
        flux.append(tot)
        peak.append(win.max())
    if not xy:
        return empty
    xy, flux, peak = np.array(xy), np.array(flux), np.array(peak)
    # one entry per star: merge centroids that converged onto the same star
    order = np.argsort(-flux)
    xy, flux, peak = xy[order], flux[order], peak[order]
    keep = np.ones(len(xy), bool)
    tree = cKDTree(xy)
    for i, j in sorted(tree.query_pairs(max(1.0, fwhm / 2))):
        if keep[i]:
            keep[j] = False
    xy, flux, peak = xy[keep][:max_stars], flux[keep][:max_stars], peak[keep][:max_stars]
    return StarList(xy, flux, peak, sigma)


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


def fit_similarity(src, dst) -> PixelTransform:
    """Least-squares similarity (rotation, uniform scale, shift; no mirror) with
    ``dst ~ T(src)``, in closed form (Umeyama 1991, IEEE TPAMI 13, 376).

    Parameters
    ----------
    src, dst : (N, 2) array_like
        Matched points, N >= 2.

    Returns
    -------
    PixelTransform

    Raises
    ------
    ValueError
        Fewer than 2 pairs or degenerate points.
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if len(src) < 2 or len(src) != len(dst):
        raise ValueError("fit_similarity needs at least 2 matched point pairs")
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum() / len(s)
    if var <= 0:
        raise ValueError("fit_similarity: degenerate source points")
    u, sig, vt = np.linalg.svd(d.T @ s / len(s))
    e = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / var
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = md - scale * rot @ ms
    return PixelTransform(m)


def fit_affine(src, dst) -> PixelTransform:
    """Least-squares general affine map (6 parameters) with ``dst ~ T(src)``.

    Parameters
    ----------
    src, dst : (N, 2) array_like
        Matched points, N >= 3, not collinear.

    Returns
    -------
    PixelTransform
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    a = np.hstack([src, np.ones((len(src), 1))])
    coef, *_ = np.linalg.lstsq(a, dst, rcond=None)
    m = np.eye(3)
    m[:2] = coef.T
    return PixelTransform(m)


def _rms(a) -> float:
    a = np.asarray(a, float)
    return float(np.sqrt(np.mean(a ** 2))) if a.size else float("nan")


def _clipped_rms(d) -> float:
    """RMS of match distances without the outlying pairs (faint stars, blends)."""
    d = np.asarray(d, float)
    return _rms(d[d <= max(0.5, 3.0 * np.median(d))]) if d.size else float("nan")


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
    """Most common offset ``ref - src`` between two star lists (cells of ``radius``),
    or None when no offset is shared by at least 4 pairs."""
    if len(src_xy) < 4 or len(ref_xy) < 4:
        return None
    d = (ref_xy[None, :, :] - src_xy[:, None, :]).reshape(-1, 2)
    cells = np.floor(d / radius).astype(np.int64)
    lo = cells.min(0)
    idx = cells - lo
    grid = np.zeros(idx.max(0) + 1, np.int32)
    np.add.at(grid, (idx[:, 0], idx[:, 1]), 1)
    # a true offset may straddle cell borders: score each cell with its 8 neighbours
    score = ndimage.convolve(grid, np.ones((3, 3), np.int32), mode="constant")
    if score.max() < 4:
        return None
    best = np.array(np.unravel_index(np.argmax(score), score.shape))
    sel = (np.abs(idx - best) <= 1).all(1)
    return tuple(float(v) for v in np.median(d[sel], axis=0))


def match_stars(src_xy, ref_xy, src_shape: tuple[int, int], *, allow_mirror: bool = True,
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
    src_shape : (int, int)
        Shape ``(ny, nx)`` of the source frame (for the mirror).
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
    """
    import astroalign

    src_xy, ref_xy = np.asarray(src_xy, float), np.asarray(ref_xy, float)
    if len(src_xy) < 3 or len(ref_xy) < 3:
        raise AlignmentError(f"too few stars for pattern matching ({len(src_xy)} in frame, "
                             f"{len(ref_xy)} in reference; need 3)")
    min_matches = max(3, min(min_matches, len(src_xy), len(ref_xy)))

    def attempt(pre: PixelTransform):
        pts = pre.apply(src_xy)
        try:
            t, _pairs = astroalign.find_transform(pts[:max_control_points],
                                                  ref_xy[:max_control_points])
        except (astroalign.MaxIterError, ValueError, TypeError, IndexError) as exc:
            raise AlignmentError(f"astroalign found no match ({type(exc).__name__}: "
                                 f"{exc})") from None
        return _refine(PixelTransform(np.asarray(t.params)) @ pre, src_xy, ref_xy, match_radius,
                       min_matches, pre)

    errors = []
    best = None
    n_good = 0.5 * min(len(src_xy), len(ref_xy), 50)
    # fast path for the common case (a night's drift: shift plus a small rotation): the
    # most common offset between bright stars, verified and refined like a triangle match
    shift = _offset_vote(src_xy[:max_control_points], ref_xy[:max_control_points], match_radius)
    if shift is not None:
        try:
            best = _refine(PixelTransform.translation(*shift), src_xy, ref_xy, match_radius,
                           min_matches, PixelTransform.identity())
        except AlignmentError:
            best = None
        if best is not None and best[2] >= n_good:
            return best
    try:
        direct = attempt(PixelTransform.identity())
        if best is None or (direct[2], -direct[1]) > (best[2], -best[1]):
            best = direct
    except AlignmentError as exc:
        errors.append(f"direct: {exc}")
    weak = best is None or best[2] < n_good
    if allow_mirror and weak:
        try:
            flipped = attempt(PixelTransform.mirror_x(src_shape[1]))
            if best is None or (flipped[2], -flipped[1]) > (best[2], -best[1]):
                best = flipped
        except AlignmentError as exc:
            errors.append(f"mirrored: {exc}")
    if best is None:
        raise AlignmentError("; ".join(errors))
    return best


def fft_translation(src, ref, src_mask=None, ref_mask=None, min_ratio: float = 2.0,
                    box_size: int = 64, lowpass: float = 0.25) -> tuple[float, float, float]:
    """Translation between two frames from the peak of their FFT phase correlation.

    Each image is background-subtracted, 3x3 median-filtered (hot pixels, which sit at
    the same place in every frame, would otherwise pull the peak to zero shift) and
    reduced to its significant structure (above 3 sigma, capped at 50 sigma, so one
    bright star cannot dominate). The cross-power spectrum of the zero-padded images is
    normalised to unit amplitude (phase correlation, Kuglin & Hines 1975), which turns
    any common structure -- stars or an extended nebula -- into one sharp peak; a
    Gaussian taper of width ``lowpass`` (cycles/pixel) damps the noise-dominated high
    frequencies. The peak is located to sub-pixel precision by a 3-point parabola in
    each axis.

    Parameters
    ----------
    src, ref : 2-D array_like
        Frame to align and reference (shapes may differ).
    src_mask, ref_mask : bool array_like, optional
        True marks invalid pixels.
    min_ratio : float
        The peak must be at least this many times the highest correlation found more
        than 5 pixels away from it; else the match is ambiguous (e.g. another field).
    box_size : int
        Background box size, pixels.
    lowpass : float
        Width of the Gaussian frequency taper, cycles per pixel.

    Returns
    -------
    dx, dy : float
        Shift with ``x_ref = x_src + dx``, ``y_ref = y_src + dy`` (pixels).
    ratio : float
        Peak over the highest secondary peak (match significance).

    Raises
    ------
    AlignmentError
        An image without significant structure, or an ambiguous peak.
    """
    def prep(img, mask, what):
        img = np.asarray(img, np.float32)
        bad = _invalid(img, mask)
        bkg, sig = estimate_background(img, bad, box_size=box_size)
        if not sig > 0:
            raise AlignmentError(f"the {what} has no noise/structure for cross-correlation")
        z = ndimage.median_filter(np.where(bad, 0.0, (img - bkg) / sig), size=3)  # no hot pixels
        z = np.clip(z - 3.0, 0.0, 50.0).astype(np.float32)
        if not z.any():
            raise AlignmentError(f"the {what} has no structure above 3 sigma to cross-correlate")
        return z

    a, b = prep(ref, ref_mask, "reference"), prep(src, src_mask, "frame")
    shape = [sfft.next_fast_len(a.shape[k] + b.shape[k], real=True) for k in (0, 1)]
    cross = sfft.rfft2(a, shape) * np.conj(sfft.rfft2(b, shape))
    amp = np.abs(cross)
    cross = cross / np.maximum(amp, 1e-12 * amp.max())
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    cross *= np.exp(-(fx ** 2 + fy ** 2) / (2 * lowpass ** 2))
    corr = sfft.irfft2(cross, shape)
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    peak = corr[iy, ix]
    rolled = np.roll(np.roll(corr, -iy + 5, 0), -ix + 5, 1)
    second = max(rolled[11:].max(initial=0), rolled[:11, 11:].max(initial=0))
    ratio = float(peak / second) if second > 0 else float("inf")
    if ratio < min_ratio:
        raise AlignmentError(f"cross-correlation peak is ambiguous (peak / next peak = "
                             f"{ratio:.2f} < {min_ratio}): frame may show another field")

    def parabola(cm, c0, cp):
        den = cm - 2 * c0 + cp
        return 0.5 * (cm - cp) / den if den != 0 else 0.0

    ny, nx = corr.shape
    fy0 = parabola(corr[(iy - 1) % ny, ix], peak, corr[(iy + 1) % ny, ix])
    fx0 = parabola(corr[iy, (ix - 1) % nx], peak, corr[iy, (ix + 1) % nx])
    dy = (iy if iy <= ny // 2 else iy - ny) + fy0
    dx = (ix if ix <= nx // 2 else ix - nx) + fx0
    return float(dx), float(dy), ratio


# --------------------------------------------------------------------------------------
# WCS
# --------------------------------------------------------------------------------------
def celestial_wcs(header_or_wcs):
    """The celestial part of a header's WCS, or None if it has none.

    Parameters
    ----------
    header_or_wcs : astropy.io.fits.Header, dict, astropy.wcs.WCS or None

    Returns
    -------
    astropy.wcs.WCS or None
        Two-axis celestial WCS; None when the header has no (valid) celestial WCS
        (e.g. blank CTYPEs, or only RA/DEC pointing keywords).
    """
    from astropy.wcs import WCS

    if header_or_wcs is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = header_or_wcs if isinstance(header_or_wcs, WCS) else WCS(header_or_wcs)
            if not w.has_celestial:
                return None
            return w.celestial
    except Exception:  # a malformed WCS is no WCS for alignment purposes
        return None


def transform_from_wcs(src_wcs, ref_wcs, src_shape: tuple[int, int],
                       n: int = 11) -> tuple[PixelTransform, float]:
    """Affine approximation of the pixel map ``src -> sky -> ref`` given by two WCSs.

    Parameters
    ----------
    src_wcs, ref_wcs : astropy.wcs.WCS
        Celestial WCSs of the frame and the reference.
    src_shape : (int, int)
        Frame shape ``(ny, nx)``.
    n : int
        Grid points per axis used for the fit.

    Returns
    -------
    transform : PixelTransform
        Best-fit affine map (for limits and the log; the pixels themselves are
        reprojected exactly).
    nonlinearity : float
        RMS departure of the exact map from the affine fit, reference pixels.
    """
    ny, nx = src_shape
    xx, yy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    src = np.column_stack([xx.ravel(), yy.ravel()])
    dst = _wcs_map(src_wcs, ref_wcs, src)
    ok = np.isfinite(dst).all(1)
    if ok.sum() < 3:
        raise AlignmentError("the two WCSs do not overlap (no finite pixel mapping)")
    t = fit_affine(src[ok], dst[ok])
    r = t.apply(src[ok]) - dst[ok]
    return t, _rms(np.hypot(r[:, 0], r[:, 1]))


def _wcs_map(src_wcs, ref_wcs, xy) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        world = src_wcs.pixel_to_world_values(xy[:, 0], xy[:, 1])
        x, y = ref_wcs.world_to_pixel_values(*world)
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


# --------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------
def _sky_fill(data: np.ndarray, bad: np.ndarray) -> float:
    """Median of the valid pixels (sampled), to fill invalid ones before interpolation."""
    v = data[~bad]
    return float(np.median(v[::max(1, v.size // 250_000)])) if v.size else 0.0


def warp_to_reference(data, transform: PixelTransform, ref_shape: tuple[int, int], mask=None,
                      order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Resample a frame onto the reference grid through an affine transform.

    Parameters
    ----------
    data : (ny, nx) array_like
        Frame pixels.
    transform : PixelTransform
        Frame pixels -> reference pixels.
    ref_shape : (int, int)
        Output shape ``(ny_ref, nx_ref)``.
    mask : (ny, nx) bool array_like, optional
        True marks invalid input pixels; they invalidate the output pixels they touch.
    order : int
        Spline order (0 nearest, 1 bilinear, 3 bicubic spline). Values are interpolated
        (surface brightness is kept; flux per pixel scales by ``1/scale**2``).

    Returns
    -------
    aligned : (ny_ref, nx_ref) ndarray of float32
        Resampled frame, NaN where invalid.
    invalid : (ny_ref, nx_ref) ndarray of bool
        Footprint mask: True where the output is not covered by valid input pixels
        (CCDData convention).
    """
    data = np.asarray(data, np.float32)
    bad = _invalid(data, mask)
    fill = _sky_fill(data, bad)
    src = np.where(bad, fill, data)
    inv = transform.inverse().matrix
    # ndimage works in (row, col): swap x/y on both sides of the inverse map
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    m = p @ inv @ p
    out = ndimage.affine_transform(src, m[:2, :2], offset=m[:2, 2], output_shape=tuple(ref_shape),
                                   order=order, mode="nearest", prefilter=order > 1)
    # footprint: exact bounds of the inverse-mapped reference pixel centres
    ny, nx = ref_shape
    gy, gx = np.mgrid[0:ny, 0:nx]
    sx = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    sy = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    h, w = data.shape
    invalid = (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)
    if bad.any():
        bad_w = ndimage.affine_transform(bad.astype(np.float32), m[:2, :2], offset=m[:2, 2],
                                         output_shape=tuple(ref_shape), order=1, mode="constant",
                                         cval=0.0, prefilter=False)
        invalid |= bad_w > 0.01
    out = out.astype(np.float32)
    out[invalid] = np.nan
    return out, invalid


def reproject_to_reference(data, src_wcs, ref_wcs, ref_shape: tuple[int, int], mask=None,
                           order: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """Reproject a frame onto the reference grid through the two celestial WCSs
    (``reproject.reproject_interp``).

    Parameters
    ----------
    data : (ny, nx) array_like
        Frame pixels.
    src_wcs, ref_wcs : astropy.wcs.WCS
        Celestial WCS of the frame and of the reference.
    ref_shape : (int, int)
        Output shape.
    mask : bool array_like, optional
        True marks invalid input pixels.
    order : str
        Interpolation order passed to reproject ('nearest-neighbor', 'bilinear',
        'bicubic').

    Returns
    -------
    aligned : ndarray of float32
        Reprojected frame, NaN where invalid.
    invalid : ndarray of bool
        Footprint mask, True where invalid.
    """
    from reproject import reproject_interp

    data = np.asarray(data, np.float32)
    bad = _invalid(data, mask)
    fill = _sky_fill(data, bad)
    src = np.where(bad, fill, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, foot = reproject_interp((src, src_wcs), ref_wcs, shape_out=tuple(ref_shape),
                                     order=order, return_footprint=True)
        invalid = ~(foot > 0.999) | ~np.isfinite(out)
        if bad.any():
            bad_r, _ = reproject_interp((bad.astype(np.float32), src_wcs), ref_wcs,
                                        shape_out=tuple(ref_shape), order="bilinear")
            invalid |= ~(np.nan_to_num(bad_r, nan=1.0) <= 0.01)
    out = out.astype(np.float32)
    out[invalid] = np.nan
    return out, invalid


# --------------------------------------------------------------------------------------
# the ladder
# --------------------------------------------------------------------------------------
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
    """

    def __init__(self, data, mask=None, wcs=None, fwhm: float = 3.0, max_stars: int = 200):
        self.data = np.asarray(data, np.float32)
        if self.data.ndim != 2:
            raise ValueError(f"reference must be a 2-D image, got shape {self.data.shape}")
        self.mask = _invalid(self.data, mask)
        self.wcs = celestial_wcs(wcs)
        self.fwhm = fwhm
        self.max_stars = max_stars
        self._stars: StarList | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of the reference grid."""
        return self.data.shape

    @property
    def stars(self) -> StarList:
        """Stars of the reference, brightest first (computed on first use)."""
        if self._stars is None:
            self._stars = detect_stars(self.data, self.mask, fwhm=self.fwhm,
                                       max_stars=self.max_stars)
        return self._stars


@dataclass
class AlignmentResult:
    """One frame aligned onto the reference grid.

    Attributes
    ----------
    data : (ny_ref, nx_ref) ndarray of float32
        Aligned pixels, NaN where invalid.
    invalid : (ny_ref, nx_ref) ndarray of bool
        Footprint mask (True = invalid, CCDData convention).
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
        """Plain-number summary for logs (method, transform, residual, matches, overlap)."""
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


def align_frame(data, reference: ReferenceFrame, *, mask=None, wcs=None, uncertainty=None,
                methods: Sequence[str] = METHODS, limits: AlignmentLimits | None = None,
                match_radius: float = 3.0, min_matches: int = 6, max_control_points: int = 50,
                order: int = 3, fft_min_ratio: float = 2.0) -> AlignmentResult:
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
    bad = _invalid(data, mask)
    src_wcs = celestial_wcs(wcs)
    ref_xy = reference.stars.xy
    stars: StarList | None = None

    def frame_stars() -> StarList:
        nonlocal stars
        if stars is None:
            stars = detect_stars(data, bad, fwhm=reference.fwhm, max_stars=reference.max_stars)
        return stars

    attempts: list[str] = []
    limit_broken = False
    for method in methods:
        try:
            if method == "wcs":
                if src_wcs is None or reference.wcs is None:
                    which = "frame" if src_wcs is None else "reference"
                    attempts.append(f"wcs: no celestial WCS in the {which}")
                    continue
                transform, _nonlin = transform_from_wcs(src_wcs, reference.wcs, data.shape)
                sxy = frame_stars().xy
                resid, n, verifiable = _verify(sxy, ref_xy, _wcs_map(src_wcs, reference.wcs, sxy)
                                               if len(sxy) else sxy, match_radius, min_matches)
                if verifiable and n < min_matches:
                    raise AlignmentError(f"the WCS disagrees with the stars (only {n} of "
                                         f"{len(sxy)} stars land within {match_radius} px of a "
                                         "reference star): wrong plate solution?")
            elif method == "stars":
                transform, resid, n = match_stars(
                    frame_stars().xy, ref_xy, data.shape, allow_mirror=limits.allow_mirror,
                    max_control_points=max_control_points, match_radius=match_radius,
                    min_matches=min_matches)
            else:  # fft
                dx, dy, _ratio = fft_translation(data, reference.data, bad, reference.mask,
                                                 min_ratio=fft_min_ratio)
                transform = PixelTransform.translation(dx, dy)
                sxy = frame_stars().xy
                resid, n, verifiable = _verify(sxy, ref_xy, transform.apply(sxy), match_radius,
                                               min_matches)
                if verifiable and n < min_matches:
                    raise AlignmentError(f"cross-correlation shift ({dx:.1f}, {dy:.1f}) is not "
                                         f"confirmed by the stars ({n} matches)")
        except AlignmentError as exc:
            attempts.append(f"{method}: {exc}")
            continue
        broken = limits.violations(transform, data.shape, reference.shape)
        if broken:
            limit_broken = True
            attempts.append(f"{method}: transform breaks limits ({'; '.join(broken)})")
            continue
        if method == "wcs":
            out, invalid = reproject_to_reference(data, src_wcs, reference.wcs,
                                                  reference.shape, bad)
        else:
            out, invalid = warp_to_reference(data, transform, reference.shape, bad, order=order)
        overlap = float((~invalid).mean())
        if overlap < limits.min_overlap:
            limit_broken = True
            attempts.append(f"{method}: overlap {overlap:.2f} of the reference < min_overlap "
                            f"{limits.min_overlap}")
            continue
        unc = None
        if uncertainty is not None:
            var = np.asarray(uncertainty, np.float32) ** 2
            if method == "wcs":
                v, _ = reproject_to_reference(var, src_wcs, reference.wcs, reference.shape, bad,
                                              order="bilinear")
            else:
                v, _ = warp_to_reference(var, transform, reference.shape, bad, order=1)
            unc = np.sqrt(np.clip(v, 0, None)).astype(np.float32)
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
    s = detect_stars(data, mask, fwhm=reference.fwhm, max_stars=reference.max_stars)
    ia, ib, d = crossmatch(s.xy, reference.stars.xy, match_radius)
    return (float(np.median(d)) if len(d) else float("inf")), int(len(d))
