"""Layer 3: aperture photometry of a night, frame by frame, to differential light curves.

:class:`PhotometryRun` measures a target, comparison stars or a single object in every
frame of every filter (:func:`astrodart.pipeline.photometry_frames.measure_frame`), time
stamps each frame in BJD_TDB at mid-exposure with the target's airmass
(:mod:`astrodart.photometry.timing`), builds the ensemble differential light curve
(:func:`astrodart.photometry.ensemble.ensemble_light_curve`), fits a transit
(:func:`astrodart.photometry.transit.fit_transit`) and writes the results (HDF5 and one
ECSV table per filter). AstroDART's ``photometry`` class
(:mod:`astrodart.third_stage_photometry`) is this class plus a plot.

Result layout of :meth:`PhotometryRun.run_multi_coord` (``f`` is a filter name, ``n`` the
number of frames of that filter, ``m`` the number of comparison stars)::

    res['target']['coords']                 {'ra': {'value', 'unit'}, 'dec': {...}}; x/y in pixels
    res['target']['filter'][f]              dict of arrays of shape (n,):
        timestamps   BJD_TDB at mid-exposure (JD, days), toward the target
        flux, flux_err        sky-subtracted flux and 1-sigma error (data units, ADU or e-)
        mag_ins, mag_err      zmag - 2.5 log10(flux / exptime) and its error
        airmass               Hardie (1962) airmass of the target
        flags                 PhotFlag bits (0 = good); saturated, bad_pixels: bool views
        x, y                  0-based aperture centres; fwhm, r_ap, r_in, r_out (pixels)
        sky, sky_std          sky level and scatter per pixel; exptime (s); mid_exposure_utc (JD)
    res['comparison_stars']['comparison_N']  same structure, N = 1 .. m (the target's time stamps)
    res['differential']['filter'][f]        timestamps, rel_flux, rel_flux_err, airmass, valid (n,);
                                            weights, comparison_rms, comparison_expected_rms,
                                            comparison_excess, comparison_chi2_red,
                                            comparison_variable, comparison_used,
                                            comparison_reason (why dropped; '' = used) (m,);
                                            comparison_curves (m, n)
    res['files'][f]                         file names (n,)
    res['meta']                             method, apertures, site, versions, units;
                                            'auto': aperture_grid, aperture_choice[f]
                                            (chosen_factor, factors, scatter_p2p, ...)
                                            and fwhm_factors = the chosen radius + annulus
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

from astrodart.exceptions import warn, warning_tally
from astrodart.frames.header import FrameHeader
from astrodart.photometry.aperture_choice import choose_aperture
from astrodart.photometry.apertures import SEVERE_FLAGS, PhotFlag
from astrodart.photometry.ensemble import EnsembleResult, ensemble_light_curve
from astrodart.photometry.lightcurve import results_table
from astrodart.photometry.sites import resolve_location
from astrodart.photometry.transit import TransitFit, fit_transit
from astrodart.photometry.transit_model import BatmanFit, Ephemeris, fit_batman_transit
from astrodart.pipeline.photometry_frame import measure_frame
from astrodart.pipeline.photometry_results import (
    coords_record,
    differential_record,
    run_meta,
    star_record,
    time_stamps,
    write_ecsv,
    write_results_hdf5,
)
from astrodart.pipeline.photometry_setup import PhotometrySetup
from astrodart.pipeline.runlog import find_log_path, log_event
from astrodart.pipeline.star_positions import PhotometryWarning

__all__ = ["PhotometryRun"]

log = logging.getLogger("astrodart")

#: Per-star arrays of an aperture result kept in the results.
_STAR_KEYS = ("flux", "flux_err", "x", "y", "sky", "sky_std", "area", "n_sky", "n_repaired",
              "repaired_fraction")
#: Per-frame values kept in the results.
_FRAME_KEYS = ("fwhm", "r_ap", "r_in", "r_out", "exptime", "mid_utc")
#: Per-radius arrays of an 'auto' run, shape (radii, stars, frames).
_GRID_KEYS = ("flux", "flux_err", "area", "n_repaired", "repaired_fraction")


@dataclass
class _FilterFrames:
    """What the frames of one filter gave: per-star arrays (n_star, n) and per-frame ones."""

    stars: dict
    flags: np.ndarray
    frames: dict
    mids: list
    first_error: Exception | None = None
    grid: dict | None = None  # 'auto': flux, flux_err, area, flags of shape (k, n_star, n)


@dataclass
class _RunState:
    """Found while measuring: the site, the target's direction, the data units."""

    location: object
    sky_dir: SkyCoord | None
    units: set = field(default_factory=set)


class PhotometryRun(PhotometrySetup):
    __doc__ = PhotometrySetup.__doc__

    # -- the loop ----------------------------------------------------------------------
    def _measure_filter(self, k: int, coords: list, state: _RunState) -> _FilterFrames:
        """Measure every frame of filter ``k``; a failed frame stays NaN, flag FAILED."""
        fl, n_star = self.files[k], len(coords)
        n = len(fl)
        got = _FilterFrames(
            stars={key: np.full((n_star, n), np.nan) for key in _STAR_KEYS},
            flags=np.full((n_star, n), int(PhotFlag.FAILED), dtype=np.int64),
            frames={key: np.full(n, np.nan) for key in _FRAME_KEYS},
            mids=[None] * n,
        )
        if self.aperture_type == "auto":
            shape = (len(self.aperture_grid), n_star, n)
            got.grid = {key: np.full(shape, np.nan) for key in _GRID_KEYS}
            got.grid["flags"] = np.full(shape, int(PhotFlag.FAILED), dtype=np.int64)
        fwhm_prev = None
        iterator = range(n)
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=f"photometry {self.filters[k]}")
        for j in iterator:
            path = fl[j]
            try:
                r = measure_frame(path, [coords[s][k][j] for s in range(n_star)], fwhm_prev, self)
            except Exception as exc:  # one bad frame must not kill the night
                got.first_error = got.first_error or exc
                reason = f"{type(exc).__name__}: {exc}".replace(path, "the frame")
                warn(f"{reason}; frame skipped (NaN, flag FAILED)", PhotometryWarning, item=path)
                got.mids[j] = _mid_exposure_or_none(path)
                continue
            ap = r["ap"]
            for key, values in got.stars.items():
                values[:, j] = getattr(ap, key)
            got.flags[:, j] = r["flags"]
            for key, value in (("fwhm", r["fwhm"]), ("r_ap", ap.r_ap), ("r_in", ap.r_in),
                               ("r_out", ap.r_out), ("exptime", r["exptime"])):
                got.frames[key][j] = value
            got.mids[j] = r["mid"]
            if got.grid is not None:
                _store_grid(got.grid, j, r)
            fwhm_prev = r["fwhm"]
            self._learn_from_frame(r, path, state)
        return got

    def _learn_from_frame(self, r: dict, path: str, state: _RunState) -> None:
        """Site and target direction from the first frame that has them."""
        state.units.add(r["unit"])
        if state.location is None:
            state.location = resolve_location(self.obs_location, r["header"])
        if state.sky_dir is None:
            if r["target_sky"] is not None:
                state.sky_dir = r["target_sky"]
            elif r["header"].coord is not None:
                state.sky_dir = r["header"].coord
                log.info("BJD: target direction from the pointing RA/DEC of %s", path)

    def _run(self, coords: list, names: list[str]) -> dict:
        """Measure stars ``coords`` (each per filter per file) named ``names``."""
        out = {name: {"filter": {}} for name in names}
        files_out: dict[str, np.ndarray] = {}
        sky_dir = self.target_skycoord
        if sky_dir is None and self.phot_method == "sky":
            sky_dir = coords[0][0][0]
        state = _RunState(self.location, sky_dir)
        with warning_tally():
            for k, filt in enumerate(self.filters):
                got = self._measure_filter(k, coords, state)
                if np.all(got.flags & PhotFlag.FAILED):
                    err = got.first_error
                    raise RuntimeError(
                        f"no frame of filter {filt!r} could be measured; first error: "
                        f"{type(err).__name__}: {err}"
                    ) from err
                if state.sky_dir is None:
                    raise ValueError(
                        "BJD_TDB needs the target's sky position: the frames have no WCS and "
                        "no RA/DEC; pass target_skycoord=SkyCoord(...) to photometry()"
                    )
                bjd, am, got.frames["mid_utc"] = time_stamps(got.mids, state.sky_dir,
                                                             state.location)
                if got.grid is not None:
                    self._apply_choice(filt, got, bjd)
                for s, name in enumerate(names):
                    stars = {key: values[s] for key, values in got.stars.items()}
                    out[name]["filter"][filt] = star_record(stars, got.flags[s], got.frames,
                                                            bjd, am, self.zmag)
                files_out[filt] = np.array([Path(f).name for f in self.files[k]])
        for s, name in enumerate(names):
            out[name]["coords"] = coords_record(
                self.phot_method, coords[s], out[name], state.sky_dir if s == 0 else None
            )
        out["files"] = files_out
        out["meta"] = run_meta(self, state.units, state.sky_dir, state.location)
        return out

    def _apply_choice(self, filt: str, got: _FilterFrames, bjd) -> None:
        """'auto': choose the radius of least scatter and keep its numbers in ``got``."""
        g = got.grid
        valid = (g["flags"] & int(SEVERE_FLAGS)) == 0
        fwhm = got.frames["fwhm"]
        with np.errstate(invalid="ignore"):
            radius_px = [float(np.nanmedian(f * fwhm)) if np.isfinite(fwhm).any() else np.nan
                         for f in self.aperture_grid]
        many = g["flux"].shape[1] > 1
        choice = choose_aperture(
            self.aperture_grid, radius_px, g["flux"][:, 0], g["flux_err"][:, 0],
            g["flux"][:, 1:] if many else None, g["flux_err"][:, 1:] if many else None,
            valid=valid, time=bjd, variable_threshold=self.variable_threshold,
            min_valid_fraction=self.min_valid_fraction,
        )
        b = choice.best
        for key in _GRID_KEYS:
            got.stars[key] = g[key][b].copy()
        got.flags = g["flags"][b].copy()
        got.frames["r_ap"] = choice.factor * fwhm
        self.aperture_choices[filt] = choice
        log.info("aperture 'auto', filter %s: %.2f x FWHM (median %.2f px), point-to-point "
                 "scatter %.4g", filt, choice.factor, radius_px[b], choice.scatter[b])

    # -- public runs -------------------------------------------------------------------
    def run_single_coord(self) -> dict:
        """Photometry of ``single_coord`` in every frame.

        Returns
        -------
        dict
            ``res['object']['filter'][f]`` and ``res['object']['coords']`` (layout in the
            module docstring), plus ``res['files']`` and ``res['meta']``.
        """
        coords = [self._positions_for(self.single_coord, "single_coord")]
        res = self._run(coords, ["object"])
        self.results = res
        self._log("run_single_coord", 1)
        if self.save_results:
            self.save("photometry_results_single_object", res)
        return res

    def run_multi_coord(self) -> dict:
        """Photometry of the target and the comparison stars, and the differential
        light curve against their weighted ensemble.

        Returns
        -------
        dict
            ``res['target']``, ``res['comparison_stars']['comparison_N']``,
            ``res['differential']['filter'][f]``, ``res['files']``, ``res['meta']`` (layout
            in the module docstring). The :class:`EnsembleResult` of each filter is kept in
            ``self.ensembles``.

        Raises
        ------
        ValueError
            No comparison stars, or positions that do not match the files.
        """
        comps = self.comparison_coord
        if comps is None or len(comps) == 0:
            raise ValueError(
                "run_multi_coord() needs comparison_coord (one entry per comparison star)"
            )
        if self.phot_method == "sky" and isinstance(comps, SkyCoord):
            comps = list(comps) if not comps.isscalar else [comps]
        coords = [self._positions_for(self.target_coord, "target_coord")]
        coords += [self._positions_for(c, f"comparison_coord[{i}]") for i, c in enumerate(comps)]
        names = ["target"] + [f"comparison_{i + 1}" for i in range(len(comps))]
        flat = self._run(coords, names)
        res = {
            "target": flat["target"],
            "comparison_stars": {n: flat[n] for n in names[1:]},
            "differential": {"filter": {}},
            "files": flat["files"],
            "meta": flat["meta"],
        }
        for filt in self.filters:
            ens = self.differential(filt, res)
            self.ensembles[filt] = ens
            res["differential"]["filter"][filt] = differential_record(
                ens, res["target"]["filter"][filt]
            )
        self.results = res
        self._log("run_multi_coord", len(comps))
        if self.save_results:
            self.save("photometry_results_target_and_comparison", res)
        return res

    def differential(
        self, filter_name: str | None = None, results: dict | None = None, norm_mask=None
    ) -> EnsembleResult:
        """The ensemble differential light curve of one filter (see
        :func:`astrodart.photometry.ensemble.ensemble_light_curve`).

        Parameters
        ----------
        filter_name : str, optional
            Default the first filter.
        results : dict, optional
            A :meth:`run_multi_coord` result (default the last one).
        norm_mask : array_like of bool, shape (n,), optional
            Points that define the normalisation (e.g. out of transit).

        Returns
        -------
        EnsembleResult

        Raises
        ------
        ValueError
            No :meth:`run_multi_coord` result.
        """
        res = results if results is not None else self.results
        if res is None or "comparison_stars" not in res:
            raise ValueError("run run_multi_coord() first")
        filt = filter_name or self.filters[0]
        tgt = res["target"]["filter"][filt]
        comps = [c["filter"][filt] for c in res["comparison_stars"].values()]
        severe = int(SEVERE_FLAGS)
        valid = np.vstack(
            [(tgt["flags"] & severe) == 0] + [(c["flags"] & severe) == 0 for c in comps]
        )
        return ensemble_light_curve(
            tgt["flux"],
            tgt["flux_err"],
            np.vstack([c["flux"] for c in comps]),
            np.vstack([c["flux_err"] for c in comps]),
            valid=valid,
            norm_mask=norm_mask,
            variable_threshold=self.variable_threshold,
            **_vetting_inputs(tgt, comps, res, self.known_variables),
        )

    def _light_curve(self, filter_name: str | None) -> tuple[str, dict]:
        filt = filter_name or self.filters[0]
        if self.results is None or filt not in self.results.get("differential", {}).get(
            "filter", {}
        ):
            raise ValueError("run run_multi_coord() first")
        return filt, self.results["differential"]["filter"][filt]

    def fit_transit(
        self,
        filter_name: str | None = None,
        *,
        t0: float | None = None,
        duration: float | None = None,
        baseline_degree: int = 1,
        use_airmass: bool = False,
        t0_window: float | None = None,
        model: str = "trapezoid",
        ephemeris: Ephemeris | None = None,
        period: float | None = None,
        **batman_options,
    ) -> TransitFit | BatmanFit:
        """Fit a transit to the differential light curve of one filter: a trapezoid, or
        the physical model (``model='batman'``) detrended against airmass, FWHM, sky and
        the target's centroid, the regressors chosen by BIC.

        Parameters
        ----------
        filter_name : str, optional
            Default the first filter.
        t0 : float, optional
            Predicted mid-time, BJD_TDB (e.g. from the ephemeris).
        duration : float, optional
            Predicted total duration, days.
        baseline_degree : int
            Polynomial baseline degree in time.
        use_airmass : bool
            Add a baseline term linear in airmass.
        t0_window : float, optional
            Allowed distance of t0 from the prediction, days.
        model : {'trapezoid', 'batman'}
            The trapezoid least-squares fit, or the limb-darkened model sampled by emcee.
        ephemeris : Ephemeris, optional
            For ``'batman'``: period and t0 prior (see
            :func:`astrodart.photometry.transit_model.fit_batman_transit`).
        period : float, optional
            For ``'batman'`` without an ephemeris: the period, days.
        **batman_options
            For ``'batman'``: ``u``, ``n_walkers``, ``n_steps``, ``n_burn``, ``seed``.

        Returns
        -------
        TransitFit or BatmanFit
            See :func:`astrodart.photometry.transit.fit_transit` and
            :func:`astrodart.photometry.transit_model.fit_batman_transit`.

        Raises
        ------
        ValueError
            No :meth:`run_multi_coord` result for the filter, an unknown ``model``, or
            the fit failed.
        """
        filt, d = self._light_curve(filter_name)
        if model not in ("trapezoid", "batman"):
            raise ValueError(f"model={model!r}: use 'trapezoid' or 'batman'")
        if model == "batman":
            tgt = self.results["target"]["filter"][filt]
            regs = {k: tgt.get(k) for k in ("fwhm", "sky", "x", "y")}
            regs = {k: v for k, v in regs.items() if v is not None
                    and np.shape(v) == np.shape(d["timestamps"]) and np.nanstd(v) > 0}
            am = d.get("airmass")
            regs["airmass"] = am if am is not None and np.nanstd(am) > 0 else None
            return fit_batman_transit(
                d["timestamps"], d["rel_flux"], d["rel_flux_err"], ephemeris=ephemeris,
                period=period, t0=t0, duration=duration, filter_name=filt, regressors=regs,
                baseline_degree=baseline_degree, **batman_options)
        return fit_transit(
            d["timestamps"],
            d["rel_flux"],
            d["rel_flux_err"],
            t0=t0,
            duration=duration,
            baseline_degree=baseline_degree,
            airmass=d["airmass"] if use_airmass else None,
            t0_window=t0_window,
        )

    # -- output ------------------------------------------------------------------------
    def _log(self, what: str, n_comp: int) -> None:
        # Without an output folder, log only into an existing reduction tree's log: a folder
        # of raw frames never receives a file from photometry.
        if self.save_data_dir:
            target = find_log_path(self.save_data_dir)
        else:
            target = find_log_path(Path(self.files[0][0]).parent, existing_only=True)
        if target is None:
            return
        try:
            log_event(
                target,
                step=f"photometry.{what}",
                phot_method=self.phot_method,
                aperture_type=self.aperture_type,
                filters=self.filters,
                n_files=[len(f) for f in self.files],
                n_comparisons=n_comp,
            )
        except OSError as exc:  # a read-only data folder must not stop the science
            log.info("run log not written: %s", exc)

    def save(self, stem: str, results: dict | None = None) -> list[Path]:
        """Write results to ``save_data_dir/<stem>.h5`` and one ECSV table per filter.

        Parameters
        ----------
        stem : str
            File name without extension.
        results : dict, optional
            Default the last run's.

        Returns
        -------
        list of pathlib.Path
            The files written (atomically: temporary file, then rename).

        Raises
        ------
        FileExistsError
            A file exists and ``overwrite`` was explicitly 'no'.
        """
        res = results if results is not None else self.results
        if res is None or self.save_data_dir is None:
            raise ValueError("nothing to save, or no save_data_dir")
        self.save_data_dir.mkdir(parents=True, exist_ok=True)
        written = [write_results_hdf5(res, self.save_data_dir / f"{stem}.h5", self.overwrite)]
        for filt in self.filters:
            table = results_table(res, filt)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in filt)
            written.append(
                write_ecsv(table, self.save_data_dir / f"{stem}_{safe}.ecsv", self.overwrite)
            )
        log.info("photometry results written: %s", ", ".join(str(p) for p in written))
        return written


def _store_grid(grid: dict, j: int, r: dict) -> None:
    """Frame ``j``'s numbers at every radius of an 'auto' run into ``grid``."""
    for k, ap in enumerate(r["ap_grid"]):
        for key in _GRID_KEYS:
            grid[key][k, :, j] = getattr(ap, key)
        grid["flags"][k, :, j] = ap.flags | r["star_flags"]


def _vetting_inputs(tgt: dict, comps: list, res: dict, known) -> dict:
    """What the comparison vetting needs (:func:`~astrodart.photometry.ensemble.vet_comparisons`):
    time stamps, saturated points, median pixel positions (target first), the FWHM, the
    comparisons' sky positions when placed on the sky, and the known variables."""
    def median(values) -> float:  # NaN (no warning) when every frame failed
        v = np.asarray(values, float)
        return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else np.nan

    xy = np.array([[median(s["x"]), median(s["y"])] for s in [tgt] + comps])
    fwhm = median(tgt["fwhm"])
    out = {"time": tgt["timestamps"], "known_variables": known,
           "saturated": np.vstack([(c["flags"] & int(PhotFlag.SATURATED)) != 0
                                   for c in comps])}
    if np.all(np.isfinite(xy)) and np.isfinite(fwhm):
        out.update(positions=xy, fwhm=fwhm)
    recs = [c.get("coords", {}) for c in res["comparison_stars"].values()]
    if all("ra" in r and "dec" in r for r in recs) and known is not None:
        out["coords"] = SkyCoord([r["ra"]["value"] for r in recs],
                                 [r["dec"]["value"] for r in recs], unit="deg")
    return out


def _mid_exposure_or_none(path: str):
    try:
        return FrameHeader.from_file(path).mid_exposure
    except Exception:
        return None


