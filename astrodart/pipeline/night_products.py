"""Layer 3: the science files of a reduced night -- light-curve table, transit, previews.

:func:`lightcurve_table` turns a :meth:`~astrodart.pipeline.photometry.PhotometryRun.run_multi_coord`
result into the table of ``astrodart reduce``'s ``results/lightcurve.ecsv`` (with units);
:func:`transit_report` searches it for a transit
(:func:`astrodart.photometry.transit_search.search_transit`) and fits the one found
(:func:`astrodart.photometry.transit.fit_transit`, started from the search);
:func:`write_night_products` writes both and a light-curve PNG for a
:class:`~astrodart.pipeline.night.NightResult`; :func:`preview_png` makes a PNG of a
FITS image. matplotlib is imported only inside the functions that draw (Agg, no pyplot).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import QTable

from astrodart.frames.io import atomic_output
from astrodart.photometry.transit import fit_transit
from astrodart.photometry.transit_search import search_transit

__all__ = ["lightcurve_table", "preview_png", "transit_report", "write_night_products"]

#: The columns of the light-curve table, in order.
LIGHTCURVE_COLUMNS = ("bjd_tdb", "rel_flux", "rel_flux_err", "airmass", "fwhm", "sky",
                      "xcentroid", "ycentroid", "flags", "valid", "file")


def _data_unit(meta: dict):
    """The flux unit of the frames (``meta['flux_unit']``), dimensionless when unknown."""
    name = str(meta.get("flux_unit", "") or "")
    try:
        return u.Unit(name) if name and "," not in name else u.dimensionless_unscaled
    except ValueError:
        return u.dimensionless_unscaled


def _comparisons_meta(phot: dict, filter: str) -> list:
    """Position (RA/Dec or first pixel position) and use of every comparison star."""
    diff = phot["differential"]["filter"][filter]
    used = np.asarray(diff.get("comparison_used", []), bool)
    why = np.asarray(diff.get("comparison_reason", []), str)
    out = []
    for k, (name, star) in enumerate(phot.get("comparison_stars", {}).items()):
        rec = {"name": name, "used": bool(used[k]) if k < used.size else None}
        if k < why.size and why[k]:
            rec["dropped"] = str(why[k])  # the vetting's reason
        for key, c in star.get("coords", {}).items():
            rec[key] = float(c["value"])
        out.append(rec)
    return out


def lightcurve_table(phot: dict, filter: str) -> QTable:
    """The differential light curve of one filter, one row per frame, with units.

    Parameters
    ----------
    phot : dict
        A :meth:`astrodart.pipeline.photometry.PhotometryRun.run_multi_coord` result.
    filter : str
        The filter (a key of ``phot['differential']['filter']``).

    Returns
    -------
    astropy.table.QTable
        Columns ``bjd_tdb`` (d, BJD_TDB at mid-exposure), ``rel_flux``, ``rel_flux_err``,
        ``airmass``, ``fwhm`` (pix), ``sky`` (the target's sky per pixel, data unit / pix),
        ``xcentroid``, ``ycentroid`` (pix, 0-based), ``flags`` (PhotFlag bits of the
        target), ``valid`` (point used), ``file``. ``meta``: ``target`` (name, RA/Dec),
        ``filter``, ``comparisons`` (position, used), ``apertures`` (FWHM factors),
        ``site``, ``flux_unit``.

    Raises
    ------
    ValueError
        ``phot`` has no differential light curve in ``filter``.
    """
    diffs = phot.get("differential", {}).get("filter", {})
    if filter not in diffs:
        raise ValueError(f"filter={filter!r}: the photometry has a differential light curve "
                         f"in {sorted(diffs)} only")
    d, tgt, meta = diffs[filter], phot["target"]["filter"][filter], phot.get("meta", {})
    unit = _data_unit(meta)
    t = QTable()
    t["bjd_tdb"] = np.asarray(d["timestamps"], float) * u.d
    t["rel_flux"] = np.asarray(d["rel_flux"], float) * u.dimensionless_unscaled
    t["rel_flux_err"] = np.asarray(d["rel_flux_err"], float) * u.dimensionless_unscaled
    t["airmass"] = np.asarray(d["airmass"], float) * u.dimensionless_unscaled
    t["fwhm"] = np.asarray(tgt["fwhm"], float) * u.pix
    t["sky"] = np.asarray(tgt["sky"], float) * (unit / u.pix)
    t["xcentroid"] = np.asarray(tgt["x"], float) * u.pix
    t["ycentroid"] = np.asarray(tgt["y"], float) * u.pix
    t["flags"] = np.asarray(tgt["flags"], np.int64)
    t["valid"] = np.asarray(d["valid"], bool)
    t["file"] = np.asarray(phot["files"][filter]).astype(str)
    t["bjd_tdb"].info.description = "BJD_TDB at mid-exposure, barycentric toward the target"
    t["sky"].info.description = "sky level per pixel around the target"
    factors = meta.get("fwhm_factors", [])
    t.meta.update({
        "target": {"name": str(meta.get("target_name", "")),
                   "ra_deg": meta.get("target_ra_deg"), "dec_deg": meta.get("target_dec_deg"),
                   **{k: float(v["value"]) for k, v in phot["target"].get("coords", {}).items()
                      if k in ("x", "y")}},
        "filter": filter,
        "comparisons": _comparisons_meta(phot, filter),
        "apertures": {"unit": "FWHM", "aperture_annulus_in_out":
                      [float(v) for v in np.atleast_1d(factors)]},
        "site": {k: meta.get(f"site_{k}") for k in ("lat_deg", "lon_deg", "height_m")},
        "flux_unit": str(unit),
        "time_scale": "BJD_TDB (days) at mid-exposure",
    })
    return t


def _clean(value):
    """A JSON-able value: floats that are not finite become None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _curve(table):
    """Time (d), flux and error of the valid, finite points of a light-curve table."""
    def plain(col):
        return np.asarray(getattr(col, "value", col), float)

    t, f, e = plain(table["bjd_tdb"]), plain(table["rel_flux"]), plain(table["rel_flux_err"])
    ok = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    if "valid" in table.colnames:
        ok &= np.asarray(table["valid"], bool)
    return t[ok], f[ok], e[ok]


def transit_report(table, *, prior: tuple[float, float] | None = None) -> dict:
    """Search a light curve for a transit and fit the one found.

    Parameters
    ----------
    table : astropy.table.Table or QTable
        A :func:`lightcurve_table` (``bjd_tdb`` in days, ``rel_flux``, ``rel_flux_err``,
        optional ``valid``).
    prior : (float, float), optional
        ``(t0_bjd_tdb, duration_h)`` (``--transit``): the search looks within half the
        longest trial duration of ``t0`` and at 0.6-1.5 x the duration.

    Returns
    -------
    dict
        JSON-able: ``detected``, ``t0_bjd_tdb``, ``t0_err_min``, ``depth``, ``depth_err``,
        ``duration_h``, ``duration_err_h``, ``rms_oot`` (per point, out of transit),
        ``chi2_red``, ``n_points``, ``baseline`` (polynomial in ``bjd_tdb -
        baseline_t_ref``, constant first), ``search`` (the box search, see
        :class:`~astrodart.photometry.transit_search.TransitSearch`); when nothing is
        detected ``detected`` is False, ``reason`` says why, the fit fields are absent
        and ``rms`` is the scatter of the whole curve.

    Raises
    ------
    ValueError
        ``prior`` is not two finite numbers with a positive duration.
    """
    t0p = durp = None
    if prior is not None:
        try:
            t0p, durh = (float(v) for v in prior)
        except (TypeError, ValueError):
            raise ValueError(f"prior={prior!r}: give (t0_bjd_tdb, duration_h)") from None
        if not (math.isfinite(t0p) and math.isfinite(durh) and durh > 0):
            raise ValueError(f"prior={prior!r}: t0 must be finite and the duration > 0 h")
        durp = durh / 24.0
    t, f, e = _curve(table)
    base = {"n_points": int(t.size), "rms": float(np.std(f, ddof=1)) if t.size > 1 else None}
    if t.size < 10:
        return _clean({"detected": False, **base,
                       "reason": f"{t.size} valid points: too few to search for a transit"})
    search = search_transit(t, f, e, t0_prior=t0p, duration_prior=durp)
    report = {"detected": bool(search.detected), **base, "search": search.to_dict()}
    if not search.detected:
        report["reason"] = f"no transit found: {search.reason}"
        return _clean(report)
    fit = fit_transit(t, f, e, t0=search.t0, duration=search.duration,
                      t0_window=search.duration)
    report.update({
        "t0_bjd_tdb": fit.t0, "t0_err_min": fit.t0_err * 1440.0,
        "depth": fit.depth, "depth_err": fit.depth_err,
        "duration_h": fit.t14 * 24.0, "duration_err_h": fit.t14_err * 24.0,
        "ingress_h": fit.t12 * 24.0, "rms_oot": fit.oot_rms, "chi2_red": fit.chi2_red,
        "beta": fit.beta, "baseline": [float(v) for v in fit.baseline],
        "baseline_t_ref": fit.t_ref, "method": "trapezoid x linear baseline, least squares "
        "(astrodart.photometry.transit.fit_transit), started from the box search"})
    return _clean(report)


def _plot_light_curve(table, report: dict, png_path, title: str) -> Path:
    """The light curve with the fitted transit, drawn with matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from astrodart.photometry.lightcurve import bin_light_curve
    from astrodart.photometry.transit import trapezoid_model

    t, f, e = _curve(table)
    day = math.floor(t.min()) if t.size else 0.0
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(t - day, f, e, fmt=".", color="0.6", ms=3, lw=0.5, label="frames")
    tb, fb, eb, _ = bin_light_curve(t, f, e, 10 / 1440)
    ax.errorbar(tb - day, fb, eb, fmt="o", color="k", ms=4, label="10-min bins")
    if report.get("detected"):
        tt = np.linspace(t.min(), t.max(), 500)
        model = trapezoid_model(tt, report["t0_bjd_tdb"], report["depth"],
                                report["duration_h"] / 24, report["ingress_h"] / 24)
        base = np.polyval(report["baseline"][::-1], tt - report["baseline_t_ref"])
        ax.plot(tt - day, base * model, "C3-", label=f"transit: depth {100 * report['depth']:.2f} %")
    ax.set_xlabel(f"BJD_TDB - {day:.0f} (d)")
    ax.set_ylabel("relative flux")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(png_path)


def write_night_products(result, out_dir, *, prior: tuple[float, float] | None = None) -> dict:
    """Write the light curve, the transit and a light-curve PNG of a reduced night.

    Parameters
    ----------
    result : astrodart.pipeline.night.NightResult
        A night whose photometry step ran (``lightcurve``, ``series_filter``).
    out_dir : str or pathlib.Path
        Folder of the products (created), e.g. ``OUT/results``.
    prior : (float, float), optional
        ``(t0_bjd_tdb, duration_h)`` for the transit search (default the result's
        ``transit_prior`` attribute when it has one).

    Returns
    -------
    dict
        ``{'lightcurve': path, 'transit': path, 'lightcurve_png': path}`` (pathlib.Path),
        and ``'transit_report'``: the dict written to ``transit.json``.

    Raises
    ------
    ValueError
        The result has no light curve (the night was reduced without a target).
    """
    if getattr(result, "lightcurve", None) is None or not getattr(result, "series_filter", None):
        raise ValueError("write_night_products: the night has no light curve (reduce it with "
                         "a target: --coord or --target-xy)")
    out = Path(out_dir)
    prior = prior if prior is not None else getattr(result, "transit_prior", None)
    table = lightcurve_table(result.lightcurve, result.series_filter)
    paths = {"lightcurve": out / "lightcurve.ecsv", "transit": out / "transit.json",
             "lightcurve_png": out / "lightcurve.png"}
    with atomic_output(paths["lightcurve"]) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    report = transit_report(table, prior=prior)
    with atomic_output(paths["transit"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    title = f"{getattr(result, 'target', '')} {getattr(result, 'date', '')} " \
            f"({result.series_filter}): differential light curve"
    _plot_light_curve(table, report, paths["lightcurve_png"], title)
    return {**paths, "transit_report": report}


def preview_png(fits_path, png_path, *, stretch: str = "asinh") -> Path:
    """A PNG preview of a FITS image, one PNG pixel per image pixel, north of row 0 up.

    Parameters
    ----------
    fits_path : str or pathlib.Path
        The image (read with :func:`astrodart.frames.io.read_frame`).
    png_path : str or pathlib.Path
        The PNG to write (atomically; folders created).
    stretch : {'asinh', 'linear', 'sqrt', 'log'}
        Stretch applied after the zscale interval (astropy.visualization).

    Returns
    -------
    pathlib.Path
        ``png_path``.

    Raises
    ------
    ValueError
        Unknown ``stretch``, or an image that is not 2-D.
    """
    from astropy.visualization import (
        AsinhStretch,
        ImageNormalize,
        LinearStretch,
        LogStretch,
        SqrtStretch,
        ZScaleInterval,
    )

    from astrodart.frames.io import read_frame

    stretches = {"asinh": AsinhStretch, "linear": LinearStretch, "sqrt": SqrtStretch,
                 "log": LogStretch}
    if stretch not in stretches:
        raise ValueError(f"stretch={stretch!r}; use one of {sorted(stretches)}")
    data = np.asarray(read_frame(fits_path).data, float)
    if data.ndim != 2:
        raise ValueError(f"{fits_path}: a {data.ndim}-D image; preview_png draws 2-D images")
    finite = np.isfinite(data)
    fill = float(np.median(data[finite])) if finite.any() else 0.0
    data = np.where(finite, data, fill)
    norm = ImageNormalize(data, interval=ZScaleInterval(), stretch=stretches[stretch](),
                          clip=True)
    from matplotlib.image import imsave

    with atomic_output(png_path) as tmp:
        imsave(tmp, np.asarray(norm(data)), cmap="gray", vmin=0, vmax=1, origin="lower",
               format="png")
    return Path(png_path)
