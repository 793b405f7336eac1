"""Layer 2: a physical transit model fitted with detrending, and its posteriors.

Pure functions on light-curve arrays: no file I/O, no printing.

Method
------
* Model: the analytic transit of a limb-darkened star by an opaque sphere (Mandel & Agol
  2002, ApJ 580, L171) computed by ``batman`` (Kreidberg 2015, PASP 127, 1161), with
  quadratic limb darkening, a circular orbit and a fixed (user-given) period. Free
  non-linear parameters: mid-time ``t0``, radius ratio ``Rp/Rs``, scaled semi-major axis
  ``a/Rs`` and impact parameter ``b``.
* Baseline and detrending: the transit is multiplied by a systematics model linear in its
  coefficients, ``c0 + c1 (t - t_ref) + sum_j d_j z_j`` with ``z_j`` the standardised
  regressors (airmass, FWHM, sky, centroid x and y). The linear coefficients are fitted
  jointly with the transit: for every trial of the non-linear parameters they are solved
  by weighted linear least squares (profiled), so the transit is never fitted to data
  detrended beforehand.
* Model selection: every subset of the given regressors is fitted (least squares,
  ``scipy.optimize.least_squares``) and the subset of least Bayesian information
  criterion ``BIC = chi2 + k ln n`` (Schwarz 1978, Ann. Stat. 6, 461) is kept; the BIC of
  every subset is recorded.
* Posteriors: the affine-invariant ensemble sampler ``emcee`` (Foreman-Mackey et al.
  2013, PASP 125, 306; Goodman & Weare 2010), started around the least-squares solution,
  with the errors scaled as in :func:`astrodart.photometry.transit.fit_transit`
  (``sqrt(chi2_red)`` when above 1, times the red-noise factor beta of Winn et al. 2008).
  Priors: uniform in ``Rp/Rs`` (0.005-0.5), ``b`` (0 to ``1 + Rp/Rs``) and ``a/Rs``
  (1.5-300); on ``t0`` a Gaussian at the ephemeris' predicted mid-time with its
  propagated error (``sigma^2 = sigma_Tc^2 + (E sigma_P)^2``) when an ephemeris is given,
  otherwise uniform over the night; optional Gaussian priors on ``a/Rs`` and ``b``.
* Limb darkening: :data:`LIMB_DARKENING` (see there), or the user's ``u1, u2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from astrodart.photometry._transit_likelihood import (
    _REGRESSORS,
    _BatmanCurve,
    _candidate_sets,
    _design,
    _inputs,
    _Problem,
)
from astrodart.photometry.transit import time_averaged_beta

__all__ = [
    "LIMB_DARKENING",
    "BatmanFit",
    "Ephemeris",
    "batman_light_curve",
    "fit_batman_transit",
    "limb_darkening",
    "t14_duration",
]

#: Quadratic limb-darkening coefficients ``(u1, u2)`` of a Sun-like dwarf (Teff 5750 K,
#: log g 4.5, [Fe/H] 0) per filter, approximate values of the kind tabulated by Claret &
#: Bloemen (2011, A&A 529, A75, ATLAS models; not yet checked entry by entry against the
#: table). ``'clear'`` (also ``'CBB'``, a clear blue-blocking filter) is taken as R-like.
#: Pass ``u=(u1, u2)`` for a given star.
LIMB_DARKENING = {
    "U": (0.76, 0.08), "B": (0.63, 0.18), "V": (0.46, 0.26), "R": (0.37, 0.28),
    "I": (0.29, 0.28), "clear": (0.40, 0.27), "CBB": (0.40, 0.27),
    "g": (0.56, 0.22), "r": (0.39, 0.28), "i": (0.31, 0.28),
}



@dataclass
class Ephemeris:
    """A linear ephemeris ``Tc + E P`` with its errors (times in days, e.g. BJD_TDB).

    Parameters
    ----------
    tc : float
        Reference mid-transit time.
    period : float
        Orbital period, days (> 0).
    tc_err, period_err : float
        1-sigma errors of ``tc`` and ``period`` (>= 0).

    Raises
    ------
    ValueError
        Non-finite values, a period <= 0 or negative errors.
    """

    tc: float
    period: float
    tc_err: float = 0.0
    period_err: float = 0.0

    def __post_init__(self):
        vals = (self.tc, self.period, self.tc_err, self.period_err)
        if not all(math.isfinite(float(v)) for v in vals) or self.period <= 0:
            raise ValueError(f"ephemeris {vals!r}: need finite values and period > 0")
        if self.tc_err < 0 or self.period_err < 0:
            raise ValueError(f"ephemeris errors must be >= 0, got {self.tc_err}, "
                             f"{self.period_err}")

    def predict(self, time: float) -> tuple[int, float, float]:
        """The transit nearest to ``time``.

        Parameters
        ----------
        time : float
            A time in the night (days).

        Returns
        -------
        (int, float, float)
            Epoch ``E``, predicted mid-time ``Tc + E P`` and its error
            ``sqrt(tc_err^2 + (E period_err)^2)``.
        """
        epoch = round((float(time) - self.tc) / self.period)
        err = math.hypot(self.tc_err, epoch * self.period_err)
        return epoch, self.tc + epoch * self.period, err


def batman_light_curve(time, t0, rp, a_rs, b, period, u=(0.4, 0.27)) -> np.ndarray:
    """A quadratically limb-darkened transit (Mandel & Agol 2002) computed by batman.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times, days.
    t0 : float
        Mid-transit time, days.
    rp : float
        Radius ratio ``Rp/Rs``.
    a_rs : float
        Semi-major axis in stellar radii.
    b : float
        Impact parameter (``a/Rs cos i``), ``0 <= b < a_rs``.
    period : float
        Orbital period, days (circular orbit).
    u : (float, float)
        Quadratic limb-darkening coefficients.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Relative flux, 1 out of transit.

    Raises
    ------
    ValueError
        ``b >= a_rs`` or non-positive ``a_rs``/``period``.
    """
    if not (a_rs > 0 and period > 0 and 0 <= b < a_rs):
        raise ValueError(f"need a_rs > 0, period > 0, 0 <= b < a_rs; got a_rs={a_rs}, "
                         f"period={period}, b={b}")
    curve = _BatmanCurve(np.asarray(time, dtype=float), period, tuple(u))
    return curve(t0, rp, a_rs, b)


def t14_duration(period, rp, a_rs, b):
    """Total duration T14 of a circular-orbit transit (Winn 2010, eq. 14), vectorised.

    Parameters
    ----------
    period : float
        Orbital period, days.
    rp, a_rs, b : float or numpy.ndarray
        Radius ratio, scaled semi-major axis, impact parameter.

    Returns
    -------
    float or numpy.ndarray
        T14 in days (0 for ``b >= 1 + rp``).
    """
    rp, a_rs, b = (np.asarray(v, dtype=float) for v in (rp, a_rs, b))
    sin_i = np.sqrt(np.clip(1.0 - (b / a_rs) ** 2, 1e-12, None))
    arg = np.sqrt(np.clip((1.0 + rp) ** 2 - b ** 2, 0.0, None)) / (a_rs * sin_i)
    return period / np.pi * np.arcsin(np.clip(arg, 0.0, 1.0))


@dataclass
class BatmanFit:
    """Result of :func:`fit_batman_transit` (times in days, e.g. BJD_TDB).

    Parameters
    ----------
    t0, t0_err : float
        Posterior median of the mid-time and half the width of its 68 % interval.
    t0_interval : (float, float)
        The 16th and 84th percentiles of ``t0``.
    rp, rp_err : float
        Radius ratio ``Rp/Rs`` (median, half 68 % width).
    depth, depth_err : float
        ``(Rp/Rs)^2`` (median, half 68 % width).
    t14, t14_err : float
        Total duration (Winn 2010, eq. 14), days.
    a_rs, a_rs_err, b, b_err : float
        Scaled semi-major axis and impact parameter.
    period : float
        The fixed period, days.
    u : (float, float)
        Quadratic limb-darkening coefficients used.
    epoch : int or None
        Epoch of the transit in the ephemeris.
    oc_min, oc_err_min : float or None
        Observed minus calculated mid-time, minutes, and its error (the fit's and the
        ephemeris' combined); None without an ephemeris.
    regressors : tuple of str
        The detrending regressors chosen (least BIC).
    bic : dict
        BIC of every candidate set, keyed ``'none'`` or ``'airmass+fwhm'`` etc.
    coefficients : numpy.ndarray
        Linear coefficients of the best least-squares fit: constant, time powers (in
        ``t - t_ref``), then one per standardised regressor.
    t_ref : float
        Reference time of the baseline.
    chi2, dof : float, int
        Chi-square (given errors) and degrees of freedom of the least-squares fit.
    rms : float
        Standard deviation of the residuals.
    beta, error_scale : float
        Red-noise factor and total factor applied to the errors in the likelihood.
    acceptance : float
        Mean acceptance fraction of the sampler.
    chain : numpy.ndarray, shape (n_samples, 4)
        Flattened posterior samples of ``t0, rp, a_rs, b`` after burn-in.
    time, flux, flux_err, systematics : numpy.ndarray, shape (n,)
        The points fitted and the fitted systematics model at them (divide the flux by
        it to detrend).
    """

    t0: float
    t0_err: float
    t0_interval: tuple
    rp: float
    rp_err: float
    depth: float
    depth_err: float
    t14: float
    t14_err: float
    a_rs: float
    a_rs_err: float
    b: float
    b_err: float
    period: float
    u: tuple
    epoch: int | None
    oc_min: float | None
    oc_err_min: float | None
    regressors: tuple
    bic: dict
    coefficients: np.ndarray
    t_ref: float
    chi2: float
    dof: int
    rms: float
    beta: float
    error_scale: float
    acceptance: float
    chain: np.ndarray = field(repr=False)
    time: np.ndarray = field(repr=False)
    flux: np.ndarray = field(repr=False)
    flux_err: np.ndarray = field(repr=False)
    systematics: np.ndarray = field(repr=False)

    @property
    def n_points(self) -> int:
        """Number of points fitted."""
        return int(self.time.size)

    @property
    def labels(self) -> list[str]:
        """Names of the sampled parameters (columns of :attr:`chain`)."""
        return ["t0 - t_ref [d]", "Rp/Rs", "a/Rs", "b"]

    def transit(self, time) -> np.ndarray:
        """The median-parameter transit alone (normalised to 1).

        Parameters
        ----------
        time : array_like, shape (n,)
            Times, days.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Relative flux.
        """
        return batman_light_curve(time, self.t0, self.rp, self.a_rs, self.b, self.period,
                                  self.u)

    def model(self) -> np.ndarray:
        """The full model (transit times systematics) at the fitted points.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Model flux.
        """
        return self.transit(self.time) * self.systematics

    def to_dict(self) -> dict:
        """The scalar results, JSON-able (times BJD_TDB days, durations hours).

        Returns
        -------
        dict
            ``t0_bjd_tdb``, ``t0_err_min``, ``rp_rs``, ``depth``, ``duration_h``, ``a_rs``,
            ``b``, ``oc_min``, ``regressors``, ``bic`` and the fit statistics.
        """
        return {
            "t0_bjd_tdb": self.t0, "t0_err_min": self.t0_err * 1440.0,
            "t0_interval": [float(v) for v in self.t0_interval],
            "rp_rs": self.rp, "rp_rs_err": self.rp_err, "depth": self.depth,
            "depth_err": self.depth_err, "duration_h": self.t14 * 24.0,
            "duration_err_h": self.t14_err * 24.0, "a_rs": self.a_rs,
            "a_rs_err": self.a_rs_err, "b": self.b, "b_err": self.b_err,
            "period": self.period, "limb_darkening": list(self.u), "epoch": self.epoch,
            "oc_min": self.oc_min, "oc_err_min": self.oc_err_min,
            "regressors": list(self.regressors), "bic": dict(self.bic),
            "chi2_red": self.chi2 / self.dof if self.dof > 0 else None, "beta": self.beta,
            "rms": self.rms, "n_points": self.n_points, "acceptance": self.acceptance,
        }

    def summary(self) -> str:
        """A one-paragraph text summary.

        Returns
        -------
        str
            The posterior values with their errors, the O-C and the detrending chosen.
        """
        oc = ("" if self.oc_min is None else
              f" O-C = {self.oc_min:+.1f} +- {self.oc_err_min:.1f} min (epoch {self.epoch});")
        return (
            f"t0 = {self.t0:.5f} +- {self.t0_err:.5f} d ({self.t0_err * 1440:.1f} min);{oc}"
            f" Rp/Rs = {self.rp:.4f} +- {self.rp_err:.4f}; depth = {100 * self.depth:.3f} +- "
            f"{100 * self.depth_err:.3f} %; T14 = {24 * self.t14:.3f} +- "
            f"{24 * self.t14_err:.3f} h; a/Rs = {self.a_rs:.2f} +- {self.a_rs_err:.2f};"
            f" b = {self.b:.2f} +- {self.b_err:.2f}; detrending: "
            f"{'+'.join(self.regressors) or 'none'}; rms = {1e3 * self.rms:.2f} ppt;"
            f" beta = {self.beta:.2f}; n = {self.n_points}"
        )


def limb_darkening(filter_name: str | None = None, u=None) -> tuple[float, float]:
    """Quadratic limb-darkening coefficients for a filter, or the user's.

    Parameters
    ----------
    filter_name : str, optional
        A key of :data:`LIMB_DARKENING` (case-insensitive for one-letter Johnson-Cousins
        names; ``None`` or unknown names with ``u`` given are fine).
    u : (float, float), optional
        The user's coefficients; they win.

    Returns
    -------
    (float, float)
        ``(u1, u2)``.

    Raises
    ------
    ValueError
        Neither a known filter nor valid ``u`` (``u1 + u2 <= 1``, ``u1 >= 0``,
        ``u1 + 2 u2 >= 0``: Kipping 2013).
    """
    if u is not None:
        u1, u2 = (float(v) for v in u)
        if not (u1 >= 0 and u1 + u2 <= 1 and u1 + 2 * u2 >= 0):
            raise ValueError(f"u={u!r}: need u1 >= 0, u1 + u2 <= 1, u1 + 2 u2 >= 0")
        return u1, u2
    key = filter_name if filter_name in LIMB_DARKENING else str(filter_name).upper()
    if key not in LIMB_DARKENING:
        raise ValueError(f"filter {filter_name!r} has no limb-darkening entry: use one of "
                         f"{', '.join(LIMB_DARKENING)} or pass u=(u1, u2)")
    return LIMB_DARKENING[key]


def fit_batman_transit(
    time, flux, flux_err, *, ephemeris: Ephemeris | None = None,
    period: float | None = None, t0: float | None = None, duration: float | None = None,
    filter_name: str | None = "V", u=None, regressors: dict | None = None,
    baseline_degree: int = 1, n_walkers: int = 24, n_steps: int = 2000, n_burn: int = 500,
    seed: int | None = None, priors: dict | None = None,
) -> BatmanFit:
    """Fit a limb-darkened transit (batman) jointly with detrending; posteriors by emcee.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times, days (BJD_TDB).
    flux, flux_err : array_like, shape (n,)
        Normalised differential flux and its 1-sigma error; non-finite points ignored.
    ephemeris : Ephemeris, optional
        Gives the period and a Gaussian prior on ``t0`` at the predicted mid-time.
    period : float, optional
        Period, days, when no ephemeris is given (fixed in the fit).
    t0, duration : float, optional
        Guesses of the mid-time and total duration (days); default: the ephemeris, else
        the box search (:func:`astrodart.photometry.transit_search.search_transit`).
    filter_name : str, optional
        Filter for :data:`LIMB_DARKENING`.
    u : (float, float), optional
        Quadratic limb-darkening coefficients (override the filter).
    regressors : dict, optional
        Detrending candidates, keys among ``'airmass', 'fwhm', 'sky', 'x', 'y'``, arrays
        of shape (n,). Every subset is tried; the one of least BIC is kept.
    baseline_degree : int
        Degree of the polynomial in time of the baseline (0, 1 or 2).
    n_walkers, n_steps, n_burn : int
        emcee walkers (even, >= 10), steps per walker and steps discarded.
    seed : int, optional
        Seed of the sampler's random numbers (reproducible chains).
    priors : dict, optional
        Gaussian priors ``{'a_rs': (mean, sigma), 'b': (mean, sigma)}``, e.g. ``a/Rs``
        from the stellar density or published values: one night rarely constrains ``b``,
        and grazing solutions with large ``Rp/Rs`` stay allowed without them.

    Returns
    -------
    BatmanFit

    Raises
    ------
    ValueError
        Bad arguments (named, with the value) or too few points.
    """
    if ephemeris is None and not (period is not None and period > 0):
        raise ValueError(f"give ephemeris= or a period > 0 (days), got period={period!r}")
    per = ephemeris.period if ephemeris is not None else float(period)
    if baseline_degree not in (0, 1, 2):
        raise ValueError(f"baseline_degree must be 0, 1 or 2, got {baseline_degree!r}")
    if n_walkers < 10 or n_walkers % 2 or not 0 <= n_burn < n_steps:
        raise ValueError(f"need an even n_walkers >= 10 and 0 <= n_burn < n_steps, got "
                         f"{n_walkers}, {n_burn}, {n_steps}")
    uu = limb_darkening(filter_name, u)
    gauss = _user_priors(priors)
    t, f, e, z = _inputs(time, flux, flux_err, regressors)
    if t.size < 4 + baseline_degree + 1 + len(z) + 5:
        raise ValueError(f"{t.size} usable points are too few for the transit fit")
    t_ref = float(0.5 * (t.min() + t.max()))
    tau = t - t_ref
    guess, t0_prior, epoch = _guesses(t, f, e, ephemeris, per, t0, duration, t_ref)
    curve = _BatmanCurve(tau, per, uu)
    chosen, bic = _select(tau, f, e, z, baseline_degree, curve, (t0_prior, gauss), guess)
    problem, sol = chosen
    chain, acceptance = _sample(problem, sol.x, n_walkers, n_steps, n_burn, seed)
    return _result(problem, sol, chain, acceptance, bic, t_ref, per, uu, ephemeris, epoch)


def _guesses(t, f, e, ephemeris, per, t0, duration, t_ref):
    """Starting points (relative to ``t_ref``), the t0 prior, the night's bounds, epoch."""
    epoch, depth = None, None
    if ephemeris is not None:
        epoch, pred, err = ephemeris.predict(t_ref)
        t0 = pred if t0 is None else t0
    if t0 is None:
        from astrodart.photometry.transit_search import search_transit

        found = search_transit(t, f, e, duration_prior=duration)
        t0 = found.t0
        duration = found.duration if duration is None else duration
        depth = found.depth if found.depth > 0 else None
    duration = 0.1 if duration is None else duration  # a hot Jupiter's ~2.4 h
    if depth is None:
        inside = np.abs(t - t0) < 0.25 * duration
        outside = np.abs(t - t0) > 0.6 * duration
        depth = (1 - np.median(f[inside]) / np.median(f[outside])
                 if inside.any() and outside.any() else 0.01)
    rp0 = float(np.sqrt(np.clip(depth, 1e-4, 0.2)))
    pad = 0.5 * duration
    night = (t.min() - t_ref - pad, t.max() - t_ref + pad)
    if ephemeris is not None and err > 0:
        prior = (pred - t_ref, err)
    else:
        prior = (night[0], night[1], None)
    starts = []
    for b0 in (0.2, 0.6):
        a0 = per / (np.pi * duration) * math.sqrt((1 + rp0) ** 2 - b0 ** 2)
        starts.append(np.array([t0 - t_ref, rp0, float(np.clip(a0, 2.0, 200.0)), b0]))
    return (starts, night), prior, epoch


def _user_priors(priors: dict | None) -> dict:
    """Validated Gaussian priors, keyed by the column of ``(t0, rp, a_rs, b)``."""
    out = {}
    for name, value in (priors or {}).items():
        if name not in ("a_rs", "b"):
            raise ValueError(f"priors: {name!r} is not one of 'a_rs', 'b'")
        try:
            mean, sigma = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"priors[{name!r}]={value!r}: give (mean, sigma)") from None
        if not (math.isfinite(mean) and sigma > 0):
            raise ValueError(f"priors[{name!r}]={value!r}: need a finite mean and sigma > 0")
        out[{"a_rs": 2, "b": 3}[name]] = (mean, sigma)
    return out


def _select(tau, f, e, z, degree, curve, t0_prior, guess):
    """Least-squares fits of every regressor subset; the one of least BIC, and all BICs.

    The chi-squares are taken with the errors scaled by ``sqrt(chi2_red)`` of the fullest
    model when above 1, so that underestimated errors do not favour extra terms.
    """
    starts, night = guess
    fits = {}
    start_x = None
    for names in _candidate_sets(sorted(z, key=_REGRESSORS.index)):
        design = _design(tau, degree, [z[k] for k in names])
        problem = _Problem(tau, f, e, design, curve, *t0_prior)
        trial = starts if start_x is None else [start_x] + starts[:1]
        sol = problem.least_squares(trial, *night)
        start_x = sol.x if start_x is None else start_x
        fits[names] = (problem, sol)
    full = max(fits, key=len)
    k_full = 4 + fits[full][0].design.shape[1]
    chi2_full = 2 * fits[full][1].cost
    s2 = max(1.0, chi2_full / max(1, tau.size - k_full))
    bic = {}
    for names, (problem, sol) in fits.items():
        k = 4 + problem.design.shape[1]
        bic[names] = 2 * sol.cost / s2 + k * math.log(tau.size)
    best = min(bic, key=bic.get)
    return fits[best], {("+".join(k) or "none"): float(v) for k, v in bic.items()}


def _sample(problem: _Problem, x0, n_walkers, n_steps, n_burn, seed):
    """emcee chain (flattened after burn-in) around ``x0``, errors scaled (Winn et al.)."""
    import emcee

    res = problem.resid(x0)
    dof = max(1, res.size - 4 - problem.design.shape[1])
    beta = time_averaged_beta(res * problem.e)
    problem.scale = max(1.0, math.sqrt(float(np.sum(res ** 2)) / dof)) * beta
    problem.beta = beta
    rng = np.random.default_rng(seed)
    width = np.array([2e-4, 2e-3, 0.05 * x0[2], 0.02])
    p0 = x0 + width * rng.standard_normal((n_walkers, 4))
    p0[:, 3] = np.abs(p0[:, 3])
    bad = ~np.isfinite(problem.log_prior(p0))
    p0[bad] = x0 + 1e-3 * width * rng.standard_normal((int(bad.sum()), 4))
    p0[:, 3] = np.abs(p0[:, 3])
    sampler = emcee.EnsembleSampler(n_walkers, 4, problem.log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(rng.integers(2**31)).get_state()
    sampler.run_mcmc(p0, n_steps, progress=False)
    chain = sampler.get_chain(discard=n_burn, flat=True)
    return chain, float(np.mean(sampler.acceptance_fraction))


def _median_err(x) -> tuple[float, float, float, float]:
    """Median, half the 68 % interval, and the interval (16th, 84th percentiles)."""
    lo, med, hi = np.percentile(x, [15.865, 50.0, 84.135])
    return float(med), float(0.5 * (hi - lo)), float(lo), float(hi)


def _result(problem, sol, chain, acceptance, bic, t_ref, per, u, ephemeris, epoch):
    """The :class:`BatmanFit` of a chain (times back to absolute)."""
    t0, t0_err, lo, hi = _median_err(chain[:, 0] + t_ref)
    rp, rp_err, *_ = _median_err(chain[:, 1])
    depth, depth_err, *_ = _median_err(chain[:, 1] ** 2)
    a, a_err, *_ = _median_err(chain[:, 2])
    b, b_err, *_ = _median_err(chain[:, 3])
    t14, t14_err, *_ = _median_err(t14_duration(per, chain[:, 1], chain[:, 2], chain[:, 3]))
    oc = oc_err = None
    if ephemeris is not None:
        _, pred, err = ephemeris.predict(t0)
        oc, oc_err = (t0 - pred) * 1440.0, math.hypot(t0_err, err) * 1440.0
    coef, model = problem.linear(problem.curve(*sol.x))
    transit = problem.curve(*sol.x)
    res = problem.f - model
    names = next(k for k in bic if np.isclose(bic[k], min(bic.values())))
    return BatmanFit(
        t0=t0, t0_err=t0_err, t0_interval=(lo, hi), rp=rp, rp_err=rp_err, depth=depth,
        depth_err=depth_err, t14=t14, t14_err=t14_err, a_rs=a, a_rs_err=a_err, b=b,
        b_err=b_err, period=per, u=tuple(u), epoch=epoch, oc_min=oc, oc_err_min=oc_err,
        regressors=() if names == "none" else tuple(names.split("+")), bic=bic,
        coefficients=coef, t_ref=t_ref, chi2=float(np.sum((res / problem.e) ** 2)),
        dof=int(res.size - 4 - coef.size), rms=float(np.std(res, ddof=1)),
        beta=float(problem.beta), error_scale=float(problem.scale), acceptance=acceptance,
        chain=chain, time=problem.t + t_ref, flux=problem.f, flux_err=problem.e,
        systematics=model / transit,
    )
