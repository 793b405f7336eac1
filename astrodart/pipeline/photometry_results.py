"""Layer 3: the results of a photometry run — their layout, and writing them.

The layout (documented in :mod:`astrodart.pipeline.photometry`) is built here frame
array by frame array; :func:`write_results_hdf5` writes it to HDF5 (groups for dicts,
datasets for arrays) and :func:`write_ecsv` one table
(:func:`astrodart.photometry.lightcurve.results_table`) per filter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.time import Time

from astrodart import __version__
from astrodart.frames.io import atomic_output
from astrodart.photometry import timing
from astrodart.photometry.apertures import PhotFlag, instrumental_magnitude
from astrodart.photometry.ensemble import EnsembleResult

__all__ = [
    "time_stamps",
    "star_record",
    "coords_record",
    "run_meta",
    "differential_record",
    "write_results_hdf5",
    "write_ecsv",
]


def time_stamps(mids, sky_dir, location):
    """BJD_TDB and airmass of each frame toward the target.

    Parameters
    ----------
    mids : list of astropy.time.Time or None, length n
        Mid-exposure time of each frame (None where unknown).
    sky_dir : astropy.coordinates.SkyCoord
        The target.
    location : astropy.coordinates.EarthLocation
        The observatory.

    Returns
    -------
    bjd, airmass, mid_utc : numpy.ndarray, shape (n,)
        BJD_TDB (JD days), Hardie airmass and the mid-exposure UTC (JD); NaN where no
        time is known.
    """
    n = len(mids)
    have = np.array([m is not None for m in mids])
    bjd = np.full(n, np.nan)
    am = np.full(n, np.nan)
    mid_utc = np.full(n, np.nan)
    if have.any():
        t = Time([m for m in mids if m is not None])
        mid_utc[have] = t.utc.jd
        bjd[have] = timing.bjd_tdb(t, sky_dir, location).jd
        am[have] = timing.airmass(t, sky_dir, location)
    return bjd, am, mid_utc


def star_record(stars: dict, flags, frames: dict, bjd, am, zmag: float) -> dict:
    """The results of one star in one filter (layout in :mod:`astrodart.pipeline.photometry`).

    Parameters
    ----------
    stars : dict of numpy.ndarray, shape (n,)
        The star's ``flux``, ``flux_err``, ``x``, ``y``, ``sky``, ``sky_std``, ``area``,
        ``n_sky``, ``n_repaired`` (masked pixels of the aperture, repaired before the
        sum) and ``repaired_fraction`` (their share of the flux) per frame.
    flags : numpy.ndarray of int, shape (n,)
        :class:`~astrodart.photometry.apertures.PhotFlag` bits.
    frames : dict of numpy.ndarray, shape (n,)
        ``fwhm``, ``r_ap``, ``r_in``, ``r_out`` (pixels), ``exptime`` (s), ``mid_utc`` (JD).
    bjd, am : numpy.ndarray, shape (n,)
        BJD_TDB and airmass (:func:`time_stamps`).
    zmag : float
        Magnitude of 1 data unit per second.

    Returns
    -------
    dict
        Arrays of shape (n,), keyed as in the results layout.
    """
    mag, mag_err = instrumental_magnitude(stars["flux"], stars["flux_err"], frames["exptime"],
                                          zmag)
    rec = {
        "timestamps": bjd.copy(),
        "flux": stars["flux"],
        "flux_err": stars["flux_err"],
        "mag_ins": mag,
        "mag_err": mag_err,
        "airmass": am.copy(),
        "flags": flags,
        "saturated": (flags & PhotFlag.SATURATED) > 0,
        "bad_pixels": (flags & PhotFlag.BAD_PIXEL) > 0,
    }
    for key in ("x", "y", "sky", "sky_std", "area", "n_sky", "n_repaired", "repaired_fraction"):
        rec[key] = stars[key]
    for key in ("fwhm", "r_ap", "r_in", "r_out", "exptime"):
        rec[key] = frames[key].copy()
    rec["mid_exposure_utc"] = frames["mid_utc"].copy()
    return rec


def coords_record(phot_method: str, coord, star_res: dict, sky_dir) -> dict:
    """Where a star is: RA/Dec (degrees) for sky positions, else its first pixel position
    and, for the target, the sky direction used for the time stamps.

    Parameters
    ----------
    phot_method : {'sky', 'pixel'}
        How the star was placed.
    coord : list
        Its positions per filter per file (a SkyCoord or an ``(x, y)`` array each).
    star_res : dict
        Its results (``star_res['filter'][f]``).
    sky_dir : astropy.coordinates.SkyCoord or None
        The target's direction (None for comparisons).

    Returns
    -------
    dict
        ``{'ra': {'value', 'unit'}, 'dec': ...}`` and/or ``{'x': ..., 'y': ...}``.
    """
    if phot_method == "sky":
        c = coord[0][0]
        return {
            "ra": {"value": float(c.icrs.ra.deg), "unit": "degree"},
            "dec": {"value": float(c.icrs.dec.deg), "unit": "degree"},
        }
    first = next(iter(star_res["filter"].values()))
    rec = {
        "x": {"value": float(first["x"][0]), "unit": "pixel"},
        "y": {"value": float(first["y"][0]), "unit": "pixel"},
    }
    if sky_dir is not None:
        rec["ra"] = {"value": float(sky_dir.icrs.ra.deg), "unit": "degree"}
        rec["dec"] = {"value": float(sky_dir.icrs.dec.deg), "unit": "degree"}
    return rec


def run_meta(run, units, sky_dir, location) -> dict:
    """``results['meta']``: method, apertures, units, time scale, target and site.

    Parameters
    ----------
    run : astrodart.pipeline.photometry.PhotometryRun
        The run (its options are recorded).
    units : set of str
        Data units of the frames measured.
    sky_dir : astropy.coordinates.SkyCoord
        The target's direction.
    location : astropy.coordinates.EarthLocation
        The observatory.

    Returns
    -------
    dict
        Scalars and small arrays, HDF5- and ECSV-friendly. For ``aperture_type='auto'``
        also ``aperture_grid``, ``aperture_annulus_fwhm`` and ``aperture_choice`` (per
        filter: :meth:`astrodart.photometry.aperture_choice.ApertureChoice.as_record`),
        and ``fwhm_factors`` is the chosen radius with the annulus.
    """
    geo = location.to_geodetic()
    return {
        "astrodart_version": __version__,
        "phot_method": run.phot_method,
        "aperture_type": run.aperture_type,
        "fwhm_factors": _recorded_factors(run),
        "zmag": run.zmag,
        "sky_sigma_clip": run.sigma,
        "flux_unit": ",".join(sorted(units)),
        "time_scale": "BJD_TDB (JD days) at mid-exposure, barycentric toward the target",
        "target_ra_deg": float(sky_dir.icrs.ra.deg),
        "target_dec_deg": float(sky_dir.icrs.dec.deg),
        "site_lat_deg": float(geo.lat.deg),
        "site_lon_deg": float(geo.lon.deg),
        "site_height_m": float(geo.height.to_value(u.m)),
        "error_model": "CCD equation (Merline & Howell 1995) or uncertainty plane; median sky",
        "flag_bits": ", ".join(f"{f.name}={int(f.value)}" for f in PhotFlag if f.value),
        "date": str(run.date or ""),
        "target_name": str(run.target_name or ""),
        **_auto_meta(run),
    }


def _recorded_factors(run) -> np.ndarray:
    """Aperture, annulus inner and outer radius in FWHM: for 'auto' the chosen radius (of
    the first filter; every filter's is in ``aperture_choice``)."""
    if run.aperture_type in ("fwhm", "optimal"):
        return np.array(run.fwhm_factors)
    choices = getattr(run, "aperture_choices", {})
    if run.aperture_type == "auto" and choices:
        first = choices.get(run.filters[0]) or next(iter(choices.values()))
        return np.array([first.factor, *run.fwhm_factors[1:]])
    return np.array([])


def _auto_meta(run) -> dict:
    """``aperture_grid`` and ``aperture_choice`` (per filter) of an 'auto' run."""
    if run.aperture_type != "auto":
        return {}
    return {
        "aperture_grid": [float(v) for v in run.aperture_grid],
        "aperture_annulus_fwhm": [float(v) for v in run.fwhm_factors[1:]],
        "aperture_choice": {f: c.as_record() for f, c in run.aperture_choices.items()},
    }


def differential_record(ens: EnsembleResult, tgt: dict) -> dict:
    """``results['differential']['filter'][f]`` from an ensemble light curve.

    Parameters
    ----------
    ens : astrodart.photometry.ensemble.EnsembleResult
        The filter's ensemble light curve.
    tgt : dict
        The target's results in that filter (for the time stamps and airmass).

    Returns
    -------
    dict
        Arrays of shape (n,) per frame and (m,) per comparison, ``comparison_curves``
        of shape (m, n).
    """
    d = ens.diagnostics
    return {
        "timestamps": tgt["timestamps"],
        "airmass": tgt["airmass"],
        "rel_flux": ens.rel_flux,
        "rel_flux_err": ens.rel_flux_err,
        "valid": ens.valid,
        "reference": ens.reference,
        "reference_err": ens.reference_err,
        "weights": ens.weights,
        "comparison_rms": np.asarray(d["rms"]),
        "comparison_expected_rms": np.asarray(d["expected_rms"]),
        "comparison_excess": np.asarray(d["excess"]),
        "comparison_chi2_red": np.asarray(d["chi2_red"]),
        "comparison_variable": np.asarray(d["variable"]),
        "comparison_used": np.asarray(d["used"]),
        "comparison_reason": np.asarray(d["reason"]).astype(str),  # why dropped ('' = used)
        "comparison_curves": ens.comparison_curves,
    }


# ---------------------------------------------------------------------------- saving
def _h5_value(v):
    if isinstance(v, (str, np.str_)):
        return str(v)
    a = np.asarray(v)
    if a.dtype.kind in "US":
        import h5py

        return a.astype(object).astype(h5py.string_dtype())
    return a


def _h5_write(group, d: dict) -> None:
    for key, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            _h5_write(group.create_group(str(key)), v)
        elif isinstance(v, Table):
            sub = group.create_group(str(key))
            for col in v.colnames:
                sub.create_dataset(col, data=_h5_value(v[col]))
        else:
            group.create_dataset(str(key), data=_h5_value(v))


def write_results_hdf5(results: dict, path, overwrite: bool = True) -> Path:
    """Write a nested results dict to HDF5 (groups for dicts, datasets for arrays).

    Parameters
    ----------
    results : dict
        As returned by
        :meth:`astrodart.pipeline.photometry.PhotometryRun.run_multi_coord` or
        ``run_single_coord``.
    path : str or pathlib.Path
        Destination ``.h5``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    import h5py

    with atomic_output(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["astrodart_version"] = __version__
            _h5_write(h5, results)
    return Path(path)


def write_ecsv(table: Table, path, overwrite: bool) -> Path:
    """Write a table as ECSV, atomically.

    Parameters
    ----------
    table : astropy.table.Table
        The table (e.g. :func:`astrodart.photometry.lightcurve.results_table`).
    path : str or pathlib.Path
        Destination ``.ecsv``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    with atomic_output(path, overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return Path(path)
