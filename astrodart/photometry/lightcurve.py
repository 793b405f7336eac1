"""Layer 2: light-curve tables — binning in time, and the flat table of a photometry run.

Pure functions on arrays and result dicts: no file I/O, no printing.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

__all__ = ["bin_light_curve", "results_table"]


def bin_light_curve(time, flux, flux_err, bin_width: float):
    """Bin a light curve in time by inverse-variance weighted means.

    Parameters
    ----------
    time, flux, flux_err : array_like, shape (n,)
        Light curve; non-finite points are ignored.
    bin_width : float
        Bin width in the units of ``time`` (days for BJD).

    Returns
    -------
    t, f, e : numpy.ndarray, shape (k,)
        Mean time, weighted mean flux and its error per non-empty bin. The error is the
        larger of the formal one and the scatter in the bin over sqrt(count) (when the
        bin holds 3 points or more).
    count : numpy.ndarray of int, shape (k,)
        Points per bin.
    """
    t = np.asarray(time, dtype=float)
    f = np.asarray(flux, dtype=float)
    e = np.asarray(flux_err, dtype=float)
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    t, f, e = t[good], f[good], e[good]
    if t.size == 0:
        z = np.zeros(0)
        return z, z, z, np.zeros(0, int)
    idx = np.floor((t - t.min()) / bin_width).astype(int)
    out_t, out_f, out_e, out_n = [], [], [], []
    for k in np.unique(idx):
        s = idx == k
        w = 1.0 / e[s] ** 2
        mean = np.sum(w * f[s]) / np.sum(w)
        err = 1.0 / math.sqrt(np.sum(w))
        if s.sum() >= 3:
            err = max(err, float(np.std(f[s], ddof=1) / math.sqrt(s.sum())))
        out_t.append(t[s].mean())
        out_f.append(mean)
        out_e.append(err)
        out_n.append(int(s.sum()))
    return np.array(out_t), np.array(out_f), np.array(out_e), np.array(out_n)


def results_table(results: dict, filter_name: str) -> Table:
    """One filter's results as a flat table (one row per frame).

    Parameters
    ----------
    results : dict
        As returned by :meth:`astrodart.pipeline.photometry.PhotometryRun.run_multi_coord` or
        ``run_single_coord``.
    filter_name : str
        The filter to tabulate.

    Returns
    -------
    astropy.table.Table
        Columns ``file``, ``bjd_tdb``, ``mid_exposure_utc``, ``airmass``, ``exptime``,
        ``fwhm``, then ``<star>_flux``, ``_flux_err``, ``_mag_ins``, ``_mag_err``,
        ``_flags``, ``_x``, ``_y``, ``_sky`` for ``target`` (or ``object``) and ``comp1``
        ...; and ``rel_flux``, ``rel_flux_err`` when a differential light curve exists.
        ``meta`` holds ``results['meta']`` and the filter; for ``aperture_type='auto'``
        also ``aperture_radius_fwhm`` and ``aperture_radius_px``, the radius chosen.

    Raises
    ------
    ValueError
        The results hold no star.
    """
    stars = []
    if "object" in results:
        stars.append(("object", results["object"]))
    if "target" in results:
        stars.append(("target", results["target"]))
    for name, c in results.get("comparison_stars", {}).items():
        stars.append((name.replace("comparison_", "comp"), c))
    if not stars:
        raise ValueError("results hold no star")
    first = stars[0][1]["filter"][filter_name]
    t = Table()
    t["file"] = results["files"][filter_name]
    t["bjd_tdb"] = first["timestamps"]
    t["mid_exposure_utc"] = first["mid_exposure_utc"]
    t["airmass"] = first["airmass"]
    t["exptime"] = first["exptime"]
    t["fwhm"] = first["fwhm"]
    for prefix, star in stars:
        s = star["filter"][filter_name]
        for key in ("flux", "flux_err", "mag_ins", "mag_err", "flags", "x", "y", "sky"):
            t[f"{prefix}_{key}"] = s[key]
    diff = results.get("differential", {}).get("filter", {}).get(filter_name)
    if diff is not None:
        t["rel_flux"] = diff["rel_flux"]
        t["rel_flux_err"] = diff["rel_flux_err"]
    t.meta.update(
        {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in results.get("meta", {}).items()
        }
    )
    t.meta["filter"] = filter_name
    choice = results.get("meta", {}).get("aperture_choice", {}).get(filter_name)
    if choice is not None:  # aperture_type='auto': the radius kept for this filter
        t.meta["aperture_radius_fwhm"] = choice["chosen_factor"]
        t.meta["aperture_radius_px"] = choice["chosen_radius_px"]
    return t
