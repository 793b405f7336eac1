"""Layer 2: differential light curves against a weighted, vetted ensemble of comparisons.

Pure functions on light-curve arrays: no file I/O, no printing.

Method: a weighted artificial comparison star whose weights are iterated as the inverse
variance of each comparison relative to the others (Broeg, Fernandez & Neuhaeuser 2005,
AN 326, 134). The comparisons are vetted first and while the ensemble iterates
(:class:`VettingRules`): a comparison that is a known (catalogue) variable, saturated,
blended with a neighbour of comparable brightness or too faint is refused before any
weighting; then, one at a time (the worst first, as in the iterative ensembles of
Broeg et al. 2005 and AstroImageJ's comparison-star checks), a comparison whose own
curve against the ensemble of the others scatters far more than the others' do, or
shows a significant trend, is dropped as variable. Every dropped comparison keeps its
reason (:attr:`EnsembleResult.dropped`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from astrodart.calibration.noise import robust_std

__all__ = ["EnsembleResult", "VettingRules", "ensemble_light_curve", "vet_comparisons"]

log = logging.getLogger("astrodart")


@dataclass
class VettingRules:
    """When a comparison star is refused (see :func:`vet_comparisons`).

    Parameters
    ----------
    variable_threshold : float
        Variable by scatter: the robust rms of its curve against the others, over the
        rms its errors predict (``excess``), above this factor times the median excess
        of the comparisons in use (common noise such as scintillation cancels).
    trend_threshold : float
        Variable by trend: a straight line fitted to its curve in time has a slope this
        many sigma from zero (sigma from the point-to-point scatter) and a change over
        the night ``variable_threshold`` times the median of the others' changes.
    min_snr : float
        Too faint: median flux over error per point below this.
    max_saturated_fraction : float
        Saturated: more than this fraction of its points flagged saturated.
    blend_radius : float
        Blended: a neighbour (another given star) within this many FWHM ...
    blend_flux_ratio : float
        ... at least this fraction of the comparison's flux (comparable brightness).
    match_radius_arcsec, match_radius_px : float
        A known variable matches a comparison within these distances (sky or pixels).
    """

    variable_threshold: float = 3.0
    trend_threshold: float = 5.0
    min_snr: float = 10.0
    max_saturated_fraction: float = 0.0
    blend_radius: float = 3.0
    blend_flux_ratio: float = 0.1
    match_radius_arcsec: float = 5.0
    match_radius_px: float = 3.0


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
        Final weight of each comparison (sum 1; 0 for dropped or unusable ones).
    comparison_curves : numpy.ndarray, shape (m, n)
        Each comparison divided by the ensemble of the *other* used comparisons,
        normalised to 1 (for diagnostics and plots).
    diagnostics : astropy.table.Table
        One row per comparison: ``comparison`` (1-based), ``median_flux``, ``weight``,
        ``rms`` (scatter of its comparison curve), ``expected_rms`` (from its errors and
        the others'), ``excess`` (rms / expected), ``chi2_red``, ``snr`` (median per
        point), ``trend_sigma`` (slope of its curve over its error), ``variable`` (bool:
        dropped for scatter or trend), ``used`` (bool) and ``reason`` (why it was
        dropped; '' when used).
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

    @property
    def kept(self) -> list[int]:
        """Comparisons in the ensemble (1-based numbers)."""
        d = self.diagnostics
        return [int(c) for c, u in zip(d["comparison"], d["used"]) if u]

    @property
    def dropped(self) -> dict[int, str]:
        """Comparisons left out (1-based number -> reason)."""
        d = self.diagnostics
        return {int(c): str(r) for c, u, r in zip(d["comparison"], d["used"], d["reason"])
                if not u}


def _weighted_ref(c, e2, ok, w, use):
    """Weighted mean over comparisons ``use`` at each time, and its error."""
    ww = np.where(ok & use[:, None], w[:, None], 0.0)
    s = ww.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(s > 0, (ww * np.where(ok, c, 0.0)).sum(axis=0) / s, np.nan)
        err = np.where(s > 0, np.sqrt((ww**2 * np.where(ok, e2, 0.0)).sum(axis=0)) / s, np.nan)
    return ref, err


def vet_comparisons(comp_flux, comp_err, *, valid=None, saturated=None, positions=None,
                    fwhm: float | None = None, target_flux=None, names=None, coords=None,
                    known_variables=None, rules: VettingRules | None = None) -> dict[int, str]:
    """The comparison stars refused before any weighting, with the reason.

    Parameters
    ----------
    comp_flux, comp_err : array_like, shape (m, n)
        Comparison fluxes and errors, one row per comparison star.
    valid : array_like of bool, shape (m, n), optional
        Usable points (the S/N is taken over them); default the finite, positive ones.
    saturated : array_like of bool, shape (m, n), optional
        Points where the comparison is saturated (e.g. the ``SATURATED`` photometry flag).
    positions : array_like, shape (m + 1, 2), optional
        Pixel ``(x, y)`` of the target (first row) then of each comparison (e.g. the
        median over the frames): a neighbour closer than ``blend_radius`` x ``fwhm``
        with at least ``blend_flux_ratio`` of the comparison's flux blends it.
    fwhm : float, optional
        The stars' FWHM in pixels (needed for the blend test).
    target_flux : array_like, shape (n,), optional
        The target's flux (its brightness as a neighbour); default no target neighbour
        test by brightness (the target counts as bright).
    names : sequence of str, shape (m,), optional
        Comparison names (matched against names in ``known_variables``).
    coords : astropy.coordinates.SkyCoord, shape (m,), optional
        Comparison sky positions (matched against sky positions in ``known_variables``).
    known_variables : sequence, optional
        Known variables that must not be comparisons (e.g. from an offline VSX
        extract): names (str), sky positions (SkyCoord, scalar or array) or pixel
        positions ``(x, y)`` in the frame of ``positions``.
    rules : VettingRules, optional
        Thresholds (default :class:`VettingRules`).

    Returns
    -------
    dict
        0-based comparison index -> reason ('catalogue variable ...', 'saturated ...',
        'blended ...', 'too faint ...'); the first reason found wins.

    Raises
    ------
    ValueError
        Shapes that do not match the comparisons.
    """
    rules = rules or VettingRules()
    cf = np.atleast_2d(np.asarray(comp_flux, float))
    ce = np.atleast_2d(np.asarray(comp_err, float))
    m = cf.shape[0]
    ok = np.isfinite(cf) & np.isfinite(ce) & (cf > 0) & (ce > 0)
    if valid is not None:
        ok &= np.broadcast_to(np.asarray(valid, bool), cf.shape)
    reasons: dict[int, str] = {}
    for i, why in _catalogue_matches(known_variables, names, coords, positions, rules, m):
        reasons.setdefault(i, why)
    if saturated is not None:
        sat = np.broadcast_to(np.asarray(saturated, bool), cf.shape)
        frac = sat.mean(axis=1)
        for i in np.flatnonzero(frac > rules.max_saturated_fraction):
            reasons.setdefault(int(i), f"saturated in {int(sat[i].sum())} of {cf.shape[1]} "
                                       "frames")
    med = np.array([np.median(cf[i, ok[i]]) if ok[i].any() else np.nan for i in range(m)])
    for i, why in _blends(positions, fwhm, med, target_flux, rules, m):
        reasons.setdefault(i, why)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.array([np.median(cf[i, ok[i]] / ce[i, ok[i]]) if ok[i].any() else 0.0
                        for i in range(m)])
    for i in np.flatnonzero(snr < rules.min_snr):
        reasons.setdefault(int(i), f"too faint: S/N {snr[i]:.1f} per point < {rules.min_snr:g}")
    return reasons


def _catalogue_matches(known, names, coords, positions, rules, m):
    """(index, reason) of comparisons that match a known variable."""
    if known is None:
        return []
    from astropy.coordinates import SkyCoord

    items = [known] if isinstance(known, (str, SkyCoord)) else list(known)
    out = []
    norm = [None] * m if names is None else [" ".join(str(s).upper().split()) for s in names]
    for item in items:
        if isinstance(item, str):
            key = " ".join(item.upper().split())
            out += [(i, f"catalogue variable {item}") for i in range(m) if norm[i] == key]
        elif isinstance(item, SkyCoord):
            if coords is None:
                continue
            for one in np.atleast_1d(item) if not item.isscalar else [item]:
                sep = coords.separation(one).arcsec
                out += [(int(i), f"catalogue variable at {one.to_string('hmsdms', precision=1)}"
                         f" ({sep[i]:.1f} arcsec)")
                        for i in np.flatnonzero(sep < rules.match_radius_arcsec)]
        elif positions is not None:
            xy = np.asarray(item, float).ravel()[:2]
            d = np.hypot(*(np.asarray(positions, float)[1:] - xy).T)
            out += [(int(i), f"catalogue variable at pixel ({xy[0]:.1f}, {xy[1]:.1f})")
                    for i in np.flatnonzero(d < rules.match_radius_px)]
    return out


def _blends(positions, fwhm, med, target_flux, rules, m):
    """(index, reason) of comparisons with a bright neighbour among the given stars."""
    if positions is None or fwhm is None or not np.isfinite(fwhm):
        return []
    xy = np.asarray(positions, float)
    if xy.shape != (m + 1, 2):
        raise ValueError(f"positions must have shape ({m + 1}, 2) (target, then each "
                         f"comparison), got {xy.shape}")
    tflux = np.inf if target_flux is None else float(np.nanmedian(np.asarray(target_flux,
                                                                              float)))
    flux = np.concatenate([[tflux], med])
    out = []
    for i in range(m):
        d = np.hypot(*(xy - xy[i + 1]).T)
        d[i + 1] = np.inf
        near = (d < rules.blend_radius * fwhm) & (flux >= rules.blend_flux_ratio * med[i])
        if near.any():
            j = int(np.argmin(np.where(near, d, np.inf)))
            who = "the target" if j == 0 else f"comparison {j}"
            out.append((i, f"blended: {who} {d[j]:.1f} px away (< {rules.blend_radius:g} "
                           f"x FWHM {fwhm:.2f} px)"))
    return out


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
    time=None,
    vet: bool = True,
    rules: VettingRules | None = None,
    **vetting_inputs,
) -> EnsembleResult:
    """Differential light curve of a target against a weighted, vetted comparison ensemble.

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
        median excess of the used comparisons is dropped as variable (needs at least 3
        comparisons in use); also the factor of the trend test (:class:`VettingRules`).
    max_iter : int
        Maximum weight iterations.
    tol : float
        Convergence tolerance on the relative change of the weights.
    time : array_like, shape (n,), optional
        Times of the points (the trend test); default the point index.
    vet : bool
        Vet the comparisons (:func:`vet_comparisons` and the trend test); False keeps
        only the scatter test.
    rules : VettingRules, optional
        Vetting thresholds (default :class:`VettingRules` with ``variable_threshold``).
    **vetting_inputs
        ``saturated``, ``positions``, ``fwhm``, ``names``, ``coords``,
        ``known_variables``: passed to :func:`vet_comparisons`.

    Returns
    -------
    EnsembleResult
        With the kept and dropped comparisons and the reasons
        (:attr:`EnsembleResult.dropped`).

    Raises
    ------
    ValueError
        Shapes inconsistent, no usable comparison, or every comparison refused.

    Notes
    -----
    Broeg et al. (2005): each comparison is normalised by its median; starting from
    inverse-variance weights of the photometric errors, each comparison's light curve
    relative to the weighted mean of the others is computed and its weight set to the
    inverse of that curve's variance; this is iterated to convergence, so noisy stars
    lose weight. After each convergence the worst variable comparison (scatter or
    trend) is dropped and the weights iterate again, until none is left to drop. The
    target is divided by the final weighted mean and normalised.
    """
    tf, te, cf, ce, vt, vc = _ensemble_inputs(target_flux, target_err, comp_flux, comp_err, valid)
    m, n = cf.shape
    rules = rules or VettingRules(variable_threshold=variable_threshold)
    ok = vc & np.isfinite(cf) & np.isfinite(ce) & (cf > 0) & (ce > 0)
    med = np.array([np.median(cf[i, ok[i]]) if ok[i].any() else np.nan for i in range(m)])
    usable = np.isfinite(med) & (ok.sum(axis=1) >= max(3, n // 4))
    if not usable.any():
        raise ValueError("no comparison star has enough usable points")
    reasons = {i: "fewer than 3 usable points" for i in np.flatnonzero(~usable)}
    if vet:
        refused = vet_comparisons(cf, ce, valid=ok, target_flux=np.where(vt, tf, np.nan),
                                  rules=rules, **vetting_inputs)
        reasons.update({i: r for i, r in refused.items() if usable[i]})
        usable &= ~np.isin(np.arange(m), list(refused))
        if not usable.any():
            raise ValueError("every comparison star was refused: " + "; ".join(
                f"comparison {i + 1}: {r}" for i, r in sorted(reasons.items())))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = cf / med[:, None]
        e2 = (ce / med[:, None]) ** 2
    state = _EnsembleState.start(usable, c, e2, ok, reasons)
    t = np.arange(n, dtype=float) if time is None else np.asarray(time, float).ravel()
    while True:
        _iterate_weights(state, c, e2, ok, max_iter, tol)
        if not _drop_worst(state, rules, t if vet else None):
            break
    ref, ref_err = _weighted_ref(c, e2, ok, state.w, state.use)
    rel, rel_err, good = _target_curve(tf, te, vt, ref, ref_err, norm_mask)
    wsum = state.w[state.use].sum()
    weights = np.where(state.use, state.w / wsum if wsum > 0 else 0.0, 0.0)
    snr = np.array([np.median(cf[i, ok[i]] / ce[i, ok[i]]) if ok[i].any() else np.nan
                    for i in range(m)])
    return EnsembleResult(
        rel_flux=rel,
        rel_flux_err=rel_err,
        reference=ref,
        reference_err=ref_err,
        weights=weights,
        comparison_curves=state.curves,
        diagnostics=_diagnostics(state, med, weights, snr),
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
    trend: np.ndarray
    curves: np.ndarray
    reasons: dict
    iterations: int = 0

    @classmethod
    def start(cls, usable, c, e2, ok, reasons) -> _EnsembleState:
        """Inverse-variance weights of the photometric errors of the usable comparisons."""
        m, n = c.shape
        w = np.zeros(m)
        for i in np.flatnonzero(usable):
            w[i] = 1.0 / np.median(e2[i, ok[i]])
        nan = np.full(m, np.nan)
        return cls(w=w, use=usable.copy(), variable=np.zeros(m, bool), rms=nan.copy(),
                   expected=nan.copy(), chi2=nan.copy(), trend=nan.copy(),
                   curves=np.full((m, n), np.nan), reasons=dict(reasons))


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


def _trend(curve, t):
    """Change of a curve over the span of ``t`` from a straight-line fit, and the slope's
    significance (its sigma from the point-to-point scatter, robust to slow trends)."""
    good = np.isfinite(curve) & np.isfinite(t)
    if good.sum() < 5:
        return np.nan, np.nan
    tt, y = t[good], curve[good]
    order = np.argsort(tt)
    tt, y = tt[order], y[order]
    sigma = robust_std(np.diff(y), clip=5) / np.sqrt(2.0)
    dt = tt - tt.mean()
    sxx = float(np.sum(dt**2))
    if sxx <= 0 or not np.isfinite(sigma) or sigma <= 0:
        return np.nan, np.nan
    slope = float(np.sum(dt * (y - y.mean())) / sxx)
    return abs(slope) * float(np.ptp(tt)), abs(slope) / (sigma / np.sqrt(sxx))


def _drop_worst(state: _EnsembleState, rules: VettingRules, t) -> bool:
    """Drop the one comparison most clearly variable (scatter, or trend when ``t`` is
    given); whether one was. Needs 3 comparisons in use (2 cannot say which varies)."""
    if state.use.sum() < 3:
        return False
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = state.rms / state.expected
        score = excess / (rules.variable_threshold * np.nanmedian(excess[state.use]))
    why = {i: f"variable: scatter {excess[i]:.2f} x its expected noise, over "
              f"{rules.variable_threshold:g} x the comparisons' median"
           for i in np.flatnonzero(state.use & (score > 1))}
    if t is not None:
        amp = np.full(state.use.size, np.nan)
        for i in np.flatnonzero(state.use):
            amp[i], state.trend[i] = _trend(state.curves[i], t)
        if not np.isfinite(amp[state.use]).any():
            amp[:] = 0.0  # too few points for a trend
        with np.errstate(invalid="ignore", divide="ignore"):  # a median change of 0
            tscore = amp / (rules.variable_threshold * np.nanmedian(amp[state.use]))
        trending = state.use & (state.trend > rules.trend_threshold) & (tscore > 1)
        for i in np.flatnonzero(trending & ~(score > 1)):  # scatter is named first
            why[i] = (f"variable: trend {100 * amp[i]:.2f} % over the series "
                      f"({state.trend[i]:.1f} sigma)")
        score = np.where(trending, np.fmax(score, tscore), score)
    if not why:
        return False
    worst = max(why, key=lambda i: score[i])
    log.info("comparison %d dropped: %s", worst + 1, why[worst])
    state.variable[worst] = True
    state.use[worst] = False
    state.w[worst] = 0.0
    state.reasons[worst] = why[worst]
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


def _diagnostics(state: _EnsembleState, med, weights, snr) -> Table:
    """One row per comparison (see :attr:`EnsembleResult.diagnostics`)."""
    m = len(med)
    diag = Table(
        {
            "comparison": np.arange(1, m + 1),
            "median_flux": med,
            "weight": weights,
            "rms": state.rms,
            "expected_rms": state.expected,
            "excess": state.rms / state.expected,
            "chi2_red": state.chi2,
            "snr": snr,
            "trend_sigma": state.trend,
            "variable": state.variable,
            "used": state.use,
            "reason": [state.reasons.get(i, "") for i in range(m)],
        }
    )
    diag.meta["method"] = ("Broeg et al. 2005 iterative inverse-variance weighting; "
                           "comparisons vetted (catalogue variable, saturated, blended, "
                           "too faint, variable by scatter or trend)")
    return diag
