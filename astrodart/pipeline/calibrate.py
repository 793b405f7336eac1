"""Layer 3: the stage-1 steps that apply masters: bias, dark, flat, bad pixels.

:class:`subtract_bias`, :class:`subtract_dark` (scaled to each exposure, picked among
several masters or interpolated between them), :class:`correct_flatfield` and
:class:`bad_pixel_correction`; the science is in :mod:`astrodart.calibration` (bias, dark,
flat, pixels).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError, CalibrationWarning
from astrodart.calibration.dark_temperature import DARK_TEMPERATURE_TOLERANCE, nearest_temperature
from astrodart.frames.header import FrameHeader, MissingKeywordError
from astrodart.frames.io import read_header
from astrodart.pipeline.calibration_step import (
    CalibrationStep,
    Files,
    Overwrite,
    PathLike,
    _check_master,
    _compare_geometry,
    _frame_header,
    _one_path,
    load_master,
)

__all__ = [
    "subtract_bias",
    "subtract_dark",
    "dark_for_exposure",
    "correct_flatfield",
    "bad_pixel_correction",
]


class subtract_bias(CalibrationStep):  # noqa: N801
    """Subtract a master bias.

    %(step_parameters)s
    masterbias_file : str
        Master bias (same size, binning and unit as the frames).
    %(engine_parameters)s

    Raises
    ------
    FileNotFoundError
        The master does not exist.
    CalibrationError
        (at ``run``) the master's size or binning differs from the frames'.
    """

    name = "subtract_bias"
    prefix = "bias_subtracted_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        masterbias_file: PathLike,
        overwrite: Overwrite = False,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.masterbias_file = _one_path(masterbias_file, "master bias")

    def masters(self):
        """The master used, recorded in provenance.

        Returns
        -------
        dict
            ``{'master bias': path}``.
        """
        return {"master bias": self.masterbias_file}

    def check(self):
        """Compare the master bias with the first readable input before any frame.

        Raises
        ------
        CalibrationError
            Its size or binning differs; the message names both files and the fix.
        """
        _check_master(self.name, self.masterbias_file, "master bias", self.files)

    def apply(self, ccd, path):
        """Subtract the master bias from one frame.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            ``ccd - master``, variances added, masks OR-ed; the master in ``ADMBIAS``.

        Raises
        ------
        CalibrationError
            The master's size, binning or unit differs from the frame's.
        """
        master = load_master(self.masterbias_file)
        _compare_geometry(self.name, self.masterbias_file, "master bias", master, path, ccd)
        try:
            out = cal.subtract_master_bias(ccd, master)
        except CalibrationError as exc:
            raise CalibrationError(f"{exc} (master {self.masterbias_file})") from None
        out.meta["ADMBIAS"] = str(
            Path(self.masterbias_file).resolve()
        )  # path: no room for a comment
        return out


def _dark_entries(paths: Sequence[str]) -> list[tuple[float, str, bool]]:
    """``(exptime, path, bias_subtracted)`` of master darks, sorted by exposure time."""
    return list(_dark_entries_cached(tuple((p, Path(p).stat().st_mtime_ns) for p in paths)))


@functools.lru_cache(maxsize=16)
def _dark_entries_cached(key: tuple) -> tuple:
    out = []
    for p, _ in key:
        h = read_header(p)
        out.append((FrameHeader(h, p).exptime, p, cal.is_bias_subtracted(h)))
    return tuple(sorted(out))


def dark_for_exposure(
    masterdark_files: Sequence[str], exptime: float, temperature: float | None = None,
    tolerance: float = DARK_TEMPERATURE_TOLERANCE, item: str | None = None,
) -> tuple[CCDData, float, bool, str]:
    """The master dark to subtract from a frame of exposure ``exptime``.

    The master of that exposure time (within 0.1 %) if there is one (of several, the one
    nearest the frame's sensor temperature:
    :func:`astrodart.calibration.dark_temperature.nearest_temperature`, which warns
    beyond ``tolerance``); else the only
    master (scaled later if it is bias-subtracted); else the per-pixel least-squares
    line ``D = t A + B`` through all masters evaluated at ``exptime`` (cached per process).

    Parameters
    ----------
    masterdark_files : sequence of str
        Master darks (with ``EXPTIME``), all bias-subtracted or none.
    exptime : float
        Exposure time (s) of the frame.
    temperature : float, optional
        Sensor temperature (deg C) of the frame; None: masters matched on exposure only.
    tolerance : float
        Largest temperature difference (deg C) before a warning.
    item : str, optional
        The frame, named in a warning.

    Returns
    -------
    dark : CCDData
        ``(ny, nx)`` master dark (shared when read from a file: do not modify).
    dark_exptime : float
        Its exposure time (s); ``exptime`` for an interpolated dark.
    bias_subtracted : bool
        Whether the masters are bias-subtracted (and so may be scaled).
    source : str
        The path of the master used, or ``'interpolated from N masters'``.

    Raises
    ------
    astrodart.frames.header.MissingKeywordError
        A master has no exposure time.
    CalibrationError
        Masters of different shapes, or fewer than two exposure times to interpolate.
    """
    entries = _dark_entries(masterdark_files)
    same = [e for e in entries if np.isclose(e[0], exptime, rtol=1e-3)]
    if same or len(entries) == 1:  # amp glow: nearest temperature (Widenhorn et al. 2002)
        same = same or entries
        temps = [None if temperature is None else FrameHeader(read_header(p), p).sensor_temperature
                 for _, p, _ in same]
        t, p, bsub = same[nearest_temperature(temps, temperature, tolerance, item)]
        return load_master(p), t, bsub, p
    model = _dark_model(tuple((p, Path(p).stat().st_mtime_ns) for p in masterdark_files))
    data, std = model.evaluate(exptime)
    first = load_master(entries[0][1])
    ccd = CCDData(
        data,
        unit=first.unit,
        meta=first.meta.copy(),
        uncertainty=None if std is None else StdDevUncertainty(std),
    )
    return ccd, exptime, entries[0][2], f"interpolated from {len(entries)} masters"


class subtract_dark(CalibrationStep):  # noqa: N801
    """Subtract a master dark scaled to each frame's exposure time.

    * one master: scaled by ``EXPTIME(frame) / EXPTIME(master)`` when the master is
      bias-subtracted; a master that still holds the bias is used only at its own
      exposure time;
    * several masters (a list): the one of the frame's exposure time, else a per-pixel
      least-squares line ``D = t A + B`` through all of them (:class:`dark_interpolation`).

    %(step_parameters)s
    masterdark_file : str or list of str
        Master dark(s), with ``EXPTIME``; same size, binning and unit as the frames.
    %(engine_parameters)s

    Raises
    ------
    CalibrationError
        (at ``run``) a master of another size or binning, or without exposure time;
        (per frame) a frame without ``EXPTIME`` (message names the file and the
        ``header_tools`` fix), or an exposure the master cannot be scaled to.
    """

    name = "subtract_dark"
    prefix = "dark_subtracted_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        masterdark_file: PathLike | Sequence[PathLike],
        overwrite: Overwrite = False,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        many = isinstance(masterdark_file, (list, tuple)) and len(masterdark_file) > 1
        self.masterdark_files = (
            [_one_path(m, "master dark") for m in masterdark_file]
            if many
            else [_one_path(masterdark_file, "master dark")]
        )

    def masters(self):
        """The masters used, recorded in provenance.

        Returns
        -------
        dict
            ``{'master dark 1': path, ...}``, one entry per master.
        """
        return {f"master dark {i + 1}": p for i, p in enumerate(self.masterdark_files)}

    def check(self):
        """Check the master darks against the first readable input before any frame.

        Raises
        ------
        CalibrationError
            A master without exposure time or of another size or binning, or masters
            of which some are bias-subtracted and some are not.
        """
        for m in self.masterdark_files:
            _check_master(self.name, m, "master dark", self.files)
            try:
                _ = FrameHeader(read_header(m), m).exptime
            except MissingKeywordError as exc:
                raise CalibrationError(f"subtract_dark: master dark {exc}") from None
        entries = _dark_entries(self.masterdark_files)
        if len({e[2] for e in entries}) > 1:
            raise CalibrationError(
                "subtract_dark: some master darks are bias-subtracted and some "
                "are not; build them all the same way"
            )

    def apply(self, ccd, path):
        """Subtract the master dark (picked, scaled or interpolated) of one frame's exposure.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            ``ccd - k * dark``; the master used in ``ADDKSRC``, the exposure in ``ADDKEXP``.

        Raises
        ------
        CalibrationError
            A dark of another size or binning, or holding the bias of a bias-subtracted
            frame, or of an exposure it cannot be scaled to.
        astrodart.frames.header.MissingKeywordError
            The frame has no ``EXPTIME``.
        """
        fh = _frame_header(ccd, path)
        exptime = fh.exptime  # MissingKeywordError names the file and the header_tools fix
        dark, dark_t, dark_bsub, source = dark_for_exposure(
            self.masterdark_files, exptime, fh.sensor_temperature, item=Path(path).name)
        _compare_geometry(self.name, source, "master dark", dark, path, ccd)
        frame_bsub = cal.is_bias_subtracted(ccd.meta)
        if frame_bsub and not dark_bsub:
            raise CalibrationError(
                f"{path} is bias-subtracted but master dark {source} still contains the bias "
                "(it would be subtracted twice); subtract the master bias from the darks before "
                "combining them"
            )
        try:
            out = cal.subtract_master_dark(ccd, dark, exptime, dark_t, scale=dark_bsub)
        except CalibrationError as exc:
            raise CalibrationError(f"{exc} (master dark {source})") from None
        out.meta["ADDKSRC"] = Path(source).name[-68:]  # the master dark used
        out.meta["ADMDARK"] = ";".join(str(Path(p).resolve()) for p in self.masterdark_files)
        out.meta["ADDKEXP"] = (float(exptime), "[s] exposure the dark was scaled to")
        return out


def _shared_bias_variance(headers) -> np.ndarray | None:
    """Variance of the master bias subtracted from all of these masters (``ADMBIAS``),
    or None when they do not share one or it cannot be read."""
    paths = {h.get("ADMBIAS") for h in headers}
    if len(paths) != 1 or None in paths:
        return None
    p = paths.pop()
    return cal.variance_of(load_master(p)) if Path(p).is_file() else None


@functools.lru_cache(maxsize=4)
def _dark_model(key: tuple) -> cal.DarkModel:
    """The dark model of master darks ``key = ((path, mtime_ns), ...)``, once per process."""
    paths = [p for p, _ in key]
    ccds = [load_master(p) for p in paths]
    times = [FrameHeader(c.meta, p).exptime for c, p in zip(ccds, paths)]
    return cal.fit_dark_model(
        times,
        [c.data for c in ccds],
        [cal.variance_of(c) for c in ccds],
        common_variance=_shared_bias_variance([c.meta for c in ccds]),
    )


class correct_flatfield(CalibrationStep):  # noqa: N801
    """Divide frames by a master flat normalised by its robust central level.

    The master is divided by the 3-sigma-clipped median of its central half (per axis)
    before use, so a master flat in electrons or ADU, normalised or not, gives the same
    result. Flat pixels below ``min_value`` (zero, negative, dead) are not divided: the
    frame's pixel is kept and masked, and counted in ``ADFLBAD``.

    %(step_parameters)s
    masterflatfield_file : str
        Master flat (same size and binning).
    min_value : float
        Lowest usable normalised flat response.
    max_bad_fraction : float
        A flat with more guarded pixels than this fraction is refused.
    %(engine_parameters)s

    Raises
    ------
    CalibrationError
        (at ``run``) the master's size or binning differs, its central level is not
        positive, or too many of its pixels are zero/negative/low; the message names the
        master and the fix.
    """

    name = "correct_flatfield"
    prefix = "flatfield_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        masterflatfield_file: PathLike,
        overwrite: Overwrite = False,
        *,
        min_value: float = 0.1,
        max_bad_fraction: float = 0.01,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.masterflatfield_file = _one_path(masterflatfield_file, "master flat")
        self.min_value, self.max_bad_fraction = float(min_value), float(max_bad_fraction)

    def masters(self):
        """The master used, recorded in provenance.

        Returns
        -------
        dict
            ``{'master flat': path}``.
        """
        return {"master flat": self.masterflatfield_file}

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``min_value``, ``max_bad_fraction`` and the normalisation used.
        """
        return {
            "min_value": self.min_value,
            "max_bad_fraction": self.max_bad_fraction,
            "normalisation": "3-sigma-clipped median of the central half",
        }

    def _flat(self):
        return _normalised_flat(
            self.masterflatfield_file, Path(self.masterflatfield_file).stat().st_mtime_ns
        )

    def check(self):
        """Compare the master flat with the first readable input, then :meth:`check_flat`.

        Raises
        ------
        CalibrationError
            Its size or binning differs, or :meth:`check_flat` refuses it.
        """
        _check_master(self.name, self.masterflatfield_file, "master flat", self.files)
        self.check_flat()

    def check_flat(self) -> None:
        """Refuse an unusable master flat; warn about the few pixels that will be guarded.

        Raises
        ------
        CalibrationError
            Its central level is not positive, or more than ``max_bad_fraction`` of its
            pixels are below ``min_value`` (zero, negative, unexposed).

        Warns
        -----
        CalibrationWarning
            Some pixels are below ``min_value``: they are not divided, and are masked.
        """
        try:
            flat, level = self._flat()
        except CalibrationError as exc:
            raise CalibrationError(
                f"correct_flatfield: {self.masterflatfield_file}: {exc}"
            ) from None
        f = flat.data
        bad = ~np.isfinite(f) | (f < self.min_value)
        nbad = int(bad.sum())
        if nbad > self.max_bad_fraction * f.size:
            raise CalibrationError(
                f"correct_flatfield: master flat {self.masterflatfield_file} has {nbad} pixels "
                f"({100 * nbad / f.size:.2f} %) at or below {self.min_value} of its central level "
                f"{level:.6g} (zeros, negatives or unexposed areas); rebuild it from well exposed, "
                "bias-subtracted flats of this filter, or pass max_bad_fraction= to accept it"
            )
        if nbad:
            warnings.warn(
                f"correct_flatfield: master flat {self.masterflatfield_file}: {nbad} "
                f"pixels below {self.min_value} (zero/negative/dead) are not divided and "
                "are masked in every output (ADFLBAD)",
                CalibrationWarning,
                stacklevel=3,
            )

    def apply(self, ccd, path):
        """Divide one frame by the normalised master flat.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            ``ccd / flat``, variance propagated; guarded pixels kept, masked, in ``ADFLBAD``.

        Raises
        ------
        CalibrationError
            The master's size or binning differs, or too many flat pixels are guarded.
        """
        flat, _ = self._flat()
        _compare_geometry(self.name, self.masterflatfield_file, "master flat", flat, path, ccd)
        out, _ = cal.flat_correct(ccd, flat, self.min_value, self.max_bad_fraction)
        return out


@functools.lru_cache(maxsize=4)
def _normalised_flat(path: str, mtime_ns: int):
    return cal.normalise_flat(load_master(path))


class bad_pixel_correction(CalibrationStep):  # noqa: N801
    """Repair bad pixels by interpolation from their good neighbours.

    %(step_parameters)s
    badpixel_file : str
        Bad-pixel map (:class:`bad_pixel_map`; non-zero = bad).
    bits : int
        Bits of the map to repair (default: hot, low flat, deviant flat, non-finite;
        not warm, which dark subtraction handles).
    include_mask : bool
        Also repair pixels already masked in the frame (cosmic rays, guarded flat pixels).
    sigma : float
        Width (px) of the Gaussian interpolation kernel.
    %(engine_parameters)s

    Notes
    -----
    Repaired pixels stay masked; their uncertainty is set to that of the interpolated
    neighbours times ``sqrt(2)`` (an interpolated value is not a measurement).
    """

    name = "bad_pixel_correction"
    prefix = "bad_pixel_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        badpixel_file: PathLike,
        overwrite: Overwrite = False,
        *,
        bits: int = cal.REPAIR_BITS,
        include_mask: bool = False,
        sigma: float = 1.5,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.badpixel_file = _one_path(badpixel_file, "bad-pixel map")
        self.bits, self.include_mask, self.sigma = int(bits), bool(include_mask), float(sigma)

    def masters(self):
        """The master used, recorded in provenance.

        Returns
        -------
        dict
            ``{'bad-pixel map': path}``.
        """
        return {"bad-pixel map": self.badpixel_file}

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``bits``, ``include_mask`` and ``sigma``.
        """
        return {"bits": self.bits, "include_mask": self.include_mask, "sigma": self.sigma}

    def check(self):
        """Compare the bad-pixel map with the first readable input before any frame.

        Raises
        ------
        CalibrationError
            Its size or binning differs; the message names both files and the fix.
        """
        _check_master(self.name, self.badpixel_file, "bad-pixel map", self.files)

    def apply(self, ccd, path):
        """Interpolate the bad pixels of one frame from their good neighbours.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            Repaired pixels masked, uncertainty times ``sqrt(2)``, counted in ``ADNBADPX``.

        Raises
        ------
        CalibrationError
            The map's shape differs from the frame's.
        """
        bpm = load_master(self.badpixel_file)
        if bpm.shape != ccd.shape:
            raise CalibrationError(
                f"bad-pixel map {self.badpixel_file} is {bpm.shape[::-1]} px, "
                f"{path} is {ccd.shape[::-1]} px"
            )
        bad = (np.asarray(bpm.data).astype(np.uint8) & self.bits) > 0
        if self.include_mask and ccd.mask is not None:
            bad = bad | np.asarray(ccd.mask, bool)
        data = cal.repair_pixels(ccd.data, bad, self.sigma)
        unc = None
        if ccd.uncertainty is not None:
            sd = np.asarray(ccd.uncertainty.array, np.float32)
            sd = np.where(bad, cal.repair_pixels(sd, bad, self.sigma) * np.float32(np.sqrt(2)), sd)
            unc = StdDevUncertainty(sd)
        header = ccd.meta.copy() if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
        header["ADNBADPX"] = (int(bad.sum()), "bad pixels interpolated")
        mask = bad if ccd.mask is None else (np.asarray(ccd.mask, bool) | bad)
        return CCDData(data, unit=ccd.unit, meta=header, uncertainty=unc, mask=mask, wcs=ccd.wcs)
