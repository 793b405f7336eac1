"""Layer 2: differential light curves against a weighted ensemble of comparison stars.

Pure functions on light-curve arrays: no file I/O, no printing.

Method: a weighted artificial comparison star whose weights are iterated as the inverse
variance of each comparison relative to the others (Broeg, Fernandez & Neuhaeuser 2005,
AN 326, 134); comparisons whose scatter exceeds their expected noise far more than the
rest's are declared variable and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from astrodart.calibration.noise import robust_std

__all__ = ["EnsembleResult", "ensemble_light_curve"]

log = logging.getLogger("astrodart")


@dataclass
class EnsembleResult:
    """A differential light curve against a weighted ensemble of comparison stars.

    Parameters
    ----------
    rel_flux, rel_flux_err : numpy.ndarray, shape (n,)
        Target flux divided by the ensemble, normalised to a median of 1 over the
        normalisation points, and its 1-sigma error. NaN at unusable points.
    reference, reference_err : numpy.ndarray, shape (n,)
        The ensemble (weighted mean of the median-normalised comparisons) and its error.
    weights : numpy.ndarray, shape (m,)
        Final weight of each comparison (sum 1; 0 for variable or unusable ones).
    comparison_curves : numpy.ndarray, shape (m, n)
        Each comparison divided by the ensemble of the *other* used comparisons,
        normalised to 1 (for diagnostics and plots).
    diagnostics : astropy.table.Table
        One row per comparison: ``comparison`` (1-based), ``median_flux``, ``weight``,
        ``rms`` (scatter of its comparison curve), ``expected_rms`` (from its errors and
        the others'), ``excess`` (rms / expected), ``chi2_red``, ``variable`` (bool),
        ``used`` (bool).
    valid : numpy.ndarray of bool, shape (n,)
        Points where the differential flux is defined.
    iterations : int
        Weight iterations run.
    """

    rel_flux: np.ndarray
    rel_flux_err: np.ndarray
    reference: np.ndarray
    reference_err: np.ndarray
    weights: np.ndarray
    comparison_curves: np.ndarray
    diagnostics: Table = field(repr=False)
    valid: np.ndarray = field(repr=False)
    iterations: int = 0

    @property
    def rms(self) -> float:
        """Point-to-point scatter (standard deviation) of the valid differential fluxes."""
        v = self.rel_flux[self.valid]
        return float(np.std(v, ddof=1)) if v.size > 1 else float("nan")


def _weighted_ref(c, e2, ok, w, use):
    """Weighted mean over comparisons ``use`` at each time, and its error."""
    ww = np.where(ok & use[:, None], w[:, None], 0.0)
    s = ww.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(s > 0, (ww * np.where(ok, c, 0.0)).sum(axis=0) / s, np.nan)
        err = np.where(s > 0, np.sqrt((ww**2 * np.where(ok, e2, 0.0)).sum(axis=0)) / s, np.nan)
    return ref, err


def ensemble_light_curve(
    target_flux,
    target_err,
    comp_flux,
    comp_err,
    *,
    valid=None,
    norm_mask=None,
    variable_threshold: float = 3.0,
    max_iter: int = 30,
    tol: float = 1e-4,
) -> EnsembleResult:
    """Differential light curve of a target against a weighted comparison ensemble.

    Parameters
    ----------
    target_flux, target_err : array_like, shape (n,)
        Target flux and 1-sigma error per frame (any consistent unit).
    comp_flux, comp_err : array_like, shape (m, n)
        Comparison fluxes and errors, one row per comparison star.
    valid : array_like of bool, shape (n,) or (m + 1, n), optional
        Points allowed in the computation (e.g. unflagged ones); a 2-D mask gives one row
        for the target then one per comparison. Non-finite and non-positive fluxes are
        always excluded.
    norm_mask : array_like of bool, shape (n,), optional
        Points defining the normalisation of the target curve (e.g. out of transit);
        default all valid points.
    variable_threshold : float
        A comparison whose ``excess`` (rms / expected rms) exceeds this factor times the
        median excess of the used comparisons is declared variable and dropped (needs at
        least 3 comparisons).
    max_iter : int
        Maximum weight iterations.
    tol : float
        Convergence tolerance on the relative change of the weights.

    Returns
    -------
    EnsembleResult

    Raises
    ------
    ValueError
        Shapes inconsistent or no usable comparison.

    Notes
    -----
    Broeg et al. (2005): each comparison is normalised by its median; starting from
    inverse-variance weights of the photometric errors, each comparison's light curve
    relative to the weighted mean of the others is computed and its weight set to the
    inverse of that curve's variance; this is iterated to convergence, so noisy and
    variable stars lose weight automatically. The target is divided by the final
    weighted mean and normalised.
    """
    tf, te, cf, ce, vt, vc = _ensemble_inputs(target_flux, target_err, comp_flux, comp_err, valid)
    m, n = cf.shape
    ok = vc & np.isfinite(cf) & np.isfinite(ce) & (cf > 0) & (ce > 0)
    med = np.array([np.median(cf[i, ok[i]]) if ok[i].any() else np.nan for i in range(m)])
    usable = np.isfinite(med) & (ok.sum(axis=1) >= max(3, n // 4))
    if not usable.any():
        raise ValueError("no comparison star has enough usable points")
    with np.errstate(invalid="ignore", divide="ignore"):
        c = cf / med[:, None]
        e2 = (ce / med[:, None]) ** 2
    w = np.zeros(m)
    for i in range(m):
        if usable[i]:
            w[i] = 1.0 / np.median(e2[i, ok[i]])
    state = _EnsembleState(
        w=w,
        use=usable.copy(),
        variable=np.zeros(m, bool),
        rms=np.full(m, np.nan),
        expected=np.full(m, np.nan),
        chi2=np.full(m, np.nan),
        curves=np.full((m, n), np.nan),
    )
    while True:
        _iterate_weights(state, c, e2, ok, max_iter, tol)
        if not _drop_variables(state, variable_threshold):
            break
    ref, ref_err = _weighted_ref(c, e2, ok, state.w, state.use)
    rel, rel_err, good = _target_curve(tf, te, vt, ref, ref_err, norm_mask)
    wsum = state.w[state.use].sum()
    weights = np.where(state.use, state.w / wsum if wsum > 0 else 0.0, 0.0)
    return EnsembleResult(
        rel_flux=rel,
        rel_flux_err=rel_err,
        reference=ref,
        reference_err=ref_err,
        weights=weights,
        comparison_curves=state.curves,
        diagnostics=_diagnostics(state, med, weights),
        valid=good,
        iterations=state.iterations,
    )


def _ensemble_inputs(target_flux, target_err, comp_flux, comp_err, valid):
    """Checked arrays: target ``(n,)``, comparisons ``(m, n)``, validity of both."""
    tf = np.asarray(target_flux, dtype=float).ravel()
    te = np.asarray(target_err, dtype=float).ravel()
    cf = np.atleast_2d(np.asarray(comp_flux, dtype=float))
    ce = np.atleast_2d(np.asarray(comp_err, dtype=float))
    n = tf.size
    if te.shape != tf.shape or cf.shape[1] != n or ce.shape != cf.shape:
        raise ValueError(
            f"shapes differ: target {tf.shape}/{te.shape}, comparisons "
            f"{cf.shape}/{ce.shape} (expected (m, {n}))"
        )
    m = cf.shape[0]
    if m == 0:
        raise ValueError("at least one comparison star is needed")
    if valid is None:
        return tf, te, cf, ce, np.ones(n, bool), np.ones((m, n), bool)
    v = np.asarray(valid, dtype=bool)
    if v.shape == (n,):
        return tf, te, cf, ce, v, np.broadcast_to(v, (m, n))
    if v.shape == (m + 1, n):
        return tf, te, cf, ce, v[0], v[1:]
    raise ValueError(f"valid must have shape ({n},) or ({m + 1}, {n}), got {v.shape}")


@dataclass
class _EnsembleState:
    """Weights and per-comparison diagnostics while the ensemble iterates (shape (m,))."""

    w: np.ndarray
    use: np.ndarray
    variable: np.ndarray
    rms: np.ndarray
    expected: np.ndarray
    chi2: np.ndarray
    curves: np.ndarray
    iterations: int = 0


def _iterate_weights(state: _EnsembleState, c, e2, ok, max_iter: int, tol: float) -> None:
    """Broeg et al. (2005) iteration: each used comparison's weight becomes the inverse
    variance of its curve relative to the weighted others, until the weights settle."""
    for _ in range(max_iter):
        state.iterations += 1
        w_new = state.w.copy()
        for i in np.nonzero(state.use)[0]:
            others = state.use.copy()
            others[i] = False
            if not others.any():
                state.curves[i] = c[i]
                state.rms[i] = robust_std(c[i][ok[i]], clip=5)
                state.expected[i] = float(np.sqrt(np.median(e2[i, ok[i]])))
                state.chi2[i] = np.nan
                continue
            ref, ref_err = _weighted_ref(c, e2, ok, state.w, others)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = c[i] / ref
                rerr = r * np.sqrt(e2[i] / c[i] ** 2 + (ref_err / ref) ** 2)
            good = ok[i] & np.isfinite(r)
            if good.sum() < 3:
                continue
            r = r / np.median(r[good])
            state.curves[i] = np.where(good, r, np.nan)
            state.rms[i] = robust_std(r[good], clip=5)
            state.expected[i] = float(np.median(rerr[good]))
            state.chi2[i] = float(np.mean(((r[good] - 1.0) / rerr[good]) ** 2))
            if np.isfinite(state.rms[i]) and state.rms[i] > 0:
                w_new[i] = 1.0 / state.rms[i] ** 2
        w_new[~state.use] = 0.0
        change = np.max(np.abs(w_new - state.w) / np.where(state.w > 0, state.w, 1.0))
        state.w = w_new
        if change < tol:
            break


def _drop_variables(state: _EnsembleState, variable_threshold: float) -> bool:
    """Drop the comparisons whose excess scatter marks them variable; whether any was."""
    if state.use.sum() < 3:
        return False
    excess = state.rms / state.expected
    base = np.nanmedian(excess[state.use])
    newly = state.use & (excess > variable_threshold * base)
    if not newly.any():
        return False
    for i in np.nonzero(newly)[0]:
        log.info(
            "comparison %d looks variable (rms %.4g vs expected %.4g); dropped",
            i + 1,
            state.rms[i],
            state.expected[i],
        )
    state.variable |= newly
    state.use &= ~newly
    state.w[~state.use] = 0.0
    return True


def _target_curve(tf, te, vt, ref, ref_err, norm_mask):
    """Target over the ensemble, normalised to a median of 1 over ``norm_mask``."""
    good = vt & np.isfinite(tf) & np.isfinite(te) & (tf > 0) & np.isfinite(ref) & (ref > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = tf / ref
        rel_err = rel * np.sqrt((te / tf) ** 2 + (ref_err / ref) ** 2)
    nm = good if norm_mask is None else (good & np.asarray(norm_mask, dtype=bool))
    if not nm.any():
        nm = good
    norm = np.median(rel[nm]) if nm.any() else np.nan
    rel = np.where(good, rel / norm, np.nan)
    rel_err = np.where(good, rel_err / norm, np.nan)
    return rel, rel_err, good


def _diagnostics(state: _EnsembleState, med, weights) -> Table:
    """One row per comparison (see :attr:`EnsembleResult.diagnostics`)."""
    diag = Table(
        {
            "comparison": np.arange(1, len(med) + 1),
            "median_flux": med,
            "weight": weights,
            "rms": state.rms,
            "expected_rms": state.expected,
            "excess": state.rms / state.expected,
            "chi2_red": state.chi2,
            "variable": state.variable,
            "used": state.use,
        }
    )
    diag.meta["method"] = "Broeg et al. 2005 iterative inverse-variance weighting"
    return diag
