"""Layer 3: measure the seeing (FWHM) of frames on disk.

The file-level side of :func:`astrodart.sources.psf.measure_fwhm`: read each frame,
take its saturation level from the header (or the plateau of saturated pixels), measure
the FWHM on isolated, unsaturated stars, and convert to arcseconds with the frame's
plate solution (or its nominal scale keywords).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from astrodart.exceptions import AstrodartWarning, warn, quiet
from astrodart.frames.checks import check_number
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import FrameError
from astrodart.pipeline.kinds import MeasuringStep
from astrodart.pipeline.solve import frame_saturation
from astrodart.sources.psf import NoStarsWarning, measure_fwhm

__all__ = ["FWHMFailedWarning", "frame_pixel_scale", "get_fwhm"]

log = logging.getLogger("astrodart.second_stage")


class FWHMFailedWarning(AstrodartWarning):
    """No FWHM could be measured on a frame; its value is NaN."""


def frame_pixel_scale(fh: FrameHeader) -> float | None:
    """Pixel scale of a frame, arcsec/px.

    Parameters
    ----------
    fh : FrameHeader
        The frame's header.

    Returns
    -------
    float or None
        From a celestial WCS in the header when there is one (a plate solution beats a
        nominal scale), else from the scale keywords; None if unknown.
    """
    with quiet():
        try:
            w = WCS(fh.header)
        except Exception:  # malformed WCS keywords: fall back to the scale keywords
            w = None
    if w is not None and w.has_celestial:
        return float(np.mean(proj_plane_pixel_scales(w.celestial)) * 3600.0)
    return fh.pixel_scale


class get_fwhm(MeasuringStep):
    """Measure the FWHM (seeing) of each frame.

    A :class:`~astrodart.pipeline.kinds.MeasuringStep` run serially in this process
    (:meth:`run` returns :meth:`to_table`); it writes no file (a run log that exists near
    the frames gets a record).

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        FITS frames.
    fwhm_guess : float, optional
        Starting FWHM in pixels (see :func:`astrodart.sources.psf.measure_fwhm`).
    threshold : float
        Detection threshold in sigma of the filtered background.
    max_stars : int
        Fit at most this many isolated, unsaturated stars per frame.
    min_snr : float
        Minimum signal-to-noise of a fitted star.
    saturation : float, optional
        Saturation level in data units; default from the header or the frame's plateau.

    Attributes
    ----------
    results : dict
        File -> :class:`~astrodart.sources.psf.FWHMResult` (None when the frame
        could not be read), filled by :meth:`estimate_fwhm`.

    Examples
    --------
    >>> fw = get_fwhm(files)                 # doctest: +SKIP
    >>> fwhm_px = fw.estimate_fwhm()         # doctest: +SKIP
    >>> fw.fwhm_arcsec, fw.ellipticity       # doctest: +SKIP
    """

    name = "get_fwhm"
    capture_errors = False
    new_log = False

    def __init__(self, files: Sequence, *, fwhm_guess: float | None = None, threshold: float = 5.0,
                 max_stars: int = 25, min_snr: float = 20.0, saturation: float | None = None):
        paths = [files] if isinstance(files, (str, Path)) else list(files)
        wdir = Path(paths[0]).parent if paths else Path(".")
        super().__init__(wdir, paths, executor="serial", progress=False)
        me, positive = "get_fwhm", {"minimum": 0, "exclusive": True}
        self.fwhm_guess = check_number("fwhm_guess", fwhm_guess, allow_none=True, owner=me,
                                       unit="px", **positive)
        self.threshold = check_number("threshold", threshold, owner=me, unit="sigma", **positive)
        self.max_stars = check_number("max_stars", max_stars, minimum=1, integer=True, owner=me)
        self.min_snr = check_number("min_snr", min_snr, owner=me, **positive)
        self.saturation = check_number("saturation", saturation, allow_none=True, owner=me,
                                       **positive)
        self.results: dict = {}
        self.pixel_scales: dict[str, float | None] = {}

    def parameters(self) -> dict:
        """The measuring parameters, recorded in the run log.

        Returns
        -------
        dict
            ``fwhm_guess``, ``threshold``, ``max_stars``, ``min_snr``, ``saturation``.
        """
        return {"fwhm_guess": self.fwhm_guess, "threshold": self.threshold,
                "max_stars": self.max_stars, "min_snr": self.min_snr,
                "saturation": self.saturation}

    def measure(self, ccd, path: str) -> dict:
        """Measure one frame.

        %(frame_parameters)s

        Returns
        -------
        dict
            ``{'pixel_scale': arcsec/px or None, 'result': FWHMResult or None}`` (None,
            with a :class:`FWHMFailedWarning`, when the measurement raised ``ValueError``).
        """
        fh = FrameHeader(ccd.meta, path)
        row = {"pixel_scale": frame_pixel_scale(fh), "result": None}
        try:
            sat = self.saturation if self.saturation is not None else frame_saturation(fh, ccd.data)
            with quiet(NoStarsWarning):
                row["result"] = measure_fwhm(ccd.data, fwhm_guess=self.fwhm_guess,
                                             threshold=self.threshold, saturation=sat,
                                             max_stars=self.max_stars, min_snr=self.min_snr,
                                             mask=ccd.mask)
        except ValueError as exc:
            warn(str(exc), FWHMFailedWarning, item=path, stacklevel=3)
        return row

    def execute(self, task) -> dict:
        """Read and measure one frame; an unreadable frame gives no result.

        %(task_parameters)s

        Returns
        -------
        dict
            The row of :meth:`measure`, or ``{'result': None}`` (with a
            :class:`FWHMFailedWarning`) when the frame could not be read.
        """
        try:
            return super().execute(task)
        except (FrameError, OSError, ValueError) as exc:
            warn(str(exc), FWHMFailedWarning, item=task.key, stacklevel=3)
            return {"result": None}

    def result(self, tasks, report) -> Table:
        """Keep every frame's result and pixel scale; return :meth:`to_table`.

        %(result_parameters)s

        Returns
        -------
        astropy.table.Table
            As :meth:`to_table`.
        """
        for t in tasks:
            row = report.summaries[t.key]
            self.results[t.key] = row["result"]
            if "pixel_scale" in row:
                self.pixel_scales[t.key] = row["pixel_scale"]
        self.table = self.to_table()
        return self.table

    def estimate_fwhm(self) -> list[float]:
        """Measure every frame.

        Returns
        -------
        list of float
            FWHM in pixels, one per file in input order; NaN (with a
            :class:`FWHMFailedWarning`) for a frame that is unreadable or has no usable star.
        """
        out = []
        self.run()
        for f in self.files:
            res = self.results[f]
            if res is None:
                out.append(float("nan"))
                continue
            if not np.isfinite(res.fwhm):
                warn(f"no isolated, unsaturated star with S/N >= {self.min_snr:g} "
                     f"({len(res.detections)} detections)", FWHMFailedWarning, item=f,
                     stacklevel=3)
            log.info("%s: FWHM %.2f px from %d stars", f, res.fwhm, res.n_stars)
            out.append(float(res.fwhm))
        return out

    def _per_file(self, attr):
        if not self.results and self.files:
            self.estimate_fwhm()
        return [float(getattr(self.results[f], attr)) if self.results.get(f) else float("nan")
                for f in self.files]

    @property
    def fwhm(self) -> list[float]:
        """FWHM per file, pixels (measures on first use)."""
        return self._per_file("fwhm")

    @property
    def ellipticity(self) -> list[float]:
        """Median ``1 - minor/major`` per file (measures on first use)."""
        return self._per_file("ellipticity")

    @property
    def fwhm_arcsec(self) -> list[float]:
        """FWHM per file in arcseconds (pixel scale from the frame's WCS if solved, else
        from its scale keywords), NaN where the scale is unknown."""
        px = self.fwhm
        return [p * self.pixel_scales[f] if self.pixel_scales.get(f) else float("nan")
                for f, p in zip(self.files, px)]

    def to_table(self) -> Table:
        """The measurements as a table (measures on first use).

        Returns
        -------
        astropy.table.Table
            One row per file: ``file``, ``fwhm`` (px), ``fwhm_err`` (px), ``fwhm_arcsec``,
            ``ellipticity``, ``beta`` (Moffat index), ``n_stars``.
        """
        fw = self.fwhm
        t = Table({"file": self.files, "fwhm": fw, "fwhm_err": self._per_file("fwhm_err"),
                   "fwhm_arcsec": self.fwhm_arcsec, "ellipticity": self.ellipticity,
                   "beta": self._per_file("beta"),
                   "n_stars": [self.results[f].n_stars if self.results.get(f) else 0
                               for f in self.files]})
        t["fwhm"].unit = t["fwhm_err"].unit = u.pix
        t["fwhm_arcsec"].unit = u.arcsec
        return t

