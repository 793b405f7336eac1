"""Layer 2: transit light-curve model and fit.

Pure functions on light-curve arrays: no file I/O, no printing.

Method: a trapezoid (total duration ``T14``, ingress ``T12``, flat-bottom depth) times a
polynomial baseline, fitted by least squares; errors from the covariance, inflated by the
reduced chi-square and by the time-averaging red-noise factor beta (Winn et al. 2008,
ApJ 683, 1076). The trapezoid is the usual approximation of a limb-darkened transit
(Carter et al. 2008, ApJ 689, 499); for radii and limb darkening use a full model
(Mandel & Agol 2002, ApJ 580, L171).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from astrodart.exceptions import quiet

__all__ = ["trapezoid_model", "time_averaged_beta", "TransitFit", "fit_transit"]


def trapezoid_model(time, t0: float, depth: float, t14: float, t12: float) -> np.ndarray:
    """A trapezoidal transit, normalised to 1 out of transit.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times (same unit as the other parameters, e.g. BJD days).
    t0 : float
        Mid-transit time.
    depth : float
        Fractional depth of the flat bottom.
    t14 : float
        Total duration, first to fourth contact.
    t12 : float
        Ingress (= egress) duration, ``0 < t12 <= t14 / 2``.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``1`` outside, ``1 - depth`` between second and third contact, linear in between.
    """
    t = np.asarray(time, dtype=float)
    half = 0.5 * t14
    t12 = min(max(t12, 1e-12), half)
    dt = np.abs(t - t0)
    frac = np.clip((half - dt) / t12, 0.0, 1.0)
    return 1.0 - depth * frac


def time_averaged_beta(residuals, errors=None, bin_sizes: Sequence[int] | None = None) -> float:
    """Red-noise factor beta from the time-averaging method (Winn et al. 2008).

    Parameters
    ----------
    residuals : array_like, shape (n,)
        Residuals in time order.
    errors : array_like, shape (n,), optional
        Not used for the ratio (kept for symmetry with fitting code).
    bin_sizes : sequence of int, optional
        Numbers of points per bin; default 2 .. n / 5.

    Returns
    -------
    float
        Median over bin sizes of ``sigma_N / (sigma_1 / sqrt(N) * sqrt(M / (M - 1)))``
        (``M`` bins), at least 1; 1 when there are too few points.
    """
    r = np.asarray(residuals, dtype=float)
    r = r[np.isfinite(r)]
    n = r.size
    if n < 10:
        return 1.0
    s1 = np.std(r, ddof=1)
    sizes = bin_sizes or list(range(2, max(3, n // 5) + 1))
    betas = []
    for nb in sizes:
        m = n // nb
        if m < 3:
            continue
        means = r[: m * nb].reshape(m, nb).mean(axis=1)
        expected = s1 / math.sqrt(nb) * math.sqrt(m / (m - 1))
        betas.append(np.std(means, ddof=1) / expected)
    return float(max(1.0, np.median(betas))) if betas else 1.0


@dataclass
class TransitFit:
    """Result of :func:`fit_transit`.

    Parameters
    ----------
    t0, t0_err : float
        Mid-transit time and 1-sigma error (units of the input times).
    depth, depth_err : float
        Fractional flat-bottom depth and error.
    t14, t14_err : float
        Total duration and error.
    t12, t12_err : float
        Ingress duration and error.
    baseline : numpy.ndarray
        Polynomial baseline coefficients (constant first) in ``time - t_ref``, then the
        airmass coefficient when fitted.
    t_ref : float
        Reference time of the baseline polynomial.
    chi2, dof : float, int
        Chi-square and degrees of freedom of the best fit.
    rms : float
        Standard deviation of the residuals (all points).
    oot_rms : float
        Standard deviation of the residuals out of transit, per point.
    beta : float
        Red-noise factor applied to the errors.
    error_scale : float
        Total factor applied to the formal errors (sqrt of reduced chi-square, if > 1,
        times beta).
    n_points : int
        Points fitted.
    _degree, _airmass_mean : int, float or None
        Internal: degree of the time polynomial and mean airmass of an airmass term.
    """

    t0: float
    t0_err: float
    depth: float
    depth_err: float
    t14: float
    t14_err: float
    t12: float
    t12_err: float
    baseline: np.ndarray
    t_ref: float
    chi2: float
    dof: int
    rms: float
    oot_rms: float
    beta: float
    error_scale: float
    n_points: int
    _degree: int = field(default=1, repr=False)
    _airmass_mean: float | None = field(default=None, repr=False)

    @property
    def chi2_red(self) -> float:
        """Reduced chi-square of the best fit (before any error scaling)."""
        return self.chi2 / self.dof if self.dof > 0 else float("nan")

    def transit(self, time) -> np.ndarray:
        """The trapezoid alone (normalised to 1).

        Parameters
        ----------
        time : array_like, shape (n,)
            Times (units of the fitted times).

        Returns
        -------
        numpy.ndarray, shape (n,)
            The transit model without baseline.
        """
        return trapezoid_model(time, self.t0, self.depth, self.t14, self.t12)

    def baseline_model(self, time, airmass=None) -> np.ndarray:
        """The fitted baseline.

        Parameters
        ----------
        time : array_like, shape (n,)
            Times (units of the fitted times).
        airmass : array_like, shape (n,), optional
            Needed when an airmass term was fitted.

        Returns
        -------
        numpy.ndarray, shape (n,)
            The polynomial (plus airmass) baseline.

        Raises
        ------
        ValueError
            The fit has an airmass term and ``airmass`` is None.
        """
        tau = np.asarray(time, dtype=float) - self.t_ref
        b = np.polyval(self.baseline[: self._degree + 1][::-1], tau)
        if self._airmass_mean is not None:
            if airmass is None:
                raise ValueError("this fit has an airmass term: pass airmass=")
            b = b + self.baseline[-1] * (np.asarray(airmass, dtype=float) - self._airmass_mean)
        return b

    def model(self, time, airmass=None) -> np.ndarray:
        """Full model (transit times baseline).

        Parameters
        ----------
        time : array_like, shape (n,)
            Times (units of the fitted times).
        airmass : array_like, shape (n,), optional
            Needed when the fit has an airmass term.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Model flux.

        Raises
        ------
        ValueError
            The fit has an airmass term and ``airmass`` is None.
        """
        return self.transit(time) * self.baseline_model(time, airmass)

    def summary(self, time_unit: str = "d") -> str:
        """A one-paragraph text summary.

        Parameters
        ----------
        time_unit : str
            Unit of the fitted times; for ``'d'`` the durations are also given in hours
            and the error of t0 in minutes.

        Returns
        -------
        str
            The fitted values with their errors and the fit statistics.
        """
        h = 24.0 if time_unit == "d" else 1.0
        return (
            f"t0 = {self.t0:.5f} +- {self.t0_err:.5f} {time_unit}"
            f" ({self.t0_err * h * 60:.1f} min); depth = {100 * self.depth:.3f} +- "
            f"{100 * self.depth_err:.3f} %; T14 = {self.t14 * h:.3f} +- {self.t14_err * h:.3f} h;"
            f" T12 = {self.t12 * h:.3f} h; rms = {1e3 * self.rms:.2f} ppt "
            f"(out of transit {1e3 * self.oot_rms:.2f} ppt); chi2_red = {self.chi2_red:.2f};"
            f" beta = {self.beta:.2f}; n = {self.n_points}"
        )


def fit_transit(
    time,
    flux,
    flux_err,
    *,
    t0: float | None = None,
    duration: float | None = None,
    baseline_degree: int = 1,
    airmass=None,
    t0_window: float | None = None,
    min_depth: float = 0.0,
    max_depth: float = 0.5,
) -> TransitFit:
    """Fit a trapezoidal transit times a polynomial baseline to a light curve.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times, e.g. BJD_TDB in days.
    flux, flux_err : array_like, shape (n,)
        Normalised differential flux and its 1-sigma error. Non-finite points are ignored.
    t0 : float, optional
        Guess of the mid-time (e.g. from an ephemeris); default: a grid over the data.
    duration : float, optional
        Guess of the total duration T14 (same unit as ``time``); default: a grid of 5 %
        to 60 % of the time span.
    baseline_degree : int
        Degree of the polynomial baseline in time (0, 1 or 2).
    airmass : array_like, shape (n,), optional
        Adds a term linear in airmass to the baseline.
    t0_window : float, optional
        Half-width of the allowed range of t0 around the guess; default the data range.
    min_depth, max_depth : float
        Bounds of the depth (a dimming: ``min_depth=0`` by default, so that noise bumps
        in the baseline cannot be fitted as "negative transits").

    Returns
    -------
    TransitFit

    Raises
    ------
    ValueError
        Too few points for the number of parameters, or bad ``baseline_degree``.

    Notes
    -----
    Least squares (``scipy.optimize.least_squares``, trust-region reflective) started
    from a grid of mid-times, durations and ingress fractions (around the guesses when
    given), keeping the best; errors are the square roots of the diagonal
    of ``(J^T J)^-1``, multiplied by ``sqrt(chi2_red)`` when it exceeds 1 and by the
    red-noise factor :func:`time_averaged_beta` of the residuals (Winn et al. 2008).
    """
    if baseline_degree not in (0, 1, 2):
        raise ValueError(f"baseline_degree must be 0, 1 or 2, got {baseline_degree!r}")
    t, f, e, am = _transit_inputs(time, flux, flux_err, airmass)
    am_mean = float(np.mean(am)) if am is not None else None
    nb = baseline_degree + 1 + (1 if am is not None else 0)
    npar = 4 + nb
    if t.size < npar + 3:
        raise ValueError(f"{t.size} usable points are too few to fit {npar} parameters")
    t_ref = float(0.5 * (t.min() + t.max()))
    # fit in times relative to t_ref: least_squares' finite-difference step is relative to
    # each parameter (~1.5e-8 |p|), i.e. ~50 min for a t0 in absolute JD, which wrecks the
    # Jacobian (the optimisation of t0 and every error derived from it)
    t = t - t_ref
    if t0 is not None:
        t0 = float(t0) - t_ref
    if not min_depth < max_depth:
        raise ValueError(f"need min_depth < max_depth, got {min_depth}, {max_depth}")
    problem = _TransitProblem(t, f, e, am, am_mean, baseline_degree)
    lo, hi = problem.bounds(t0, t0_window, min_depth, max_depth)
    best = problem.best_start(t0, duration, lo, hi, min_depth, max_depth)
    return problem.result(best, t_ref)


def _transit_inputs(time, flux, flux_err, airmass):
    """Finite points with positive errors, sorted in time: ``t, f, e`` and ``airmass``."""
    t = np.asarray(time, dtype=float)
    f = np.asarray(flux, dtype=float)
    e = np.asarray(flux_err, dtype=float)
    if not (t.shape == f.shape == e.shape):
        raise ValueError(f"time, flux, flux_err differ in shape: {t.shape}, {f.shape}, {e.shape}")
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    am = None
    if airmass is not None:
        am = np.asarray(airmass, dtype=float)
        if am.shape != t.shape:
            raise ValueError(f"airmass shape {am.shape} differs from time shape {t.shape}")
        good &= np.isfinite(am)
    t, f, e = t[good], f[good], e[good]
    am = am[good] if am is not None else None
    order = np.argsort(t)
    return t[order], f[order], e[order], (am[order] if am is not None else None)


@dataclass
class _TransitProblem:
    """The least-squares problem of :func:`fit_transit`, times relative to ``t_ref``.

    Parameters are ``[t0, depth, t14, f12, baseline...]`` with ``t12 = f12 * t14 / 2``.
    """

    t: np.ndarray
    f: np.ndarray
    e: np.ndarray
    am: np.ndarray | None
    am_mean: float | None
    degree: int

    @property
    def n_baseline(self) -> int:
        return self.degree + 1 + (1 if self.am is not None else 0)

    def baseline(self, p_b) -> np.ndarray:
        b = np.polyval(p_b[: self.degree + 1][::-1], self.t)
        if self.am is not None:
            b = b + p_b[-1] * (self.am - self.am_mean)
        return b

    def model(self, p) -> np.ndarray:
        t0_, depth, t14, f12 = p[:4]
        return trapezoid_model(self.t, t0_, depth, t14, f12 * 0.5 * t14) * self.baseline(p[4:])

    def resid(self, p) -> np.ndarray:
        return (self.f - self.model(p)) / self.e

    def span(self) -> float:
        return float(self.t.max() - self.t.min())

    def bounds(self, t0, t0_window, min_depth, max_depth):
        """Lower and upper bounds of the parameters."""
        t, span = self.t, self.span()
        cadence = float(np.median(np.diff(t))) if t.size > 1 else span
        if t0 is not None and t0_window is not None:
            lo_t0, hi_t0 = t0 - t0_window, t0 + t0_window
        else:
            lo_t0, hi_t0 = t.min() - 0.25 * span, t.max() + 0.25 * span
        min_dur = max(3 * cadence, 0.02 * span)
        nb = self.n_baseline
        lo = [lo_t0, min_depth, min_dur, 0.02] + [-np.inf] * nb
        hi = [hi_t0, max_depth, 2.0 * span, 1.0] + [np.inf] * nb
        return lo, hi

    def best_start(self, t0, duration, lo, hi, min_depth, max_depth):
        """Best least-squares solution over a grid of starts.

        The trapezoid's chi-square surface has many local minima (it is piecewise
        smooth in t0 and degenerate between depth and ingress): start from a grid of
        mid-times, durations and ingress fractions, keep the best.
        """
        t, f, span = self.t, self.f, self.span()
        if duration is not None:
            dur_grid = [duration * k for k in (0.75, 1.0, 1.3)]
        else:
            dur_grid = list(np.array([0.05, 0.1, 0.2, 0.35, 0.6]) * span)
        if t0 is not None:
            step = dur_grid[1 if duration is not None else 2]
            t0_grid = [t0 + k * step for k in (-0.25, 0.0, 0.25)]
        else:
            t0_grid = list(np.linspace(t.min(), t.max(), 13))
        base0 = [float(np.median(f))] + [0.0] * (self.n_baseline - 1)
        best = None
        for g0 in t0_grid:
            g0 = float(np.clip(g0, lo[0], hi[0]))
            for gd in dur_grid:
                gd = float(np.clip(gd, lo[2] * 1.01, hi[2] * 0.99))
                inside = np.abs(t - g0) < gd / 4
                outside = np.abs(t - g0) > gd / 2
                if inside.any() and outside.any():
                    d0 = 1.0 - np.median(f[inside]) / np.median(f[outside])
                else:
                    d0 = 0.01
                d0 = float(np.clip(d0, min_depth + 0.05 * (max_depth - min_depth), 0.9 * max_depth))
                for g12 in (0.2, 0.5, 0.9):
                    p0 = [g0, d0, gd, g12] + base0
                    try:
                        sol = optimize.least_squares(self.resid, p0, bounds=(lo, hi), x_scale="jac")
                    except ValueError:
                        continue
                    if best is None or sol.cost < best.cost:
                        best = sol
        if best is None:
            raise ValueError("the transit fit failed from every starting point")
        return best

    def result(self, best, t_ref: float) -> TransitFit:
        """The :class:`TransitFit` of solution ``best``, errors scaled (Winn et al. 2008)."""
        p, t = best.x, self.t
        npar = len(p)
        chi2 = float(np.sum(self.resid(p) ** 2))
        dof = int(t.size - npar)
        with quiet(RuntimeWarning):
            try:
                cov = np.linalg.pinv(best.jac.T @ best.jac)
            except np.linalg.LinAlgError:
                cov = np.full((npar, npar), np.nan)
        t14 = float(p[2])
        t12 = float(p[3] * 0.5 * t14)
        res = self.f - self.model(p)
        beta = time_averaged_beta(res)
        scale = max(1.0, math.sqrt(chi2 / dof)) if dof > 0 else 1.0
        scale *= beta
        perr = np.sqrt(np.clip(np.diag(cov), 0, None)) * scale
        # error of T12 from those of f12 and T14 (first order, ignoring their covariance)
        t12_err = float(math.hypot(perr[3] * 0.5 * t14, p[3] * 0.5 * perr[2]))
        oot = np.abs(t - p[0]) > 0.5 * t14
        oot_rms = float(np.std(res[oot], ddof=1)) if oot.sum() > 2 else float("nan")
        return TransitFit(
            t0=float(p[0]) + t_ref,
            t0_err=float(perr[0]),
            depth=float(p[1]),
            depth_err=float(perr[1]),
            t14=t14,
            t14_err=float(perr[2]),
            t12=t12,
            t12_err=t12_err,
            baseline=np.asarray(p[4:], dtype=float),
            t_ref=t_ref,
            chi2=chi2,
            dof=dof,
            rms=float(np.std(res, ddof=1)),
            oot_rms=oot_rms,
            beta=float(beta),
            error_scale=float(scale),
            n_points=int(t.size),
            _degree=self.degree,
            _airmass_mean=self.am_mean,
        )
