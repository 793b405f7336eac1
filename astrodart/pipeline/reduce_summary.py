"""Layer 3: the results folder of ``astrodart reduce`` and the last screen of a run.

The light-curve and transit steps that follow photometry on the command line
(:func:`lightcurve_step`, :func:`transit_step`), and :func:`finish`, which puts the
products of a run into ``OUT/results/`` (the quality table, one stack per filter with a
PNG preview, ``summary.json``) and prints what a user wants to see last: the frames used
and rejected, the products and where they are, the light curve's scatter and the transit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from astrodart import __version__
from astrodart.pipeline.night import NightStep

__all__ = ["lightcurve_step", "transit_step", "finish", "link_or_copy"]

log = logging.getLogger("astrodart")


def link_or_copy(src, dest) -> Path:
    """Put ``src`` at ``dest`` as a hard link (no extra disk) or, across disks, a copy.

    Parameters
    ----------
    src, dest : str or pathlib.Path
        Existing file and destination (replaced atomically if it exists).

    Returns
    -------
    pathlib.Path
        ``dest``.
    """
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    return dest


def lightcurve_step(results: Path, obscode: str = "TST01") -> NightStep:
    """The step writing ``results/lightcurve.ecsv`` from the photometry step's light curve,
    and the AAVSO reports (:func:`astrodart.pipeline.night_exports.write_aavso_reports`).

    Parameters
    ----------
    results : pathlib.Path
        The results folder.
    obscode : str
        AAVSO observer code of the reports.

    Returns
    -------
    NightStep
        Runs when the night has a target (its photometry ran).
    """
    def run(state):
        from astrodart.frames.io import atomic_output
        from astrodart.pipeline.night_products import lightcurve_table

        result = state.result
        table = lightcurve_table(result.lightcurve, result.series_filter)
        path = Path(results) / "lightcurve.ecsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True, fsync=False) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        state.products["lightcurve"] = path
        state.tables["lightcurve"] = table
        _aavso_reports(state, results, obscode)

    return NightStep("lightcurve", run, "differential light curve -> results/lightcurve.ecsv",
                     when=_has_target)


def transit_step(results: Path, prior: dict | None, obscode: str = "TST01") -> NightStep:
    """The step searching the light curve for a transit and fitting it (``transit.json``);
    the AAVSO exoplanet report is written again with the fit.

    Parameters
    ----------
    results : pathlib.Path
        The results folder.
    prior : dict or None
        ``{'t0': BJD_TDB, 'duration': days}`` from ``--transit``, with ``'period'`` (days)
        and ``'t0_err'`` (days) when an ephemeris is given: then the detected transit is
        fitted with the physical model (batman + emcee, detrending chosen by BIC).
    obscode : str
        AAVSO observer code of the reports.

    Returns
    -------
    NightStep
        Runs when the night has a target.
    """
    def run(state):
        from astrodart.pipeline.night_products import transit_report

        table = state.tables.get("lightcurve")
        if table is None:
            from astropy.table import QTable

            table = QTable.read(Path(results) / "lightcurve.ecsv", format="ascii.ecsv")
        guess = None if not prior else (prior["t0"], prior["duration"] * 24.0)
        if prior and prior.get("period"):  # the ephemeris' transit nearest to the night
            mid = float(np.nanmedian(np.asarray(getattr(table["bjd_tdb"], "value",
                                                        table["bjd_tdb"]), float)))
            n = round((mid - prior["t0"]) / prior["period"])
            guess = (prior["t0"] + n * prior["period"], guess[1])
        report = transit_report(table, prior=guess)
        if prior and prior.get("period") and report.get("detected"):
            report = _batman_report(table, prior, report)
        path = Path(results) / "transit.json"
        _write_json(path, report)
        state.products["transit"] = path
        state.result.transit_report = report
        _aavso_reports(state, results, obscode, report)

    return NightStep("transit", run,
                     "box least squares search -> transit fit -> results/transit.json",
                     when=_has_target)


def _batman_report(table, prior: dict, report: dict) -> dict:
    """The box search's report with the fit replaced by the physical model's
    (:func:`astrodart.photometry.transit_model.fit_batman_transit`); the trapezoid fit is
    kept under ``'trapezoid'``."""
    from astrodart.photometry.transit_model import (
        LIMB_DARKENING,
        Ephemeris,
        fit_batman_transit,
    )

    def col(name):
        return np.asarray(getattr(table[name], "value", table[name]), float)

    ok = np.asarray(table["valid"], bool) if "valid" in table.colnames else slice(None)
    names = {"airmass": "airmass", "fwhm": "fwhm", "sky": "sky", "x": "xcentroid",
             "y": "ycentroid"}
    regs = {k: col(c)[ok] for k, c in names.items()
            if c in table.colnames and np.nanstd(col(c)[ok]) > 0}
    filt = str(table.meta.get("filter", "clear"))
    eph = Ephemeris(prior["t0"], prior["period"], prior.get("t0_err", 0.0), 0.0)
    fit = fit_batman_transit(col("bjd_tdb")[ok], col("rel_flux")[ok], col("rel_flux_err")[ok],
                             ephemeris=eph, regressors=regs, seed=0,
                             filter_name=filt if filt in LIMB_DARKENING else "clear")
    out = dict(report, trapezoid={k: report.get(k) for k in
                                  ("t0_bjd_tdb", "t0_err_min", "depth", "duration_h")})
    out.update(fit.to_dict())
    out["method"] = ("batman (Mandel & Agol 2002; Kreidberg 2015) x linear baseline and "
                     "BIC-chosen detrending, posteriors by emcee (Foreman-Mackey et al. 2013)")
    return out


def _aavso_reports(state, results, obscode: str, report: dict | None = None) -> None:
    """``results/aavso_extended.txt`` and ``aavso_exoplanet.txt`` (never fails the run)."""
    from astrodart.pipeline.night_exports import write_aavso_reports

    table = state.tables.get("lightcurve")
    if table is None or getattr(state.result, "lightcurve", None) is None:
        return
    try:
        state.products.update(write_aavso_reports(state.result, table, results,
                                                  obscode=obscode, report=report))
    except Exception as exc:  # a report must never fail the science products
        log.warning("AAVSO reports not written: %s", exc)


def _has_target(options) -> bool:
    return options.target_coord is not None or getattr(options, "target_xy", None) is not None


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _stacks(result, results: Path) -> dict:
    """``results/stack_<filter>.fits`` (linked) and a PNG preview of each."""
    from astrodart.pipeline.night_products import preview_png

    out = {}
    for f, path in result.stacks.items():
        dest = link_or_copy(path, results / f"stack_{f}.fits")
        out[f"stack_{f}"] = dest
        try:
            out[f"stack_{f}_png"] = preview_png(dest, results / f"stack_{f}.png")
        except Exception as exc:  # a preview must never fail the products
            log.warning("no PNG preview of %s: %s", dest, exc)
    for name, path in (result.products or {}).items():  # colour cameras' composites
        if name.startswith("colour"):
            out[name] = link_or_copy(path, results / Path(path).name)
    return out


def _previews(result, folder: Path) -> dict:
    """``--png``: a PNG of each master and of the first calibrated frame of each filter."""
    from astrodart.pipeline.night_products import preview_png

    masters = result.masters or {}
    frames = {"masterbias": masters.get("bias"), "badpixel": masters.get("badpixel")}
    frames.update({f"masterdark_{t:g}s": p for t, p in (masters.get("dark") or {}).items()})
    frames.update({f"masterflat_{f}": p for f, p in (masters.get("flat") or {}).items()})
    frames.update({f"calibrated_{f}": files[0] for f, files in result.calibrated.items()
                   if files})
    out = {}
    for name, path in frames.items():
        if path:
            try:
                out[f"png_{name}"] = preview_png(path, folder / f"{name}.png")
            except Exception as exc:  # a preview must never fail the products
                log.warning("no PNG preview of %s: %s", path, exc)
    return out


def _rejected(run) -> dict:
    """Frames left out, with the reason, from every step that can leave one out."""
    from astrodart.pipeline.quality import good_files

    rejected = dict(getattr(run.survey, "unreadable", {}) or {})
    result = run.result
    if result.quality is not None:
        good = set(good_files(result.quality))
        for row in result.quality:
            if row["file"] not in good:
                flags = row["flags"] if "flags" in row.colnames else "quality"
                rejected[str(row["file"])] = f"quality: {flags}"
    for path, reason in result.align_failed.items():
        rejected[str(path)] = f"align: {reason}"
    return rejected


def _summary(run, notes: list, seconds: float, products: dict) -> dict:
    result = run.result
    survey = run.survey.to_dict()
    frames = survey.pop("counts", {})
    summary = {**survey, "astrodart": __version__, "night": str(run.survey.night),
               "date": run.date, "target": run.target, "frames": frames,
               "rejected": _rejected(run),
               "reused": list(result.reused), "notes": notes,
               "timings": {k: round(v, 2) for k, v in result.timings.items() if v is not None},
               "seconds": round(seconds, 1),
               "masters": _masters_record(result.masters),
               "products": {k: str(v) for k, v in products.items()},
               "ran_on": dict(getattr(run, "ran_on", {}) or {})}
    if result.astrometry is not None and len(result.astrometry):
        ast = result.astrometry
        summary["astrometry"] = {"solved": int(np.sum(ast["solved"])), "frames": len(ast),
                                 "reasons": sorted({str(r) for r, ok in
                                                    zip(ast["reason"], ast["solved"]) if not ok})[:3]}
    if result.stack_fwhm:
        summary["stack_fwhm_px"] = {f: float(v) for f, v in result.stack_fwhm.items()}
    if "lightcurve" in products:
        summary["lightcurve"] = _lightcurve_stats(products["lightcurve"])
    report = getattr(result, "transit_report", None)
    if report is not None:
        summary["transit"] = report
    return summary


def _lightcurve_stats(path) -> dict:
    """Points, valid points and the scatter of a light curve (robust, in ppt): the rms
    about the median and the point-to-point scatter (free of slow trends and transits)."""
    from astropy.stats import mad_std
    from astropy.table import Table

    table = Table.read(path, format="ascii.ecsv")
    flux = np.asarray(table["rel_flux"], float)
    ok = np.isfinite(flux) & np.asarray(table["valid"] if "valid" in table.colnames
                                        else np.ones(len(flux), bool), bool)
    f = flux[ok] / np.median(flux[ok]) if ok.any() else flux[ok]
    return {"points": len(table), "valid": int(ok.sum()),
            "rms_ppt": round(1000 * float(mad_std(f)), 2) if f.size > 2 else None,
            "p2p_ppt": round(1000 * float(mad_std(np.diff(f)) / np.sqrt(2)), 2)
            if f.size > 3 else None}


def _masters_record(masters: dict) -> dict:
    out = {}
    for key, value in (masters or {}).items():
        if isinstance(value, dict):
            out[key] = {str(k): (str(v) if not isinstance(v, (dict, tuple, list)) else v)
                        for k, v in value.items()}
        elif isinstance(value, (tuple, list)):
            out[key] = list(value)
        else:
            out[key] = None if value is None else str(value)
    return out


def _tidy(run, out: Path) -> dict:
    """Remove the intermediates (unless ``keep_intermediate``); the disk record of the run:
    raw and OUT sizes, and what was removed with how to get it back."""
    from astrodart.pipeline.tidy import folder_bytes, remove_intermediate

    disk = {"keep_intermediate": bool(run.options.keep_intermediate)}
    if not run.options.keep_intermediate:
        disk["removed"] = remove_intermediate(out, raw_elsewhere=True).to_dict()
    raw, used = folder_bytes(run.survey.night), folder_bytes(out)
    disk.update(raw_MB=round(raw / 1e6, 1), out_MB=round(used / 1e6, 1),
                ratio=round(used / raw, 2) if raw else None)
    return disk


def finish(run, out: Path, notes: list, seconds: float, echo=print) -> dict:
    """Write ``OUT/results/`` (quality, stacks, summary) and print the last screen.

    Parameters
    ----------
    run : astrodart.pipeline.reduce.ReduceRun
        The run (its ``result`` filled by the night's steps).
    out : pathlib.Path
        The output folder.
    notes : list of str
        Lines said during the run (header overrides, target source, ...).
    seconds : float
        Wall time of the run.
    echo : callable
        Where the last screen is printed.

    Returns
    -------
    dict
        The summary written to ``results/summary.json``.
    """
    results = out / "results"
    result = run.result
    products = dict(getattr(result, "products", {}) or {})
    quality = result.data_dir / "quality" / "quality.ecsv"
    if quality.is_file():
        products["quality"] = link_or_copy(quality, results / "quality.ecsv")
    products.update(_stacks(result, results))
    if run.options.png:
        products.update(_previews(result, results / "png"))
    summary = _summary(run, notes, seconds, products)
    summary["disk"] = _tidy(run, out)
    products["summary"] = results / "summary.json"
    summary["products"]["summary"] = str(products["summary"])
    _write_json(products["summary"], summary)
    run.products, run.summary = products, summary
    echo(last_screen(summary))
    return summary


def last_screen(summary: dict) -> str:
    """The lines printed at the end of a run.

    Parameters
    ----------
    summary : dict
        As written to ``summary.json``.

    Returns
    -------
    str
        Frames used and rejected, products with paths, light-curve scatter and transit.
    """
    frames = summary.get("frames", {})
    lines = ["", f"astrodart reduce: {summary['target']} on {summary['date']} in "
             f"{summary['seconds']:.0f} s",
             "frames: " + ", ".join(f"{n} {k}" for k, n in frames.items()),
             f"rejected: {len(summary['rejected'])}"
             + "".join(f"\n  {Path(p).name}: {r}" for p, r in list(summary["rejected"].items())[:5])
             + ("\n  ..." if len(summary["rejected"]) > 5 else "")]
    if summary.get("reused"):
        lines.append("reused: " + ", ".join(summary["reused"]))
    if "astrometry" in summary:
        a = summary["astrometry"]
        lines.append(f"plate solved: {a['solved']}/{a['frames']}"
                     + (f" ({a['reasons'][0]})" if a["solved"] == 0 and a["reasons"] else ""))
    for f, v in summary.get("stack_fwhm_px", {}).items():
        lines.append(f"stack {f}: FWHM {v:.2f} px")
    lc = summary.get("lightcurve")
    if lc is not None:
        lines.append(f"light curve: {lc['valid']}/{lc['points']} points, scatter "
                     f"{lc['rms_ppt']} ppt (point to point {lc['p2p_ppt']} ppt)")
    t = summary.get("transit")
    if t is not None:
        if t.get("detected"):
            lines.append(f"transit: mid-time BJD_TDB {t['t0_bjd_tdb']:.5f} +- "
                         f"{t.get('t0_err_min', float('nan')):.1f} min, depth "
                         f"{100 * t['depth']:.2f} +- {100 * t.get('depth_err', float('nan')):.2f} %, "
                         f"duration {t.get('duration_h', float('nan')):.2f} h, "
                         f"out-of-transit rms {1000 * t.get('rms_oot', float('nan')):.2f} ppt")
        else:
            lines.append(f"transit: none detected ({t.get('reason', 'no significant dip')})")
    lines.append("products:")
    lines += [f"  {k:<16} {v}" for k, v in summary["products"].items()]
    return "\n".join(lines + _disk_lines(summary.get("disk")))


def _disk_lines(disk: dict | None) -> list[str]:
    """The last lines: what was removed and how to get it back, and the disk used."""
    if not disk:
        return []
    from astrodart.pipeline.tidy import INTERMEDIATES

    lines = []
    for kind, d in (disk.get("removed") or {}).items():
        verb = "hard-linked" if kind == "duplicate_masters" else "removed"
        lines.append(f"{verb} {d['files']} {d['what'].split(' (')[0]} ({d['MB']:.0f} MB); to "
                     f"get them back: {INTERMEDIATES[kind][1]}")
    if disk.get("keep_intermediate"):
        lines.append("intermediates kept (--keep-intermediate): aligned frames and sorted raw "
                     "copies stay")
    if disk.get("ratio") is not None:
        lines.append(f"disk: OUT holds {disk['out_MB']:.0f} MB, {disk['ratio']:.1f} x the raw "
                     f"night ({disk['raw_MB']:.0f} MB)")
    return lines
