"""Layer 2 (private): the likelihood of :mod:`astrodart.photometry.transit_model`.

A batman model (Kreidberg 2015) re-evaluated on fixed times, and the joint problem of a
transit times a systematics model linear in its coefficients, the linear part solved by
weighted least squares for every trial of the non-linear parameters (vectorised over the
walkers of emcee, Foreman-Mackey et al. 2013).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import optimize

_REGRESSORS = ("airmass", "fwhm", "sky", "x", "y")
_PRIOR = {"rp": (0.005, 0.5), "a": (1.5, 300.0)}


class _BatmanCurve:
    """A batman model on fixed times, re-evaluated for new parameters (fast path)."""

    def __init__(self, t: np.ndarray, period: float, u: tuple):
        import batman

        p = batman.TransitParams()
        p.t0, p.per, p.rp, p.a, p.inc = 0.0, float(period), 0.1, 10.0, 90.0
        p.ecc, p.w, p.limb_dark, p.u = 0.0, 90.0, "quadratic", list(u)
        self.params = p
        self.model = batman.TransitModel(p, t)

    def __call__(self, t0, rp, a_rs, b) -> np.ndarray:
        p = self.params
        p.t0, p.rp, p.a = float(t0), float(rp), float(a_rs)
        p.inc = math.degrees(math.acos(min(1.0, float(b) / float(a_rs))))
        return self.model.light_curve(p)


class _Problem:
    """The joint transit + linear systematics problem on times relative to ``t_ref``."""

    def __init__(self, t, f, e, design: np.ndarray, curve: _BatmanCurve, t0_prior,
                 gauss: dict | None = None):
        self.t, self.f, self.e, self.design, self.curve = t, f, e, design, curve
        self.t0_prior = t0_prior  # (mean, sigma) Gaussian, or (lo, hi, None) uniform
        self.gauss = gauss or {}  # column of theta -> (mean, sigma): user's priors
        self.scale = 1.0

    def linear(self, transit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted least-squares coefficients and the model for one transit curve."""
        a = transit[:, None] * self.design
        coef, *_ = np.linalg.lstsq(a / self.e[:, None], self.f / self.e, rcond=None)
        return coef, a @ coef

    def resid(self, theta) -> np.ndarray:
        _, model = self.linear(self.curve(*theta))
        return (self.f - model) / self.e

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """Log prior of parameter rows ``(t0, rp, a_rs, b)``; -inf outside."""
        t0, rp, a, b = theta.T
        ok = ((rp > _PRIOR["rp"][0]) & (rp < _PRIOR["rp"][1]) & (a > _PRIOR["a"][0])
              & (a < _PRIOR["a"][1]) & (b >= 0) & (b < 1 + rp) & (b < a))
        if self.t0_prior[-1] is None:
            ok &= (t0 > self.t0_prior[0]) & (t0 < self.t0_prior[1])
            lp = np.zeros(len(theta))
        else:
            lp = -0.5 * ((t0 - self.t0_prior[0]) / self.t0_prior[1]) ** 2
        for col, (mean, sigma) in self.gauss.items():
            lp = lp - 0.5 * ((theta[:, col] - mean) / sigma) ** 2
        return np.where(ok, lp, -np.inf)

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """Vectorised log posterior (rows of walkers); linear terms solved in a batch."""
        lp = self.log_prior(theta)
        good = np.isfinite(lp)
        if not good.any():
            return lp
        transits = np.stack([self.curve(*row) for row in theta[good]])
        w = 1.0 / (self.e * self.scale)
        a = transits[:, :, None] * self.design[None] * w[None, :, None]
        y = self.f * w
        at = a.transpose(0, 2, 1)
        coef = np.linalg.solve(at @ a, at @ y[:, None])
        chi2 = np.sum((y[None] - (a @ coef)[..., 0]) ** 2, axis=1)
        lp[good] += -0.5 * chi2
        return lp

    def least_squares(self, starts, lo_t0, hi_t0):
        """Best ``scipy.optimize.least_squares`` solution over the starting points."""
        lo = [lo_t0, _PRIOR["rp"][0], _PRIOR["a"][0], 0.0]
        hi = [hi_t0, _PRIOR["rp"][1], _PRIOR["a"][1], 1.0]
        best = None
        for p0 in starts:
            p0 = np.clip(p0, np.add(lo, 1e-6), np.subtract(hi, 1e-6))
            sol = optimize.least_squares(self.resid, p0, bounds=(lo, hi), x_scale="jac")
            if best is None or sol.cost < best.cost:
                best = sol
        return best


def _inputs(time, flux, flux_err, regressors: dict | None):
    """Finite points with positive errors, sorted in time, and the standardised regressors."""
    t, f, e = (np.asarray(v, dtype=float) for v in (time, flux, flux_err))
    if not (t.ndim == 1 and t.shape == f.shape == e.shape):
        raise ValueError(f"time, flux, flux_err must be 1-D of one shape, got {t.shape}, "
                         f"{f.shape}, {e.shape}")
    regs = {}
    for name, values in (regressors or {}).items():
        if name not in _REGRESSORS:
            raise ValueError(f"regressors: {name!r} is not one of {', '.join(_REGRESSORS)}")
        if values is not None:
            regs[name] = np.asarray(values, dtype=float)
            if regs[name].shape != t.shape:
                raise ValueError(f"regressors[{name!r}] has shape {regs[name].shape}, "
                                 f"expected {t.shape}")
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    for v in regs.values():
        good &= np.isfinite(v)
    order = np.argsort(t[good])
    t, f, e = t[good][order], f[good][order], e[good][order]
    z = {}
    for name, v in regs.items():
        v = v[good][order]
        sd = float(np.std(v))
        if not sd > 0:
            raise ValueError(f"regressors[{name!r}] is constant: it cannot detrend")
        z[name] = (v - v.mean()) / sd
    return t, f, e, z


def _design(tau: np.ndarray, degree: int, columns: list[np.ndarray]) -> np.ndarray:
    """Columns of the systematics model: time powers, then regressors."""
    cols = [tau ** k for k in range(degree + 1)] + list(columns)
    return np.column_stack(cols)


def _candidate_sets(names: list[str]) -> list[tuple]:
    """Every subset of the regressor names, the empty set first."""
    return [c for k in range(len(names) + 1) for c in itertools.combinations(names, k)]
