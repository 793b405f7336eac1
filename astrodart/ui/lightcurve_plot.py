"""Layer 4: light-curve plots (differential photometry and transit fits).

:func:`plot_light_curve` draws any differential light curve; :func:`plot_night_light_curve`
draws the one a night run measured, and :data:`LIGHTCURVE_FIGURE` is that figure as a step
of the night's plan (``reduce_night(..., steps=NIGHT_STEPS + (LIGHTCURVE_FIGURE,))``), so
the pipeline itself never plots.

matplotlib is imported inside the functions, never at import time. Inside IPython the
figure is made through pyplot so that notebooks display it; elsewhere a bare
:class:`matplotlib.figure.Figure` is made, which needs no GUI backend and can be saved.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from astrodart.photometry.lightcurve import bin_light_curve
from astrodart.photometry.transit import TransitFit
from astrodart.pipeline.night import NightStep

__all__ = ["LIGHTCURVE_FIGURE", "plot_light_curve", "plot_differential",
           "plot_night_light_curve"]

log = logging.getLogger("astrodart")


def _figure(figsize):
    try:
        from IPython import get_ipython

        in_ipython = get_ipython() is not None
    except ImportError:
        in_ipython = False
    if in_ipython:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def plot_light_curve(
    time,
    rel_flux,
    rel_flux_err,
    *,
    comparison_curves=None,
    comparison_weights=None,
    fit: TransitFit | None = None,
    airmass=None,
    bin_minutes: float = 10.0,
    title: str | None = None,
    path=None,
    time_offset: float | None = None,
):
    """Plot a differential light curve: raw and binned points, the comparisons, a fit.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times, BJD_TDB in days.
    rel_flux, rel_flux_err : array_like, shape (n,)
        Normalised differential flux of the target and its errors (NaN points are skipped).
    comparison_curves : array_like, shape (m, n), optional
        Each comparison divided by the ensemble of the others (normalised to 1), drawn
        offset below one another.
    comparison_weights : array_like, shape (m,), optional
        Ensemble weights, written next to each comparison (0 = dropped as variable or
        unusable, drawn in red).
    fit : TransitFit, optional
        A transit fit to overplot (with its residuals in a bottom panel).
    airmass : array_like, shape (n,), optional
        Airmass per point; needed when ``fit`` has an airmass term; else drawn in the
        bottom panel when there is no fit.
    bin_minutes : float
        Width of the bins drawn over the raw points, minutes (0 for none).
    title : str, optional
        Figure title.
    path : str or pathlib.Path, optional
        Save the figure there (PNG, PDF ... by extension).
    time_offset : float, optional
        Subtracted from the times on the axis; default the integer part of the first time.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: light curve on top, comparisons and residuals (or airmass) below.

    Raises
    ------
    ValueError
        No finite point, or a fit with an airmass term but no ``airmass``.
    """
    t = np.asarray(time, dtype=float)
    f = np.asarray(rel_flux, dtype=float)
    e = np.asarray(rel_flux_err, dtype=float)
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e)
    if not good.any():
        raise ValueError("no finite point to plot")
    t0 = float(np.floor(t[good].min())) if time_offset is None else float(time_offset)
    x = t - t0
    width = bin_minutes / 1440.0
    curves = (
        None if comparison_curves is None else np.atleast_2d(np.asarray(comparison_curves, float))
    )
    has_bottom = fit is not None or airmass is not None
    heights = (
        [3.0]
        + ([2.0] if curves is not None and len(curves) else [])
        + ([1.2] if has_bottom else [])
    )
    fig = _figure((9, 2.2 * sum(heights) / 1.5))
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    axes = np.atleast_1d(axes)

    _target_panel(axes[0], t, f, e, good, t0, bin_minutes, fit, airmass)
    if title:
        axes[0].set_title(title)
    row = 1
    if curves is not None and len(curves):
        _comparison_panel(axes[row], x, t, curves, comparison_weights)
        row += 1
    if has_bottom:
        _bottom_panel(axes[row], t, f, e, good, t0, width, fit, airmass)
    axes[-1].set_xlabel(f"BJD_TDB − {t0:.0f} (days)")
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        log.info("light curve saved to %s", path)
    return fig


def plot_differential(curve: dict, *, fit: TransitFit | None = None,
                      bin_minutes: float = 10.0, path=None, title: str | None = None):
    """Plot one filter's differential light curve as the photometry run stores it.

    Parameters
    ----------
    curve : dict
        ``results["differential"]["filter"][<filter>]`` of a photometry run: arrays
        ``timestamps``, ``rel_flux``, ``rel_flux_err``, ``comparison_curves``, ``weights``
        and ``airmass``.
    fit : TransitFit, optional
        A transit fit to draw over the points.
    bin_minutes : float
        Width of the binned points, minutes.
    path : str or pathlib.Path, optional
        Save the figure there (PNG).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        As :func:`plot_light_curve` draws it.
    """
    return plot_light_curve(
        curve["timestamps"],
        curve["rel_flux"],
        curve["rel_flux_err"],
        comparison_curves=curve["comparison_curves"],
        comparison_weights=curve["weights"],
        fit=fit,
        airmass=curve["airmass"],
        bin_minutes=bin_minutes,
        path=path,
        title=title,
    )


def plot_night_light_curve(result, path=None, bin_minutes: float = 10.0):
    """Plot the series light curve of a reduced night with its transit fit.

    Parameters
    ----------
    result : astrodart.pipeline.night.NightResult
        A night run with photometry (``lightcurve`` set; ``transit`` drawn when fitted).
    path : str or pathlib.Path, optional
        Where to save the figure; default ``data_dir/photometry/lightcurve_<filter>.png``.
    bin_minutes : float
        Width of the binned points, minutes.

    Returns
    -------
    matplotlib.figure.Figure
        As :func:`plot_light_curve` draws it.

    Raises
    ------
    ValueError
        The night has no light curve.
    """
    series = result.series_filter
    if result.lightcurve is None:
        raise ValueError(f"{result.data_dir}: no light curve (reduce with target_coord=)")
    d = result.lightcurve["differential"]["filter"][series]
    if path is None:
        path = result.data_dir / "photometry" / f"lightcurve_{series}.png"
    return plot_differential(
        d, fit=result.transit, bin_minutes=bin_minutes, path=path,
        title=f"{result.target} {result.date}, filter {series} (astrodart)",
    )


def _night_figure(run) -> None:
    plot_night_light_curve(run.result)


#: The light-curve figure of a night run as a step of its plan: appended to
#: :data:`astrodart.pipeline.night.NIGHT_STEPS` by the command line, it saves
#: ``data_dir/photometry/lightcurve_<filter>.png`` when a transit was fitted.
LIGHTCURVE_FIGURE = NightStep(
    "figure", _night_figure, "plot_night_light_curve: photometry/lightcurve_<filter>.png",
    when=lambda opt: opt.target_coord is not None and opt.transit_guess is not False)


def _target_panel(ax, t, f, e, good, t0, bin_minutes, fit, airmass) -> None:
    """Raw and binned target points, and the transit model with its parameters."""
    x = t - t0
    width = bin_minutes / 1440.0
    ax.errorbar(
        x[good],
        f[good],
        e[good],
        fmt=".",
        color="0.6",
        ms=3,
        lw=0.5,
        alpha=0.8,
        label="target / ensemble",
    )
    if width > 0:
        tb, fb, eb, _ = bin_light_curve(x[good], f[good], e[good], width)
        ax.errorbar(tb, fb, eb, fmt="o", color="k", ms=4, lw=1, label=f"{bin_minutes:g}-min bins")
    if fit is not None:
        fine = np.linspace(t[good].min(), t[good].max(), 800)
        if fit._airmass_mean is not None:
            if airmass is None:
                raise ValueError("the fit has an airmass term: pass airmass=")
            am = np.interp(fine, t[good], np.asarray(airmass, float)[good])
            model = fit.model(fine, am)
        else:
            model = fit.model(fine)
        ax.plot(fine - t0, model, color="C3", lw=1.5, label="trapezoid fit")
        ax.axvline(fit.t0 - t0, color="C3", ls=":", lw=1)
        ax.text(
            0.01,
            0.03,
            f"depth {100 * fit.depth:.2f} ± {100 * fit.depth_err:.2f} %\n"
            f"T0 {fit.t0:.4f} ± {fit.t0_err * 1440:.1f} min\n"
            f"T14 {24 * fit.t14:.2f} ± {24 * fit.t14_err:.2f} h",
            transform=ax.transAxes,
            fontsize=8,
            va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )
    ax.set_ylabel("relative flux")
    ax.legend(loc="upper right", fontsize=8)


def _comparison_panel(axc, x, t, curves, comparison_weights) -> None:
    """Each comparison against the ensemble of the others, offset, with its weight."""
    weights = (
        np.asarray(comparison_weights, float)
        if comparison_weights is not None
        else np.full(len(curves), np.nan)
    )
    spread = [np.nanstd(c) for c in curves if np.isfinite(c).sum() > 2]
    step = max(0.01, 5 * float(np.nanmedian(spread))) if spread else 0.02
    for k, c in enumerate(curves):
        ok = np.isfinite(c) & np.isfinite(t)
        color = "C3" if (np.isfinite(weights[k]) and weights[k] == 0) else f"C{k % 10}"
        axc.plot(x[ok], c[ok] - k * step, ".", ms=2, color=color)
        label = f"C{k + 1}" + (f" w={weights[k]:.2f}" if np.isfinite(weights[k]) else "")
        if np.isfinite(weights[k]) and weights[k] == 0:
            label += " (dropped)"
        axc.text(
            1.005,
            1 - k * step,
            label,
            transform=axc.get_yaxis_transform(),
            fontsize=7,
            va="center",
            color=color,
        )
    axc.set_ylabel("comparisons\n(offset)")


def _bottom_panel(axb, t, f, e, good, t0, width, fit, airmass) -> None:
    """Residuals of the fit (binned too), or the airmass when there is no fit."""
    x = t - t0
    if fit is not None:
        am = np.asarray(airmass, float)[good] if airmass is not None else None
        model = fit.model(t[good], am) if fit._airmass_mean is not None else fit.model(t[good])
        res = f[good] - model
        axb.plot(x[good], 1e3 * res, ".", color="0.6", ms=3)
        if width > 0:
            tb, rb, eb, _ = bin_light_curve(x[good], res, e[good], width)
            axb.errorbar(tb, 1e3 * rb, 1e3 * eb, fmt="o", color="k", ms=3)
        axb.axhline(0, color="C3", lw=1)
        axb.set_ylabel("residual\n(ppt)")
    else:
        axb.plot(x, np.asarray(airmass, float), "-", color="C0")
        axb.set_ylabel("airmass")
