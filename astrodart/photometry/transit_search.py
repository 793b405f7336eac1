"""Layer 2: search one night's light curve for a single transit (box least squares).

Pure functions on light-curve arrays: no file I/O, no printing.

Method: the box-least-squares search of Kovács, Zucker & Mazeh (2002, A&A 391, 369), as
implemented by :class:`astropy.timeseries.BoxLeastSquares`, over mid-time and duration
for a single event: the trial period is longer than the span of the night plus the
longest duration, so every point has its own phase and one box is fitted. The baseline
is a straight line in time (what the comparison ensemble left), fitted to the points out
of the box and divided out before the search, twice (the first time to all points).

Detection statistic: the signal-to-noise of the box depth, ``depth / depth_err``, with
the errors first scaled to the scatter of the residuals out of the box (``sqrt(chi2_red)``
when above 1) and by their red-noise factor beta (Winn et al. 2008, ApJ 683, 1076:
:func:`astrodart.photometry.transit.time_averaged_beta`). The threshold holds the
false-alarm probability of the whole search at ``fap`` (default 0.1 %, one night in a
thousand): with ``N`` trial boxes counted as independent (the searched mid-time range over
each trial duration, summed over the durations: an overcount, so conservative), a flat
curve of Gaussian noise exceeds ``z = Phi^-1(1 - fap / N)`` with probability at most
``fap`` (Bonferroni). A blind search of a 3-hour night needs about 4.3 sigma, a search
around an ephemeris about 3.8 sigma. A transit is detected when the depth is positive,
``snr >= snr_threshold`` and the box holds at least ``min_points`` points, with as many
out of it. The Bayesian information criterion of the box against the line alone,
``delta_bic = delta_chi2 - 3 ln n`` (three more parameters: mid-time, duration, depth),
is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from astrodart.photometry.transit import time_averaged_beta

__all__ = ["FALSE_ALARM_PROBABILITY", "TransitSearch", "search_transit"]

#: False-alarm probability of a search (sets the signal-to-noise threshold).
FALSE_ALARM_PROBABILITY = 1e-3


@dataclass
class TransitSearch:
    """Result of :func:`search_transit` (times in the unit of the input, e.g. BJD days).

    Parameters
    ----------
    detected : bool
        Whether the best box passes every criterion (see ``reason`` when not).
    t0 : float
        Mid-time of the best box.
    duration : float
        Duration of the best box.
    depth, depth_err : float
        Fractional depth of the box and its scaled 1-sigma error.
    snr : float
        ``depth / depth_err``.
    delta_chi2 : float
        Chi-square improvement of the box over the baseline, with the scaled errors.
    delta_bic : float
        ``delta_chi2 - 3 ln n``.
    n_in, n_out : int
        Points inside and outside the box.
    n_points : int
        Finite points searched.
    noise_scale : float
        Factor applied to the errors (``max(1, sqrt(chi2_red)) * beta`` of the residuals
        out of the box).
    rms : float
        Standard deviation of the residuals of the best model (per point).
    snr_threshold : float
        The signal-to-noise threshold applied.
    n_trials : float
        Independent trial boxes counted for the threshold.
    fap : float
        False-alarm probability the threshold holds.
    reason : str
        Why not detected ('' when detected).
    """

    detected: bool
    t0: float
    duration: float
    depth: float
    depth_err: float
    snr: float
    delta_chi2: float
    delta_bic: float
    n_in: int
    n_out: int
    n_points: int
    noise_scale: float
    rms: float
    snr_threshold: float
    n_trials: float
    fap: float
    reason: str = ""

    def to_dict(self) -> dict:
        """The result as JSON-able built-in types (NaN becomes None).

        Returns
        -------
        dict
            One entry per field, plus ``method``.
        """
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in asdict(self).items()}
        out["method"] = ("box least squares, single event (Kovacs, Zucker & Mazeh 2002; "
                         "astropy.timeseries.BoxLeastSquares), linear baseline")
        return out


def _inputs(time, flux, flux_err):
    """Finite, sorted ``t, f, e``; errors from the point-to-point scatter when not given."""
    t = np.asarray(time, dtype=float)
    f = np.asarray(flux, dtype=float)
    if t.shape != f.shape or t.ndim != 1:
        raise ValueError(f"time and flux must be 1-D of one shape, got {t.shape}, {f.shape}")
    if flux_err is None:
        good = np.isfinite(t) & np.isfinite(f)
        d = np.diff(f[good][np.argsort(t[good])])
        sigma = 1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2) if d.size else 1.0
        e = np.full(t.shape, sigma if sigma > 0 else 1.0)
    else:
        e = np.asarray(flux_err, dtype=float)
        if e.shape != t.shape:
            raise ValueError(f"flux_err shape {e.shape} differs from time shape {t.shape}")
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    order = np.argsort(t[good])
    return t[good][order], f[good][order], e[good][order]


def _line(t, f, e, use) -> np.ndarray:
    """Weighted straight line through the points ``use``, evaluated at every ``t``; a
    constant when the points left out are not bracketed by 3 used points on each side
    (a slope fitted to one side only would be extrapolated across the box)."""
    if use.sum() < 3:
        use = np.ones_like(use)
    degree = 1
    if not use.all():
        out = np.flatnonzero(~use)
        if use[: out[0]].sum() < 3 or use[out[-1] + 1:].sum() < 3:
            degree = 0
    coef = np.polyfit(t[use] - t.mean(), f[use], degree, w=1.0 / e[use])
    return np.polyval(coef, t - t.mean())


def _durations(span: float, cadence: float, durations, duration_prior) -> np.ndarray:
    """The trial durations: given, around the prior (at most 70 % of the span), or 3
    cadences to 70 % of the span."""
    if durations is not None:
        d = np.atleast_1d(np.asarray(durations, dtype=float))
        if d.size == 0 or np.any(~np.isfinite(d)) or np.any(d <= 0):
            raise ValueError(f"durations must be positive numbers, got {durations!r}")
        return np.sort(d)
    if duration_prior is not None:
        if not (np.isfinite(duration_prior) and duration_prior > 0):
            raise ValueError(f"duration_prior must be a positive number, got {duration_prior!r}")
        d = float(duration_prior) * np.linspace(0.6, 1.5, 10)
        return np.unique(np.clip(d, 3 * cadence, 0.7 * span))
    lo = max(3 * cadence, 0.03 * span)
    return np.geomspace(lo, max(0.7 * span, 1.01 * lo), 16)


def _best_box(bls, period: float, durations, t0_prior, window: float):
    """Best (t0, duration) from BLS, or on a grid of mid-times around ``t0_prior``."""
    if t0_prior is None:
        res = bls.power([period], durations, objective="likelihood")
        return float(res.transit_time[0]), float(res.duration[0])
    best, best_ll = None, -np.inf
    step = float(np.min(durations)) / 10
    for dur in durations:
        for t0 in np.arange(t0_prior - window, t0_prior + window + step / 2, step):
            if not np.any(np.abs(np.asarray(bls.t) - t0) < 0.5 * dur):
                continue  # an empty box (compute_stats needs points in it)
            stats = bls.compute_stats(period, dur, t0)
            ll = float(np.sum(stats["per_transit_log_likelihood"]))
            if stats["depth"][0] > 0 and ll > best_ll:
                best, best_ll = (float(t0), float(dur)), ll
    if best is None:
        return float(t0_prior), float(np.median(durations))
    return best


def _box_fit(t, f, e, t0: float, duration: float):
    """Box and straight line fitted together (weighted linear least squares): the depth,
    its formal error (the line's uncertainty included), the model and the box mask."""
    inside = np.abs(t - t0) < 0.5 * duration
    if inside.sum() == 0 or (~inside).sum() < 3:
        return 0.0, np.inf, _line(t, f, e, np.ones(t.size, bool)), inside
    design = np.column_stack([np.ones(t.size), t - t.mean(), -inside.astype(float)])
    w = 1.0 / e
    coef, *_ = np.linalg.lstsq(design * w[:, None], f * w, rcond=None)
    cov = np.linalg.pinv((design * w[:, None]).T @ (design * w[:, None]))
    depth = float(coef[2] / coef[0])  # relative to the baseline at the box
    err = float(math.sqrt(max(cov[2, 2], 0.0)) / abs(coef[0]))
    return depth, err, design @ coef, inside


def search_transit(time, flux, flux_err=None, *, durations=None, t0_prior=None,
                   duration_prior=None, fap: float = FALSE_ALARM_PROBABILITY,
                   snr_threshold: float | None = None, min_points: int = 5) -> TransitSearch:
    """Search one night's light curve for a single box-shaped transit.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times (e.g. BJD_TDB, days).
    flux : array_like, shape (n,)
        Normalised differential flux; non-finite points are ignored.
    flux_err : array_like, shape (n,), optional
        1-sigma errors; default the point-to-point scatter (robust) for every point.
    durations : array_like, optional
        Trial durations (unit of ``time``); default 16 from 3 cadences (or 3 % of the
        span) to 70 % of the span, or 0.6-1.5 x ``duration_prior``.
    t0_prior : float, optional
        Predicted mid-time: the search is limited to within half the longest trial
        duration of it.
    duration_prior : float, optional
        Predicted duration (unit of ``time``).
    fap : float
        False-alarm probability of the search, which sets the signal-to-noise threshold
        (module docstring).
    snr_threshold : float, optional
        A fixed signal-to-noise threshold instead.
    min_points : int
        Least points inside the box for a detection.

    Returns
    -------
    TransitSearch
        The best box and whether it is a detection.

    Raises
    ------
    ValueError
        Fewer than 10 usable points, inputs of different shapes, bad durations or ``fap``
        outside (0, 1).
    """
    from astropy.timeseries import BoxLeastSquares

    t, f, e = _inputs(time, flux, flux_err)
    if t.size < 10:
        raise ValueError(f"search_transit needs at least 10 finite points, got {t.size}")
    span = float(t[-1] - t[0])
    cadence = float(np.median(np.diff(t)))
    durs = _durations(span, cadence, durations, duration_prior)
    period = span + 2.0 * float(durs.max()) + cadence  # one event: no box wraps the night
    inside = np.zeros(t.size, bool)
    for _ in range(2):  # line out of the box, then the box on the detrended curve
        base = _line(t, f, e, ~inside)
        bls = BoxLeastSquares(t, f / base, e / base)
        t0, dur = _best_box(bls, period, durs, t0_prior, 0.5 * float(durs.max()))
        inside = np.abs(t - t0) < 0.5 * dur
    depth, err, model, inside = _box_fit(t, f, e, t0, dur)
    resid = (f - model) / e
    # the noise from the points out of the box: a box does not follow ingress and
    # egress, which would read as red noise inside it
    oot = ~inside if (~inside).sum() >= 10 else np.ones(t.size, bool)
    scale = max(1.0, math.sqrt(float(np.sum(resid[oot] ** 2)) / max(oot.sum() - 3, 1)))
    scale *= time_averaged_beta((f / model - 1.0)[oot])
    flat = _line(t, f, e, np.ones(t.size, bool))
    dchi2 = float(np.sum(((f - flat) / e) ** 2) - np.sum(resid ** 2)) / scale ** 2
    err *= scale
    snr = depth / err if err > 0 and np.isfinite(err) else 0.0
    dbic = dchi2 - 3.0 * math.log(t.size)
    t_range = span if t0_prior is None else 2 * 0.5 * float(durs.max())
    n_trials = float(max(1.0, np.sum(np.maximum(t_range / durs, 1.0))))
    if snr_threshold is None:
        snr_threshold = _threshold(fap, n_trials)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    reasons = [why for bad, why in (
        (depth <= 0, f"the best box is not a dimming (depth {depth:.2e})"),
        (snr < snr_threshold, (f"depth S/N {snr:.1f} < {snr_threshold:.1f} (false-alarm "
                               f"probability {fap:g} over {n_trials:.0f} trial boxes)")),
        (n_in < min_points, f"{n_in} points in the box < {min_points}"),
        (n_out < min_points, f"{n_out} points out of the box < {min_points}"),
    ) if bad]
    return TransitSearch(
        detected=not reasons, t0=float(t0), duration=float(dur), depth=float(depth),
        depth_err=float(err), snr=float(snr), delta_chi2=dchi2, delta_bic=float(dbic),
        n_in=n_in, n_out=n_out, n_points=int(t.size), noise_scale=float(scale),
        rms=float(np.std(f / model - 1.0, ddof=1)), snr_threshold=float(snr_threshold),
        n_trials=n_trials, fap=float(fap), reason="; ".join(reasons))


def _threshold(fap: float, n_trials: float) -> float:
    """The one-sided Gaussian z whose tail, times ``n_trials``, is ``fap``."""
    from scipy.stats import norm

    if not 0 < fap < 1:
        raise ValueError(f"fap={fap!r}: a false-alarm probability between 0 and 1")
    return float(norm.isf(fap / n_trials))
