"""Layer 4: figures of the physical transit fit (:func:`astrodart.photometry.transit_model.
fit_batman_transit`): the light curve with the model and residuals, and the corner plot.

matplotlib (and corner, Foreman-Mackey 2016, JOSS 1, 24) are imported inside the
functions, never at import time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astrodart.photometry.lightcurve import bin_light_curve
from astrodart.photometry.transit_model import BatmanFit
from astrodart.ui.lightcurve_plot import _figure

__all__ = ["plot_batman_corner", "plot_batman_fit"]


def plot_batman_fit(fit: BatmanFit, *, bin_minutes: float = 10.0, title: str | None = None,
                    path=None):
    """The detrended light curve, its binned points, the model and the residuals.

    Parameters
    ----------
    fit : BatmanFit
        A fit from :func:`~astrodart.photometry.transit_model.fit_batman_transit`.
    bin_minutes : float
        Width of the bins (inverse-variance weighted means), minutes (> 0).
    title : str, optional
        Figure title; default the fit's mid-time and radius ratio.
    path : str or pathlib.Path, optional
        Save the figure there (PNG/PDF by suffix).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: flux divided by the fitted systematics with the transit model, and
        the residuals (ppt), both against hours from the fitted mid-time.

    Raises
    ------
    ValueError
        ``bin_minutes`` not positive.
    """
    if not bin_minutes > 0:
        raise ValueError(f"bin_minutes must be > 0, got {bin_minutes!r}")
    hours = (fit.time - fit.t0) * 24.0
    detrended = fit.flux / fit.systematics
    err = fit.flux_err / fit.systematics
    resid = detrended - fit.transit(fit.time)
    tb, fb, eb, _ = bin_light_curve(fit.time, detrended, err, bin_minutes / 1440.0)
    _, rb, rbe, _ = bin_light_curve(fit.time, resid, err, bin_minutes / 1440.0)
    fig = _figure((8, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.errorbar(hours, detrended, err, fmt=".", color="0.65", ms=3, lw=0.5, label="points")
    top.errorbar((tb - fit.t0) * 24, fb, eb, fmt="o", color="k", ms=4,
                 label=f"{bin_minutes:g}-min bins")
    fine = np.linspace(fit.time.min(), fit.time.max(), 1000)
    top.plot((fine - fit.t0) * 24, fit.transit(fine), color="C3", lw=1.5,
             label=f"batman, Rp/Rs = {fit.rp:.3f}")
    top.set_ylabel("relative flux (detrended)")
    top.legend(loc="lower left", fontsize=8)
    bottom.errorbar(hours, 1e3 * resid, 1e3 * err, fmt=".", color="0.65", ms=3, lw=0.5)
    bottom.errorbar((tb - fit.t0) * 24, 1e3 * rb, 1e3 * rbe, fmt="o", color="k", ms=4)
    bottom.axhline(0, color="C3", lw=1)
    bottom.set_ylabel("residual [ppt]")
    bottom.set_xlabel(f"hours from t0 = {fit.t0:.5f}")
    top.set_title(title or f"t0 = {fit.t0:.5f} +- {fit.t0_err * 1440:.1f} min; "
                  f"detrending: {'+'.join(fit.regressors) or 'none'}")
    if path is not None:
        fig.savefig(Path(path), dpi=100)
    return fig


def plot_batman_corner(fit: BatmanFit, *, path=None):
    """Corner plot of the posterior samples (``corner``), t0 in minutes from its median.

    Parameters
    ----------
    fit : BatmanFit
        A fit with its chain.
    path : str or pathlib.Path, optional
        Save the figure there.

    Returns
    -------
    matplotlib.figure.Figure
        One- and two-dimensional marginals of ``t0, Rp/Rs, a/Rs, b`` with the 16/50/84 %
        quantiles.

    Raises
    ------
    ValueError
        The fit has no samples.
    """
    import corner

    if fit.chain.size == 0:
        raise ValueError("the fit has no posterior samples")
    samples = fit.chain.copy()
    samples[:, 0] = (samples[:, 0] + fit.t_ref - fit.t0) * 1440.0
    labels = ["t0 - median [min]", "Rp/Rs", "a/Rs", "b"]
    fig = corner.corner(samples, labels=labels, quantiles=[0.16, 0.5, 0.84],
                        show_titles=True, title_fmt=".3f")
    if path is not None:
        fig.savefig(Path(path), dpi=100)
    return fig
