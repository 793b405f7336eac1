"""The truth of a simulated night: writing ``truth.json`` and ``truth_maps.fits``, reading them.

:func:`load_truth` reads what :func:`astrodart.datasets.simulated_night.simulate_night`
wrote; :func:`truth_wcs` and :func:`frame_truth_stars` give the true WCS and the true
star positions and fluxes of one science frame.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS


from astrodart.datasets.night_model import _Night, _plain, _r

__all__ = [
    "TRUTH_MAPS",
    "truth_file",
    "load_truth",
    "truth_wcs",
    "frame_truth_stars",
]

log = logging.getLogger("astrodart")


#: File beside ``truth.json`` holding the per-pixel truth of a simulated night's camera
#: (extensions BIAS in ADU, DARK in e-/s, FLAT_<filter> with mean 1).
TRUTH_MAPS = "truth_maps.fits"


def _truth(night: _Night, done, seed, date, night_dir: Path, series_filter, params) -> dict:
    cam = night.camera
    st = night.stars
    counts: dict[str, int] = {}
    frames = {}
    for spec, info in done:
        key = {"bias": "bias", "dark": f"dark/{spec.exptime:g}", "flat": f"flat/{spec.filter}",
               "object": f"object/{spec.filter}"}[spec.kind]
        counts[key] = counts.get(key, 0) + 1
        frames[spec.name] = info
    transit = None
    if night.transit is not None:
        transit = {k: v for k, v in night.transit.items()}
        transit["t0_jd"] = _r(transit["t0_jd"], 8)
    from astrodart import __version__
    return {
        "generator": "astrodart.datasets.simulated_night.simulate_night",
        "astrodart_version": __version__,
        "seed": seed, "parameters": params, "night": night_dir.name, "date": date,
        "target": night.target, "pointing_radec": list(night.centre),
        "series_filter": series_filter,
        "counts": counts,
        "conventions": {"pixels": "0-based (x, y), centre of the first pixel at (0, 0); FITS = +1",
                        "wcs": "FITS keywords with 1-based CRPIX",
                        "times": "UTC; jd_mid_utc at mid-exposure",
                        "flux": "e- per exposure at the detector, before the flat-field response"},
        "camera": {**_plain(asdict(cam)),
                   "shape": list(night.shape), "pixel_scale_arcsec": night.scale,
                   "bias_level_adu": cam.bias_level,
                   "bias_columns_adu": _r(night.bias.mean(axis=0) - cam.bias_level, 3),
                   "saturation_adu": int(min(65535, cam.full_well // cam.gain + cam.bias_level)),
                   "dark_current_median_e_per_s": _r(float(np.median(night.dark)), 5),
                   "dark_current_mean_e_per_s": _r(float(np.mean(night.dark)), 5),
                   "hot_pixels_xy_rate": [[int(x), int(y), _r(night.dark[y, x], 3)]
                                          for y, x in zip(night.hot_y, night.hot_x)],
                   "optical_centre_xy": _r(night.optical_centre, 3),
                   "donuts": {f: [_r([d.x, d.y, d.radius, d.depth], 4) for d in ds] for f, ds
                              in {"window": night.window_donuts, **night.filter_donuts}.items()},
                   "flat_illumination_e": night.flat_level},
        "site": night.conditions.record(),
        "stars": {"id": st["id"], "real": st["real"], "ra": _r(st["ra"], 8),
                  "dec": _r(st["dec"], 8),
                  "mag": {f: _r(m, 3) for f, m in st["mag"].items()},
                  "rate_e_per_s": {f: _r(r, 4) for f, r in st["rate"].items()},
                  "source": "real: Tycho-2 via astrodart/data/m67_tycho2.ecsv; SYN-*: synthetic"},
        "transit": transit,
        "frames": frames,
        "maps": {"file": TRUTH_MAPS,
                 "BIAS": "bias structure (ADU, float32) without the per-frame bias_offset_adu",
                 "DARK": "dark current (e-/s per pixel, float32), hot pixels and glow included",
                 "FLAT_<filter>": "flat-field response (float32, mean 1) of each filter"},
    }


def _truth_maps_bytes(night: _Night, filters: Sequence[str]) -> bytes:
    """The camera's per-pixel truth (bias, dark current, flat responses) as a FITS file."""
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(night.bias.astype(np.float32), name="BIAS"),
            fits.ImageHDU(night.dark.astype(np.float32), name="DARK")]
    hdus += [fits.ImageHDU(night.flat[f].astype(np.float32), name=f"FLAT_{f}") for f in filters]
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf, output_verify="exception")
    return buf.getvalue()


def truth_file(path) -> Path:
    """Where the truth of a simulated night is: ``path/uncal_data/truth.json``.

    The truth lives with the raw night it describes, inside ``uncal_data/`` (never in the
    project folder itself, which may be a repository root). A ``truth.json`` written
    straight into ``path`` by an older version is still found.

    Parameters
    ----------
    path : str or pathlib.Path
        ``truth.json`` itself, or the project (``dest``) folder.

    Returns
    -------
    pathlib.Path
        The file (which need not exist yet); ``truth_maps.fits`` goes beside it.
    """
    p = Path(path)
    if p.suffix == ".json" and not p.is_dir():
        return p
    new, old = p / "uncal_data" / "truth.json", p / "truth.json"
    return old if old.exists() and not new.exists() else new


def load_truth(path) -> dict:
    """Read the truth of a simulated night.

    Parameters
    ----------
    path : str or pathlib.Path
        ``truth.json`` or the ``dest`` folder holding it.

    Returns
    -------
    dict
        See :func:`simulate_night`; ``frames`` is keyed by file name.

    Raises
    ------
    FileNotFoundError
        No truth file there.
    """
    p = truth_file(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no truth.json (made by "
                                "astrodart.datasets.simulated_night.simulate_night)")
    return json.loads(p.read_text())


def _frame_entry(truth: dict, frame) -> dict:
    name = Path(frame).name
    try:
        entry = truth["frames"][name]
    except KeyError:
        raise KeyError(f"{name}: not a frame of this simulated night") from None
    if "wcs" not in entry:
        raise KeyError(f"{name}: a {entry['type']} frame has no sky and no WCS")
    return entry


def truth_wcs(truth: dict, frame) -> WCS:
    """The true WCS of a science frame.

    Parameters
    ----------
    truth : dict
        From :func:`load_truth`.
    frame : str or pathlib.Path
        The frame's path or file name (any step prefix is not understood: use the raw name).

    Returns
    -------
    astropy.wcs.WCS

    Raises
    ------
    KeyError
        Unknown frame, or a calibration frame.
    """
    return WCS(fits.Header(_frame_entry(truth, frame)["wcs"]))


def frame_truth_stars(truth: dict, frame, margin: float = 0.0) -> Table:
    """The stars of a science frame with their true positions and fluxes.

    Parameters
    ----------
    truth : dict
        From :func:`load_truth`.
    frame : str or pathlib.Path
        The frame's path or file name.
    margin : float
        Keep stars up to this many pixels outside the frame (a negative margin keeps only
        stars at least that far inside it).

    Returns
    -------
    astropy.table.Table
        ``id``, ``real``, ``x``, ``y`` (0-based pixels), ``mag`` (in the frame's filter) and
        ``flux`` (expected electrons at the detector before the flat-field response: the
        catalogue rate x exposure x atmospheric transmission, x the transit factor for the
        transit star; scintillation, a few 0.1 %, is noise and not included), brightest
        first.
    """
    entry = _frame_entry(truth, frame)
    f = entry["filter"]
    st = truth["stars"]
    x, y = truth_wcs(truth, frame).all_world2pix(np.asarray(st["ra"]), np.asarray(st["dec"]), 0)
    flux = np.asarray(st["rate_e_per_s"][f]) * entry["exptime"] * entry["atmospheric_transmission"]
    if truth.get("transit"):
        i = st["id"].index(truth["transit"]["star_id"])
        flux[i] *= entry["transit_factor"]
    ny, nx = truth["camera"]["shape"]
    lo = -0.5 - margin
    keep = (x > lo) & (x < nx - 1 - lo) & (y > lo) & (y < ny - 1 - lo)
    t = Table({"id": np.asarray(st["id"])[keep], "real": np.asarray(st["real"])[keep], "x": x[keep],
               "y": y[keep], "mag": np.asarray(st["mag"][f])[keep], "flux": flux[keep]})
    t.sort("flux", reverse=True)
    return t
