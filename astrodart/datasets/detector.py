"""Layer 2: detector signatures of a synthetic CCD with known truth (pure: no file I/O).

Bias structure, dark current with hot pixels and amplifier glow, flat-field response
(vignetting, dust donuts, pixel response non-uniformity), cosmic rays, charge bleeding
and the read-out to ADU. Every function takes its random numbers from a
:class:`numpy.random.Generator` passed in by the caller. Arrays are ``(ny, nx)``; charge
is in electrons until :func:`digitise` turns it into ADU through the gain (e-/ADU); read
noise is in electrons, bias in ADU. :func:`astrodart.datasets.simulate.simulate_frame`
assembles them into a frame (the CCD equation; Howell, *Handbook of CCD Astronomy*, 2nd
ed., 2006, ch. 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Donut",
    "bias_pattern",
    "bleed_columns",
    "cosmic_rays",
    "dark_current_map",
    "digitise",
    "donut_map",
    "flat_response",
    "random_donuts",
    "vignetting_map",
]


def bias_pattern(shape: tuple[int, int], level: float, rng: np.random.Generator,
                 column_sigma: float = 1.5, ramp: tuple[float, float] = (3.0, 1.0)) -> np.ndarray:
    """Fixed bias structure of a camera: a level, column-to-column offsets and gentle ramps.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    level : float
        Mean bias level (ADU).
    rng : numpy.random.Generator
        Source of the column offsets.
    column_sigma : float
        Standard deviation of the column offsets (ADU).
    ramp : tuple of float
        Peak-to-peak amplitude (ADU) of the linear ramps along x and along y.

    Returns
    -------
    numpy.ndarray
        float32 ``(ny, nx)`` in ADU with mean ``level`` (the column offsets are
        made zero-mean).
    """
    ny, nx = shape
    cols = rng.normal(0.0, column_sigma, nx)
    cols -= cols.mean()
    rx = ramp[0] * (np.arange(nx) / max(nx - 1, 1) - 0.5)
    ry = ramp[1] * (np.arange(ny) / max(ny - 1, 1) - 0.5)
    return (level + ry[:, None] + (cols + rx)[None, :]).astype(np.float32)


def dark_current_map(shape: tuple[int, int], mean_rate: float, rng: np.random.Generator, *,
                     nonuniformity: float = 0.1, hot_fraction: float = 2e-4,
                     hot_rate: tuple[float, float] = (2.0, 50.0), glow: float = 0.5,
                     glow_scale: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark-current rate per pixel: a mean, pixel-to-pixel scatter, amplifier glow in one
    corner and hot pixels.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    mean_rate : float
        Mean dark current of ordinary pixels (e-/s/px).
    rng : numpy.random.Generator
        Source of the scatter and of the hot-pixel positions and rates.
    nonuniformity : float
        Relative pixel-to-pixel scatter of the ordinary pixels.
    hot_fraction : float
        Fraction of pixels that are hot.
    hot_rate : tuple of float
        Range (e-/s) of the hot-pixel rates, drawn log-uniformly.
    glow : float
        Extra rate (e-/s) at the corner ``(y=0, x=nx-1)`` where the output amplifier sits.
    glow_scale : float
        e-folding distance of the glow as a fraction of the image diagonal.

    Returns
    -------
    rate : numpy.ndarray
        float32 ``(ny, nx)`` in e-/s.
    hot_y, hot_x : numpy.ndarray
        0-based rows and columns of the hot pixels (sorted by rate, hottest first).
    """
    ny, nx = shape
    rate = mean_rate * np.clip(1.0 + nonuniformity * rng.standard_normal((ny, nx)), 0.0, None)
    if glow > 0:
        yy, xx = np.ogrid[:ny, :nx]
        d = np.hypot(yy, (nx - 1) - xx) / math.hypot(ny, nx)
        rate = rate + glow * np.exp(-d / glow_scale)
    n_hot = round(hot_fraction * ny * nx)
    idx = rng.choice(ny * nx, size=n_hot, replace=False) if n_hot else np.array([], dtype=int)
    lo, hi = np.log(hot_rate[0]), np.log(hot_rate[1])
    rates = np.exp(rng.uniform(lo, hi, n_hot))
    order = np.argsort(-rates)
    idx, rates = idx[order], rates[order]
    hot_y, hot_x = np.unravel_index(idx, (ny, nx))
    rate[hot_y, hot_x] += rates
    return rate.astype(np.float32), hot_y, hot_x


def vignetting_map(shape: tuple[int, int], strength: float = 0.15,
                   centre: tuple[float, float] | None = None) -> np.ndarray:
    """Radial illumination fall-off ``1 - strength * (r / r_corner)^2``.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    strength : float
        Relative loss of light at a distance of half the image diagonal from the
        optical axis.
    centre : tuple of float, optional
        ``(x, y)`` of the optical axis (0-based pixels); the image centre by default.

    Returns
    -------
    numpy.ndarray
        float64 ``(ny, nx)``, 1 at the optical axis.
    """
    ny, nx = shape
    cx, cy = ((nx - 1) / 2.0, (ny - 1) / 2.0) if centre is None else centre
    yy, xx = np.ogrid[:ny, :nx]
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (0.25 * (nx ** 2 + ny ** 2))
    return 1.0 - strength * r2


@dataclass(frozen=True)
class Donut:
    """The out-of-focus shadow of a dust grain on a filter or window: a dark ring.

    Parameters
    ----------
    x, y : float
        Centre (0-based pixels).
    radius : float
        Outer radius (pixels).
    depth : float
        Fractional loss of light in the ring (0.05 = 5 %); the centre, shadowed by the
        secondary mirror's hole in the beam, loses ``0.4 * depth``.
    """

    x: float
    y: float
    radius: float
    depth: float


def random_donuts(shape: tuple[int, int], n: int, rng: np.random.Generator,
                  radius: tuple[float, float] = (6.0, 22.0),
                  depth: tuple[float, float] = (0.02, 0.08)) -> list[Donut]:
    """Draw dust donuts at random.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``; centres are uniform over the frame.
    n : int
        Number of donuts.
    rng : numpy.random.Generator
        Source of positions, radii and depths.
    radius : tuple of float
        Range of outer radii (pixels), drawn uniformly.
    depth : tuple of float
        Range of fractional depths, drawn uniformly.

    Returns
    -------
    list of Donut
    """
    ny, nx = shape
    return [Donut(float(rng.uniform(0, nx - 1)), float(rng.uniform(0, ny - 1)),
                  float(rng.uniform(*radius)), float(rng.uniform(*depth))) for _ in range(n)]


def donut_map(shape: tuple[int, int], donuts: Sequence[Donut], inner: float = 0.45,
              edge: float = 1.0) -> np.ndarray:
    """Multiplicative transmission map of dust donuts (1 where there is no dust).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    donuts : sequence of Donut
        The dust shadows.
    inner : float
        Radius of the central (less dark) hole as a fraction of the outer radius.
    edge : float
        Softness of the edges (pixels).

    Returns
    -------
    numpy.ndarray
        float64 ``(ny, nx)``, at most 1.
    """
    ny, nx = shape
    out = np.ones((ny, nx))
    for d in donuts:
        r0 = math.ceil(d.radius + 4 * edge)
        x0, x1 = max(int(d.x) - r0, 0), min(int(d.x) + r0 + 1, nx)
        y0, y1 = max(int(d.y) - r0, 0), min(int(d.y) + r0 + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        r = np.hypot(xx - d.x, yy - d.y)
        disc = 1.0 / (1.0 + np.exp((r - d.radius) / edge))
        hole = 1.0 / (1.0 + np.exp((r - inner * d.radius) / edge))
        loss = d.depth * (disc - 0.6 * hole)
        out[y0:y1, x0:x1] *= 1.0 - loss
    return out


def flat_response(shape: tuple[int, int], *, vignetting: float = 0.15,
                  optical_centre: tuple[float, float] | None = None,
                  donuts: Sequence[Donut] = (), prnu: np.ndarray | float = 0.0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Relative response of each pixel to uniform illumination (what a master flat measures).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    vignetting : float
        See :func:`vignetting_map`.
    optical_centre : tuple of float, optional
        ``(x, y)`` of the optical axis.
    donuts : sequence of Donut
        Dust shadows (:func:`donut_map`).
    prnu : float or numpy.ndarray
        Photo-response non-uniformity: a relative scatter (float, needs ``rng``) or a
        ready ``(ny, nx)`` map of relative deviations.
    rng : numpy.random.Generator, optional
        Needed when ``prnu`` is a non-zero float.

    Returns
    -------
    numpy.ndarray
        float64 ``(ny, nx)`` normalised to a mean of 1.
    """
    resp = vignetting_map(shape, vignetting, optical_centre) * donut_map(shape, donuts)
    if np.ndim(prnu) == 0 and prnu:
        if rng is None:
            raise ValueError("flat_response needs rng for a random prnu")
        resp = resp * (1.0 + float(prnu) * rng.standard_normal(shape))
    elif np.ndim(prnu) == 2:
        resp = resp * (1.0 + np.asarray(prnu))
    return resp / resp.mean()


def cosmic_rays(shape: tuple[int, int], n: int, rng: np.random.Generator,
                length: tuple[float, float] = (0.0, 12.0),
                charge: float = 2500.0) -> tuple[np.ndarray, np.ndarray]:
    """Cosmic-ray hits: straight tracks of deposited charge.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    n : int
        Number of events.
    rng : numpy.random.Generator
        Source of positions, angles, lengths and charges.
    length : tuple of float
        Range of projected track lengths (pixels; 0 gives a single-pixel hit).
    charge : float
        Median total charge of an event (e-); drawn log-normally (0.3 dex scatter).

    Returns
    -------
    image : numpy.ndarray
        float32 ``(ny, nx)`` deposited electrons.
    mask : numpy.ndarray
        bool ``(ny, nx)``, True where an event deposited charge.
    """
    ny, nx = shape
    image = np.zeros((ny, nx), dtype=np.float64)
    for _ in range(int(n)):
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        ang = rng.uniform(0, np.pi)
        L = rng.uniform(*length)
        q = charge * 10 ** rng.normal(0.0, 0.3)
        steps = max(int(L * 4), 1)
        t = (np.arange(steps) + 0.5) / steps - 0.5
        xs = np.clip((x0 + t * L * math.cos(ang)).astype(int), 0, nx - 1)
        ys = np.clip((y0 + t * L * math.sin(ang)).astype(int), 0, ny - 1)
        w = rng.uniform(0.6, 1.4, steps)
        np.add.at(image, (ys, xs), q * w / w.sum())
    return image.astype(np.float32), image > 0


def bleed_columns(electrons: np.ndarray, full_well: float) -> np.ndarray:
    """Spread the charge above full well along the columns, as a CCD without
    anti-blooming gates does (the bleed trails of saturated stars).

    Parameters
    ----------
    electrons : numpy.ndarray
        ``(ny, nx)`` charge per pixel (e-).
    full_well : float
        Pixel capacity (e-).

    Returns
    -------
    numpy.ndarray
        New float64 array, no pixel above ``full_well``; charge is conserved except what
        bleeds off the ends of a column.
    """
    out = np.asarray(electrons, dtype=np.float64).copy()
    for j in np.flatnonzero((out > full_well).any(axis=0)):
        col = out[:, j]
        over = col > full_well
        edges = np.flatnonzero(np.diff(np.r_[0, over.astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2]):          # saturated run rows a..b-1
            excess = float((col[a:b] - full_well).sum())
            col[a:b] = full_well
            for side, start, step in (("up", b, 1), ("down", a - 1, -1)):
                share = excess / 2.0
                i = start
                while share > 0 and 0 <= i < col.size:
                    room = full_well - col[i]
                    take = min(room, share) if room > 0 else 0.0
                    col[i] += take
                    share -= take
                    i += step
        out[:, j] = col
    return out


def digitise(electrons: np.ndarray, gain: float, read_noise: float, bias, rng: np.random.Generator,
             adc_max: int = 65535) -> np.ndarray:
    """Read out a frame: add read noise, convert electrons to ADU, add the bias, round and
    clip to the converter's range.

    Parameters
    ----------
    electrons : numpy.ndarray
        ``(ny, nx)`` collected charge, already with photon noise (e-).
    gain : float
        e-/ADU.
    read_noise : float
        Read noise (e-, Gaussian).
    bias : float or numpy.ndarray
        Bias level or ``(ny, nx)`` bias structure (ADU).
    rng : numpy.random.Generator
        Source of the read noise.
    adc_max : int
        Largest value the converter can write (65535 for 16 bits).

    Returns
    -------
    numpy.ndarray
        uint16 ``(ny, nx)`` ADU.
    """
    if gain <= 0:
        raise ValueError(f"gain must be > 0 e-/ADU, got {gain}")
    adu = (electrons + read_noise * rng.standard_normal(electrons.shape)) / gain + bias
    return np.clip(np.rint(adu), 0, adc_max).astype(np.uint16)
