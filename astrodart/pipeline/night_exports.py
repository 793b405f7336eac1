"""Layer 3: a reduced night's light curve as the AAVSO reports (``astrodart reduce``).

:func:`write_aavso_reports` writes ``results/aavso_extended.txt`` (AAVSO Extended File
Format: differential magnitudes of the target against the comparison ensemble, JD UTC at
mid-exposure) and ``results/aavso_exoplanet.txt`` (AAVSO Exoplanet Database / Exoplanet
Watch report: Rnflux against BJD_TDB with the airmass as detrend parameter, and the
transit fit as RESULTS when there is one), each checked against its format
(:mod:`astrodart.photometry.exports`) before it is written.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from astrodart.photometry.exports import (
    PLACEHOLDER_OBSCODE,
    aavso_extended_text,
    aavso_filter,
    exoplanet_report_text,
    validate_aavso_extended,
    validate_exoplanet_report,
    write_report,
)

__all__ = ["write_aavso_reports"]

log = logging.getLogger("astrodart")

#: File names of the reports in the results folder.
REPORT_NAMES = {"aavso_extended": "aavso_extended.txt", "aavso_exoplanet": "aavso_exoplanet.txt"}


def _observation(result, table) -> dict:
    """What the reports need beyond the table: UTC dates, exposure, binning, names."""
    from astrodart.frames.header import FrameHeader

    series = result.series_filter
    tgt = result.lightcurve["target"]["filter"][series]
    files = (getattr(result, "calibrated", None) or {}).get(series) or []
    binning = "1x1"
    if files:
        xb, yb = FrameHeader.from_file(files[0]).binning
        binning = f"{xb}x{yb}" if f"{xb}x{yb}" in ("1x1", "2x2", "3x3", "4x4") else "1x1"
    exptime = np.asarray(tgt["exptime"], float)
    name = str(table.meta.get("target", {}).get("name") or getattr(result, "target", "")
               or "target")
    try:
        band, note = aavso_filter(table.meta.get("filter")), ""
    except ValueError:
        band, note = "O", f"filter {table.meta.get('filter')}; "
    return {"jd_utc": np.asarray(tgt["mid_exposure_utc"], float), "binning": binning,
            "exptime": float(np.median(exptime[np.isfinite(exptime)])), "name": name,
            "band": band, "note": note}


def write_aavso_reports(result, table, results_dir, *, obscode: str = PLACEHOLDER_OBSCODE,
                        report: dict | None = None) -> dict:
    """Write the night's AAVSO Extended and AAVSO Exoplanet reports into ``results_dir``.

    Parameters
    ----------
    result : astrodart.pipeline.night.NightResult
        A night whose photometry ran (``lightcurve``, ``series_filter``).
    table : astropy.table.QTable
        Its light-curve table (:func:`astrodart.pipeline.night_products.lightcurve_table`).
    results_dir : str or pathlib.Path
        The results folder.
    obscode : str
        The observer's AAVSO code (default ``TST01``, the specifications' example code:
        replace it before uploading).
    report : dict, optional
        The transit report (``transit.json``): its fit becomes the exoplanet report's
        RESULTS and its window the out-of-transit normalisation.

    Returns
    -------
    dict
        ``{'aavso_extended': path, 'aavso_exoplanet': path}`` for the files written (a
        report that cannot be made is logged and left out).

    Raises
    ------
    astrodart.photometry.exports.ReportFormatError
        A report made here breaks its format (a bug: it is checked before writing).
    """
    obs = _observation(result, table)
    valid = np.asarray(table["valid"], bool)
    flux = np.where(valid, np.asarray(table["rel_flux"], float), np.nan)
    err = np.asarray(table["rel_flux_err"], float)
    airmass = np.asarray(table["airmass"], float)
    n_comp = sum(1 for c in table.meta.get("comparisons", []) if c.get("used"))
    notes = (f"{obs['note']}differential photometry against an ensemble of {n_comp} "
             f"comparison stars (astrodart)")
    texts = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        mag, mag_err = -2.5 * np.log10(flux), 2.5 / np.log(10) * err / flux
    texts["aavso_extended"] = (aavso_extended_text(
        obs["name"], obs["jd_utc"], mag, mag_err, filter=obs["band"], obscode=obscode,
        airmass=airmass, notes=notes), validate_aavso_extended)
    try:
        texts["aavso_exoplanet"] = (_exoplanet_text(table, flux, err, airmass, obs, obscode,
                                                    notes, report), validate_exoplanet_report)
    except ValueError as exc:  # e.g. exposures over the format's 600 s
        log.warning("no AAVSO exoplanet report: %s", exc)
    out = {}
    for key, (text, check) in texts.items():
        check(text, raise_on_error=True)
        out[key] = write_report(Path(results_dir) / REPORT_NAMES[key], text)
    return out


def _exoplanet_text(table, flux, err, airmass, obs, obscode, notes, report) -> str:
    """The Exoplanet Database report of the light curve (RESULTS from ``report``)."""
    bjd = np.asarray(table["bjd_tdb"].value if hasattr(table["bjd_tdb"], "value")
                     else table["bjd_tdb"], float)
    oot, results = None, None
    if report and report.get("detected"):
        t0, half = float(report["t0_bjd_tdb"]), float(report["duration_h"]) / 48.0
        oot = np.abs(bjd - t0) > half
        results = {"Tc": t0, "Depth": float(report["depth"]),
                   "Rp/R*": float(np.sqrt(max(float(report["depth"]), 0.0))),
                   "Duration_h": float(report["duration_h"])}
    return exoplanet_report_text(
        bjd, flux, err, star_name=obs["name"], planet_name=f"{obs['name']} b",
        exposure_time=obs["exptime"], filter=obs["band"], obscode=obscode,
        binning=obs["binning"], detrend={"AIRMASS": airmass}, results=results,
        notes=notes, norm_mask=oot)
