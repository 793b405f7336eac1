"""Layer 2: pixel transforms between frames, their limits and least-squares fits.

Pixel convention is 0-based throughout (the centre of the first pixel is
``(x, y) = (0, 0)``; ``x`` runs along columns, ``y`` along rows), as in astropy and
photutils. A :class:`PixelTransform` maps source pixels to reference pixels; every
matcher of :mod:`astrodart.alignment` returns one, and :class:`AlignmentLimits` says
which transforms a user accepts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AlignmentError",
    "AlignmentLimitError",
    "PixelTransform",
    "AlignmentLimits",
    "fit_similarity",
    "fit_affine",
]


class AlignmentError(RuntimeError):
    """No method could align a frame; the message lists every method tried and why.

    Parameters
    ----------
    message : str
        What failed and why.
    attempts : sequence of str, optional
        One line per method of the ladder tried and why it was not used (kept as
        ``self.attempts``).
    """

    def __init__(self, message: str, attempts: Sequence[str] = ()):
        self.attempts = list(attempts)
        super().__init__(message)


class AlignmentLimitError(AlignmentError):
    """A transform was found but breaks the user's limits on rotation, scale, shift or
    overlap (so the frame is left out rather than stacked).

    Parameters
    ----------
    message : str
        What failed and why.
    attempts : sequence of str, optional
        One line per method of the ladder tried and why it was not used (kept as
        ``self.attempts``).
    """


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
        """The inverse map (reference pixels to source pixels).

        Returns
        -------
        PixelTransform
        """
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
        """Distance between where the source frame's centre lands and the reference
        frame's centre: the "translation" that limits are checked on (independent of
        where the rotation centre is).

        Parameters
        ----------
        src_shape, ref_shape : (int, int)
            Shapes ``(ny, nx)`` of the source frame and the reference.

        Returns
        -------
        float
            Distance, reference pixels.
        """
        c_src = np.array([(src_shape[1] - 1) / 2, (src_shape[0] - 1) / 2])
        c_ref = np.array([(ref_shape[1] - 1) / 2, (ref_shape[0] - 1) / 2])
        return float(np.hypot(*(self.apply(c_src)[0] - c_ref)))

    def as_dict(self) -> dict:
        """Plain-number summary for logs.

        Returns
        -------
        dict
            ``matrix`` (first two rows), ``rotation_deg``, ``scale``, ``dx``, ``dy``,
            ``mirrored``.
        """
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
    """Root mean square of an array (NaN when empty)."""
    a = np.asarray(a, float)
    return float(np.sqrt(np.mean(a ** 2))) if a.size else float("nan")


def _clipped_rms(d) -> float:
    """RMS of match distances without the outlying pairs (faint stars, blends)."""
    d = np.asarray(d, float)
    return _rms(d[d <= max(0.5, 3.0 * np.median(d))]) if d.size else float("nan")
