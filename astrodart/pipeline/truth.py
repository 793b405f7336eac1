"""The reduction of a simulated night against its truth, row by row.

:func:`compare_with_truth` takes what :func:`astrodart.pipeline.night.reduce_night` made of
a night written by :func:`astrodart.datasets.simulated_night.simulate_night` and sets every product
beside the truth the simulation recorded: masters (against the noise of an N-frame
average), plate solutions (against the true WCS), stack FWHM (against the FWHM of the mean
true profile), field-star fluxes (:func:`star_flux_residuals`) and the transit (depth and
BJD_TDB mid-time). :func:`format_comparison` prints that table, :func:`save_comparison`
writes it. The truth is expressed in the units of the reduction here; nothing is measured
that the reduction did not measure.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from astrodart.pipeline.night import NightResult
from astrodart.exceptions import quiet

__all__ = [
    "compare_with_truth",
    "format_comparison",
    "save_comparison",
    "star_flux_residuals",
]


def _truth_key(path, truth: dict) -> str:
    """The raw frame name (key of ``truth['frames']``) a product was made from."""
    from astrodart.frames.io import strip_fits_suffix

    stem = strip_fits_suffix(Path(str(path)).name)
    for key in truth["frames"]:
        raw = strip_fits_suffix(key)
        if stem == raw or stem.endswith("_" + raw):
            return key
    raise KeyError(f"{path}: made from no frame of this simulated night")


def _master_rows(what: str, master, model, var, scale_free: bool = False) -> list[dict]:
    """Rows for one master: rms and mean of master - model against the expected noise
    (``var``, per pixel or scalar), and the rms of block means (large-scale structure)."""
    rows = []
    master = np.asarray(master, float)
    if scale_free:
        # a flat's overall level is divided out: compare shapes, with the one scale
        # factor fitted (least squares), so the residual is master - c * truth
        model = model * float(np.sum(master * model) / np.sum(model * model))
    resid = master - model
    expected = math.sqrt(float(np.mean(var)))
    rms, mean = float(np.std(resid)), float(np.mean(resid))
    rows.append(_row(f"{what}: rms(master - truth)", "", expected, rms,
                     "within 10 % of the expected noise",
                     abs(rms / expected - 1) <= 0.10))
    if not scale_free:
        mean_tol = 5 * expected / math.sqrt(resid.size)
        rows.append(_row(f"{what}: mean(master - truth)", "", 0.0, mean,
                         f"|mean| <= 5 sigma/sqrt(N) = {mean_tol:.2g}",
                         abs(mean) <= mean_tol))
    # large-scale structure (column pattern, glow, vignetting, dust donuts): means of
    # b x b pixel blocks of the residual against the noise of such a mean
    ny, nx = resid.shape
    b = max(4, min(ny, nx) // 16)
    cut = resid[: ny // b * b, : nx // b * b].reshape(ny // b, b, nx // b, b)
    blocks = cut.mean(axis=(1, 3))
    vb = np.asarray(var, float) * np.ones(resid.shape)
    vb = vb[: ny // b * b, : nx // b * b].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3))
    expected_b = math.sqrt(float(np.mean(vb))) / b
    rms_b = float(np.sqrt(np.mean((blocks - blocks.mean()) ** 2)))
    rows.append(_row(f"{what}: rms of {b}x{b} px block means of master - truth", "",
                     expected_b, rms_b, "within 25 % of the expected noise",
                     abs(rms_b / expected_b - 1) <= 0.25))
    return rows


def _rows_masters(result: NightResult, truth: dict, maps) -> list[dict]:
    """Each master minus the truth in the reduction's units, against the noise expected
    of an average of N frames (read noise, quantisation, dark and photon noise)."""
    from astrodart.calibration.flat import flat_normalisation
    from astrodart.pipeline.calibration_step import load_master

    cam = truth["camera"]
    gain, ron2 = cam["gain"], cam["read_noise"] ** 2 + cam["gain"] ** 2 / 12.0
    frames = truth["frames"]

    def offsets(kind, **match):
        return [e["bias_offset_adu"] for e in frames.values() if e["type"] == kind
                and all(e.get(k) == v for k, v in match.items())]

    bias_off = offsets("bias")
    nb = len(bias_off)
    bias_true = (maps["BIAS"] + np.mean(bias_off)) * gain
    var_b = np.full(bias_true.shape, ron2 / nb)
    rows = _master_rows(f"master bias ({nb} frames, e-)",
                        load_master(result.masters["bias"]).data, bias_true, var_b)
    for t, path in sorted(result.masters["dark"].items()):
        off = offsets("dark", exptime=t)
        nd = len(off)
        model = maps["DARK"] * t + (np.mean(off) - np.mean(bias_off)) * gain
        var = (ron2 + maps["DARK"] * t) / nd + var_b
        rows += _master_rows(f"master dark {t:g} s ({nd} frames, e-)", load_master(path).data,
                             model, var)
    for f, path in sorted(result.masters["flat"].items()):
        flats = [e for e in frames.values() if e["type"] == "flat" and e["filter"] == f]
        resp = maps[f"FLAT_{f}"]
        level = flat_normalisation(resp)
        dark_t = maps["DARK"] * flats[0]["exptime"]
        var = sum((e["illumination_e"] * resp + ron2 + dark_t)
                  / (e["illumination_e"] * level) ** 2 for e in flats) / len(flats) ** 2
        master = np.asarray(load_master(path).data, float)
        rows += _master_rows(f"master flat {f} ({len(flats)} frames, relative)",
                             master / flat_normalisation(master), resp / level, var,
                             scale_free=True)
    return rows


def _rows_astrometry(result: NightResult, truth: dict) -> list[dict]:
    """Solved WCS against the true WCS over a 5 x 5 grid of pixels spanning each frame."""
    from astropy.wcs import WCS, FITSFixedWarning

    from astrodart.datasets.truth import truth_wcs
    from astrodart.frames.io import read_header

    ny, nx = truth["camera"]["shape"]
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    worst, n_solved, n = [], 0, 0
    for f in result.filters:
        for p in result.calibrated[f]:
            n += 1
            h = read_header(p)
            with quiet(FITSFixedWarning):
                w = WCS(h).celestial
            if not w.has_celestial:
                continue
            n_solved += 1
            true = truth_wcs(truth, _truth_key(p, truth))
            sep = w.pixel_to_world(gx, gy).separation(true.pixel_to_world(gx, gy)).arcsec
            worst.append(float(np.max(sep)))
    worst = np.asarray(worst)
    return [_row("frames plate-solved", "", n, n_solved, "all", n_solved == n),
            _row("plate solutions: median over frames of the worst grid offset", "arcsec", 0.0,
                 float(np.median(worst)) if worst.size else math.nan, "< 1",
                 bool(worst.size) and float(np.median(worst)) < 1.0),
            _row("plate solutions: worst offset, all frames, 5x5 grid", "arcsec", 0.0,
                 float(np.max(worst)) if worst.size else math.nan, "< 1",
                 bool(worst.size) and float(np.max(worst)) < 1.0)]


def _mean_profile_fwhm(fwhms, beta: float) -> float:
    """FWHM (px) of the average of unit-flux Moffat profiles of the given FWHMs."""
    from astrodart.datasets.simulate import moffat_alpha

    r = np.linspace(0.0, 4.0 * max(fwhms), 40001)
    prof = np.zeros_like(r)
    for fw in fwhms:
        a = float(moffat_alpha(fw, beta))
        prof += (beta - 1) / (math.pi * a * a) * (1 + (r / a) ** 2) ** -beta
    return float(2.0 * r[np.argmax(prof < prof[0] / 2)])


def _rows_stacks(result: NightResult, truth: dict) -> list[dict]:
    """Stack FWHM against the true image FWHM (seeing and optics) of the frames stacked."""
    from astrodart.frames.io import read_header

    rows = []
    beta = truth["camera"]["beta"]
    scale = truth["camera"]["pixel_scale_arcsec"]
    for f in result.filters:
        if f not in result.stacks:
            rows.append(_row(f"stack FWHM {f}", "px", math.nan, math.nan, "+-10 %", False))
            continue
        h = read_header(result.stacks[f])
        used = [str(h[k]) for k in h if k.startswith("IMCMB")]
        fw = [truth["frames"][_truth_key(p, truth)]["fwhm_px"] for p in used]
        want = _mean_profile_fwhm(fw, beta)
        got = result.stack_fwhm.get(f, math.nan)
        rows.append(_row(f"stack FWHM {f} ({len(used)} frames; true {want * scale:.1f}\")", "px",
                         want, got, "+-10 %", abs(got / want - 1) <= 0.10))
    return rows


def _moffat_in_circle(dx, dy, radius: float, alpha: float, beta: float,
                      n_r: int = 48, n_theta: int = 72) -> np.ndarray:
    """Fraction of the light of unit-flux Moffat stars centred at ``(dx, dy)`` (pixels from
    the circle's centre) that falls within ``radius`` (midpoint quadrature in polar
    coordinates)."""
    r = (np.arange(n_r) + 0.5) / n_r * radius
    th = (np.arange(n_theta) + 0.5) / n_theta * 2 * math.pi
    rr, tt = np.meshgrid(r, th)
    px, py = rr * np.cos(tt), rr * np.sin(tt)
    dx = np.asarray(dx, float)[:, None, None]
    dy = np.asarray(dy, float)[:, None, None]
    sb = (beta - 1) / (math.pi * alpha ** 2) * (1 + ((px - dx) ** 2 + (py - dy) ** 2)
                                                / alpha ** 2) ** -beta
    return np.sum(sb * rr, axis=(1, 2)) * (radius / n_r) * (2 * math.pi / n_theta)


def _annulus_sky_bias(x, y, r_in, r_out, sx, sy, sflux, alpha, beta, noise, rng) -> float:
    """How much the stars ``(sx, sy, sflux)`` raise the sky level measured in the annulus
    ``r_in .. r_out`` around ``(x, y)``: the annulus pixels (centres inside it, as
    :func:`astrodart.photometry.apertures.aperture_photometry_ccd` takes them) are given the
    stars' Moffat light and Gaussian noise of the measured sky scatter, and the same
    3-sigma clipped median is taken with and without the stars."""
    from astropy.stats import sigma_clip

    x0, x1 = int(math.floor(x - r_out)), int(math.ceil(x + r_out))
    y0, y1 = int(math.floor(y - r_out)), int(math.ceil(y + r_out))
    gy, gx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    d = np.hypot(gx - x, gy - y)
    sel = (d >= r_in) & (d <= r_out)
    px, py = gx[sel].astype(float), gy[sel].astype(float)
    light = np.zeros(px.size)
    for xs, ys, fs in zip(sx, sy, sflux):
        light += fs * (beta - 1) / (math.pi * alpha ** 2) * (
            1 + ((px - xs) ** 2 + (py - ys) ** 2) / alpha ** 2) ** -beta
    e = rng.standard_normal(px.size) * (noise if np.isfinite(noise) and noise > 0 else 1.0)

    def level(v):
        c = sigma_clip(v, sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std",
                       masked=True)
        return float(np.median(np.asarray(c.data[~c.mask])))

    return level(light + e) - level(e)


def _moffat_enclosed(radius: float, alpha: float, beta: float) -> float:
    """Fraction of a Moffat star's light within ``radius`` of its centre."""
    return 1.0 - (1.0 + (radius / alpha) ** 2) ** (1.0 - beta)


def star_flux_residuals(result: NightResult, truth: dict, maps) -> Table:
    """Measured field-star fluxes against the truth, one row per star and frame.

    The truth is what the measurement should give: the star's true flux
    (:func:`astrodart.datasets.truth.frame_truth_stars`: electrons at the detector before the
    flat-field response) x the flat's normalisation (calibrated = true flux x the central
    level of the true response, :func:`astrodart.calibration.flat.flat_normalisation`) x the
    fraction of its true profile (Moffat, the frame's true FWHM) inside the aperture, plus
    the neighbours' light inside the aperture, less what the star's own wings and its
    neighbours add to the sky level of the annulus (the clipped median of the annulus
    emulated on the true light, :func:`_annulus_sky_bias`) times the aperture's area. Its
    uncertainty is the measured error, the scintillation the truth states
    (``scintillation_sigma`` x flux) and 10 % of each modelled neighbour term, in
    quadrature. Measurements are used when they carry no photometry flag, are centred
    within 1 px of the true position, and each modelled neighbour term is below 1 sigma.

    Parameters
    ----------
    result : NightResult
        With ``field_photometry``.
    truth : dict
        :func:`astrodart.datasets.truth.load_truth`.
    maps : mapping
        Truth maps (``FLAT_<filter>``).

    Returns
    -------
    astropy.table.Table
        ``filter``, ``frame``, ``star``, ``flux`` (measured), ``flux_err``, ``true_flux``
        (expected measurement), ``neighbours`` (their modelled share of it), ``sigma``
        (total), ``z`` = (flux - true_flux) / sigma, ``used``.
    """
    from astrodart.calibration.flat import flat_normalisation
    from astrodart.datasets.simulate import moffat_alpha
    from astrodart.datasets.truth import frame_truth_stars

    res = result.field_photometry
    beta = truth["camera"]["beta"]
    stars = {"target": res["target"], **res["comparison_stars"]}
    rng = np.random.default_rng(0)
    rows = []
    for f in result.filters:
        level = flat_normalisation(maps[f"FLAT_{f}"])
        names = res["files"][f]
        for j, name in enumerate(names):
            key = _truth_key(name, truth)
            entry = truth["frames"][key]
            ts = frame_truth_stars(truth, key, margin=30)
            tx, ty = np.asarray(ts["x"], float), np.asarray(ts["y"], float)
            tflux = np.asarray(ts["flux"], float) * level
            a = float(moffat_alpha(entry["fwhm_px"], beta))
            for s, d in stars.items():
                m = d["filter"][f]
                x, y = m["x"][j], m["y"][j]
                r_ap, r_in, r_out = m["r_ap"][j], m["r_in"][j], m["r_out"][j]
                if not (np.isfinite(x) and np.isfinite(m["flux"][j])):
                    continue
                dist = np.hypot(tx - x, ty - y)
                i = int(np.argmin(dist))
                own = tflux[i] * _moffat_enclosed(r_ap, a, beta)
                near = np.flatnonzero((dist < r_out + 10 * entry["fwhm_px"])
                                      & (np.arange(len(ts)) != i))
                in_ap = float(np.sum(tflux[near] * _moffat_in_circle(
                    tx[near] - x, ty[near] - y, r_ap, a, beta)))
                sky_bias = _annulus_sky_bias(x, y, r_in, r_out, tx[[i, *near]],
                                             ty[[i, *near]], tflux[[i, *near]], a, beta,
                                             m["sky_std"][j], rng)
                sky_light = sky_bias * m["area"][j]
                neighbours = in_ap - sky_light
                true = own + neighbours
                sigma = math.sqrt(m["flux_err"][j] ** 2
                                  + (entry["scintillation_sigma"] * tflux[i]) ** 2
                                  + (0.1 * in_ap) ** 2 + (0.1 * sky_light) ** 2)
                used = bool(m["flags"][j] == 0 and dist[i] < 1.0 and in_ap < sigma
                            and abs(sky_light) < sigma)
                rows.append({"filter": f, "frame": key, "star": s, "flux": m["flux"][j],
                             "flux_err": m["flux_err"][j], "true_flux": true,
                             "neighbours": neighbours, "sigma": sigma,
                             "z": (m["flux"][j] - true) / sigma, "used": used})
    return Table(rows=rows)


def _rows_fluxes(t: Table) -> list[dict]:
    z = np.asarray(t["z"][t["used"]], float)
    n = f"{z.size} measurements of {len(set(t['star'][t['used']]))} stars"
    if not z.size:
        return [_row("star fluxes: mean |z|", "sigma", 0.8, math.nan, "<= 1", False)]
    return [_row(f"star fluxes: mean |flux - truth| / sigma ({n})", "sigma", 0.798,
                 float(np.mean(np.abs(z))), "<= 1 (within 1 sigma on average)",
                 float(np.mean(np.abs(z))) <= 1.0),
            _row("star fluxes: mean z (bias)", "sigma", 0.0, float(np.mean(z)), "|mean| <= 0.3",
                 abs(float(np.mean(z))) <= 0.3),
            _row("star fluxes: rms z (honest errors)", "sigma", 1.0,
                 float(np.sqrt(np.mean(z ** 2))), "0.8 .. 1.25",
                 0.8 <= float(np.sqrt(np.mean(z ** 2))) <= 1.25)]


def _rows_transit(result: NightResult, truth: dict) -> list[dict]:
    from astropy.coordinates import EarthLocation
    from astropy.time import Time

    from astrodart.photometry import timing

    tr = truth["transit"]
    if tr is None or result.transit is None:
        return [_row("transit depth", "%", math.nan, math.nan, "+-10 %", False)]
    site = truth["site"]
    loc = EarthLocation.from_geodetic(site["longitude"] * u.deg, site["latitude"] * u.deg,
                                      site["height"] * u.m)
    star = SkyCoord(tr["ra"], tr["dec"], unit="deg")
    t0 = float(timing.bjd_tdb(Time(tr["t0_jd"], format="jd", scale="utc"), star, loc).jd)
    fit = result.transit
    dt = (fit.t0 - t0) * 1440.0
    return [_row(f"transit depth (fit: +-{100 * fit.depth_err:.2f} %)", "%", 100 * tr["depth"],
                 100 * fit.depth, "+-10 %", abs(fit.depth / tr["depth"] - 1) <= 0.10),
            _row(f"transit mid-time - {t0:.5f} BJD_TDB (fit: +-{fit.t0_err * 1440:.1f} min)",
                 "min", 0.0, dt, "|dt| <= 2", abs(dt) <= 2.0)]


def _row(quantity, unit, truth, measured, tolerance, passed) -> dict:
    return {"quantity": quantity, "unit": unit, "truth": float(truth),
            "measured": float(measured), "tolerance": tolerance, "passed": bool(passed)}


def compare_with_truth(result: NightResult, truth=None) -> Table:
    """The reduction of a simulated night against its truth, row by row.

    Parameters
    ----------
    result : NightResult
        :func:`reduce_night` of a night written by :func:`astrodart.datasets.simulated_night.simulate_night`
        (with ``target_coord`` the transit star).
    truth : dict or str or pathlib.Path, optional
        :func:`astrodart.datasets.truth.load_truth` or the folder / file; default
        ``result.root/truth.json``. The per-pixel maps are read from the file it names
        (``truth_maps.fits`` beside it).

    Returns
    -------
    astropy.table.Table
        Columns ``quantity``, ``unit``, ``truth``, ``measured``, ``tolerance``, ``passed``:
        masters (rms and mean of master - truth against the noise of an N-frame average),
        plate solutions (offset from the true WCS), stack FWHM (against the FWHM of the
        mean true profile of the frames stacked), star fluxes (see
        :func:`star_flux_residuals`), transit depth and mid-time (truth converted to
        BJD_TDB). ``meta['flux_residuals']`` holds the per-measurement flux table.
    """
    from astropy.io import fits

    from astrodart.datasets.truth import TRUTH_MAPS, load_truth, truth_file

    where = Path(truth) if isinstance(truth, (str, os.PathLike)) else result.root
    if not isinstance(truth, dict):
        truth = load_truth(where)
    folder = truth_file(where).parent
    maps_path = folder / truth.get("maps", {}).get("file", TRUTH_MAPS)
    with fits.open(maps_path) as hdul:
        maps = {h.name: np.asarray(h.data, float) for h in hdul[1:]}
    rows = _rows_masters(result, truth, maps) + _rows_astrometry(result, truth)
    rows += _rows_stacks(result, truth)
    fluxes = None
    if result.field_photometry is not None:
        fluxes = star_flux_residuals(result, truth, maps)
        rows += _rows_fluxes(fluxes)
    rows += _rows_transit(result, truth)
    table = Table(rows=rows, names=("quantity", "unit", "truth", "measured", "tolerance",
                                    "passed"))
    if fluxes is not None:
        table.meta["flux_residuals"] = fluxes
    table.meta["night"] = f"{truth['night']} {truth['target']} (simulated, seed {truth['seed']})"
    return table


def format_comparison(table: Table) -> str:
    """The comparison table as plain text, one line per row, with a pass/fail count.

    Parameters
    ----------
    table : astropy.table.Table
        As returned by :func:`compare_with_truth` (columns quantity, unit, truth,
        measured, tolerance, ok).

    Returns
    -------
    str
        Aligned text ending with the line ``"N of M checks passed"``.
    """
    w = max(len(q) for q in table["quantity"])
    lines = [f"{'quantity':<{w}}  {'unit':<6} {'truth':>12} {'measured':>12}  "
             f"{'tolerance':<34} ok"]
    lines.append("-" * len(lines[0]))
    for r in table:
        lines.append(f"{r['quantity']:<{w}}  {r['unit']:<6} {r['truth']:>12.5g} "
                     f"{r['measured']:>12.5g}  {r['tolerance']:<34} "
                     f"{'yes' if r['passed'] else 'NO'}")
    n_ok = int(np.sum(table["passed"]))
    lines.append(f"{n_ok} of {len(table)} checks passed")
    return "\n".join(lines)


def save_comparison(table: Table, stem) -> tuple[Path, Path]:
    """Write :func:`compare_with_truth`'s table as text (:func:`format_comparison`) and ECSV.

    Parameters
    ----------
    table : astropy.table.Table
        The comparison.
    stem : str or pathlib.Path
        Path without suffix; ``.txt`` and ``.ecsv`` are written (atomically, replacing).

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The text and ECSV files.
    """
    from astrodart.frames.io import atomic_output

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    txt, ecsv = stem.with_suffix(".txt"), stem.with_suffix(".ecsv")
    with atomic_output(txt) as tmp:
        Path(tmp).write_text(f"{table.meta.get('night', '')}\n{format_comparison(table)}\n")
    plain = Table(table, copy=True)
    plain.meta = {k: v for k, v in table.meta.items() if isinstance(v, (str, int, float))}
    with atomic_output(ecsv) as tmp:
        plain.write(tmp, format="ascii.ecsv", overwrite=True)
    return txt, ecsv
