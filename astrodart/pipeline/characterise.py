"""Layer 3: detector characterisation at file level: bad-pixel map, gain, read noise,
dark current.

:class:`bad_pixel_map` flags hot and defective pixels from the master dark and flat;
:class:`photon_transfer` measures gain and read noise from flat and bias pairs;
:class:`dark_current` the dark current and hot pixels of a master dark. The science is
in :mod:`astrodart.calibration.detector` and :mod:`astrodart.calibration.pixels`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import read_frame, write_hdulist
from astrodart.pipeline.calibration_step import Files, Overwrite, PathLike, _one_path
from astrodart.pipeline.kinds import MeasuringStep
from astrodart.pipeline.master_records import _MasterStep

__all__ = ["bad_pixel_map", "photon_transfer", "dark_current"]


#: Header keyword, bit and comment of each count of flagged pixels in a bad-pixel map.
_BIT_COUNTS = (
    ("ADBPHOT", cal.BAD_HOT, "hot pixels (bit 1)"),
    ("ADBPLOW", cal.BAD_FLAT_LOW, "low/dead flat pixels (bit 2)"),
    ("ADBPDEV", cal.BAD_FLAT_DEVIANT, "deviant flat pixels (bit 4)"),
    ("ADBPNAN", cal.BAD_NONFINITE, "non-finite master pixels (bit 8)"),
    ("ADBPWARM", cal.BAD_WARM, "warm pixels (bit 16)"),
)


class bad_pixel_map(_MasterStep):  # noqa: N801
    """Build a bad-pixel map from a master dark and/or a master flat.

    A many-to-one step (:class:`~astrodart.pipeline.kinds.ManyToOneStep`) run in this
    process; the map also carries the engine's ``ADFPRINT``. An existing map is reused
    (whatever it was made from) unless ``overwrite``.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    masterdark_file : str, optional
        Bias-subtracted master dark (with ``EXPTIME``): hot pixels.
    masterflat_file : str, optional
        Master flat: low/dead and pixel-scale defects (normalised internally).
    output_name : str
        File name of the map (uint8; 0 good; bits 1 hot, 2 low flat, 4 deviant flat,
        8 non-finite, 16 warm). The ``master`` prefix keeps it out of the raw-frame lists
        of ``get_directory`` and in ``calibration/`` after :class:`finalize_stage1`.
    hot_sigma : float
        Hot pixel: dark current above median + ``hot_sigma`` robust sigma.
    warm_sigma : float
        Warm pixel (bit 16): between ``warm_sigma`` and ``hot_sigma``. Cosmic-ray steps
        ignore every flagged pixel; :class:`bad_pixel_correction` repairs all but warm
        pixels by default (dark subtraction handles those).
    flat_min, flat_sigma : float
        Flat thresholds (see :func:`astrodart.calibration.pixels.flat_defect_mask`).
    overwrite : bool or {'yes', 'no'}
        Rebuild an existing map.
    log_path : str, optional
        Run log.

    Raises
    ------
    CalibrationError
        No master given, masters of different sizes, or a master dark that still
        contains the bias (its "dark current" would be the bias level).
    """

    def __init__(
        self,
        wdir: PathLike,
        masterdark_file: PathLike | None = None,
        masterflat_file: PathLike | None = None,
        output_name: str = "master_badpixel_map.fits",
        *,
        hot_sigma: float = 10.0,
        warm_sigma: float = 5.0,
        flat_min: float = 0.5,
        flat_sigma: float = 7.0,
        overwrite: Overwrite = False,
        log_path=None,
    ):
        self.masterdark_file = (
            None if masterdark_file is None else _one_path(masterdark_file, "master dark")
        )
        self.masterflat_file = (
            None if masterflat_file is None else _one_path(masterflat_file, "master flat")
        )
        if self.masterdark_file is None and self.masterflat_file is None:
            raise CalibrationError("bad_pixel_map: give masterdark_file, masterflat_file or both")
        self.output_name = output_name
        self.hot_sigma, self.warm_sigma = float(hot_sigma), float(warm_sigma)
        self.flat_min, self.flat_sigma = float(flat_min), float(flat_sigma)
        masters = [p for p in (self.masterdark_file, self.masterflat_file) if p]
        super().__init__(wdir, masters, output_name, overwrite, log_path)

    name = "bad_pixel_map"

    def parameters(self) -> dict:
        """The thresholds (in the fingerprint).

        Returns
        -------
        dict
            ``hot_sigma``, ``warm_sigma``, ``flat_min``, ``flat_sigma``.
        """
        return {"hot_sigma": self.hot_sigma, "warm_sigma": self.warm_sigma,
                "flat_min": self.flat_min, "flat_sigma": self.flat_sigma}

    def reuse(self) -> bool:
        """An existing map is reused whatever it was made from.

        Returns
        -------
        bool
            Whether the map exists.
        """
        return self.output.exists()

    def write(self, ccd, path: str) -> None:
        """Write the map as uint8 (0 good).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The map and its header.
        path : str
            The output file.
        """
        write_hdulist(fits.HDUList([fits.PrimaryHDU(ccd.data, header=ccd.meta)]), path,
                      overwrite=True)

    def _read_masters(self):
        """``(dark rate or None, normalised flat or None, header)`` from the masters."""
        rate = flat = None
        header = fits.Header()
        if self.masterdark_file:
            dark = read_frame(self.masterdark_file)
            if not cal.is_bias_subtracted(dark.meta):
                raise CalibrationError(
                    f"bad_pixel_map: master dark {self.masterdark_file} still "
                    "contains the bias; build it from bias-subtracted darks"
                )
            t = FrameHeader(dark.meta, self.masterdark_file).exptime
            rate = np.asarray(dark.data, np.float32) / np.float32(t)
            header = dark.meta.copy()
        if self.masterflat_file:
            f, _ = cal.normalise_flat(read_frame(self.masterflat_file))
            flat = f.data
            if not self.masterdark_file:
                header = f.meta.copy()
        return rate, flat, header

    def combine(self, paths: list[str]):
        """Build the map from the masters.

        Parameters
        ----------
        paths : list of str
            The masters (dark, then flat).

        Returns
        -------
        astropy.nddata.CCDData
            The map (uint8) and its header, written by :meth:`write` to
            ``wdir/output_name`` (:meth:`run` returns that path).

        Raises
        ------
        CalibrationError
            The master dark still contains the bias, or the masters differ in shape.
        """
        rate, flat, header = self._read_masters()
        bpm = cal.build_bad_pixel_map(
            rate,
            flat,
            hot_sigma=self.hot_sigma,
            warm_sigma=self.warm_sigma,
            flat_min=self.flat_min,
            flat_sigma=self.flat_sigma,
        )
        for k in [k for k in header if k.startswith(("IMCMB", "ADC", "NCOMBINE"))]:
            header.remove(k, ignore_missing=True, remove_all=True)
        header["ADMASTER"] = ("badpix", "astrodart bad-pixel map (0 good)")
        for key, bit, comment in _BIT_COUNTS:
            header[key] = (int(((bpm & bit) > 0).sum()), comment)
        header["ADBPHSIG"] = (self.hot_sigma, "hot threshold (robust sigma)")
        header["ADBPWSIG"] = (self.warm_sigma, "warm threshold (robust sigma)")
        for i, p in enumerate([p for p in (self.masterdark_file, self.masterflat_file) if p], 1):
            header[f"IMCMB{i:03d}"] = Path(p).name
        header["BUNIT"] = ""
        self._record = {"masterdark": self.masterdark_file, "masterflat": self.masterflat_file,
                        "n_bad": int((bpm > 0).sum()), "hot": header["ADBPHOT"],
                        "flat_low": header["ADBPLOW"], "flat_deviant": header["ADBPDEV"]}
        return CCDData(bpm, unit="", meta=header)


class photon_transfer(MeasuringStep):  # noqa: N801
    """Measure gain and read noise from pairs of raw flats and biases (Janesick).

    A :class:`~astrodart.pipeline.kinds.MeasuringStep` run serially in this process: each
    frame is read and checked, then :meth:`run` measures the pairs. No file is written (a
    run log that exists near the frames gets a record).

    Parameters
    ----------
    bias_files : list of str
        At least two raw bias frames (ADU); consecutive files are paired.
    flat_files : list of str
        At least two raw flats of one exposure time and filter (ADU, unsaturated).
    region : str, optional
        FITS section used (default: the central half of each axis).

    Examples
    --------
    >>> ptc = photon_transfer(bias_files, flat_files).run()  # doctest: +SKIP
    >>> step = deviation_calculation(wdir, files, 'yes', ron=ptc.read_noise)  # doctest: +SKIP
    """

    name = "photon_transfer"
    capture_errors = False
    new_log = False

    def __init__(self, bias_files: Files, flat_files: Files, region: str | None = None):
        self.bias_files = [str(f) for f in bias_files]
        self.flat_files = [str(f) for f in flat_files]
        paths = self.bias_files + self.flat_files
        wdir = Path(paths[0]).parent if paths else Path(".")
        super().__init__(wdir, paths, executor="serial", progress=False)
        self.region = region

    def parameters(self) -> dict:
        """The measuring parameters, recorded in the run log.

        Returns
        -------
        dict
            ``region``.
        """
        return {"region": self.region}

    def measure(self, ccd, path: str) -> dict:
        """Check one raw frame (in ADU) and hand back its pixels.

        %(frame_parameters)s

        Returns
        -------
        dict
            ``{'data': pixels}``.

        Raises
        ------
        CalibrationError
            The frame is not in ADU.
        """
        if ccd.unit != u.adu:
            raise CalibrationError(f"photon_transfer: {path} is in {ccd.unit}; use raw frames in ADU")
        return {"data": ccd.data}

    def result(self, tasks, report) -> cal.PhotonTransferResult:
        """Measure gain and read noise from the checked frames.

        %(result_parameters)s

        Returns
        -------
        PhotonTransferResult
            Gain (e-/ADU) and read noise (ADU and e-) with their per-pair values.

        Raises
        ------
        CalibrationError
            Fewer than two frames of a kind, frames in electrons, or flats not brighter
            than the biases.
        """
        data = {k: row.pop("data") for k, row in report.summaries.items()}  # not kept
        biases = [data[f] for f in self.bias_files]
        flats = [data[f] for f in self.flat_files]
        region = None if self.region is None else cal.parse_section(self.region, biases[0].shape)
        return cal.measure_photon_transfer(biases, flats, region)


class dark_current(MeasuringStep):  # noqa: N801
    """Dark current and hot pixels of a bias-subtracted master dark.

    A :class:`~astrodart.pipeline.kinds.MeasuringStep` on one frame, run in this process;
    no file is written (a run log that exists near the master gets a record).

    Parameters
    ----------
    masterdark_file : str
        Master dark with ``EXPTIME``, bias removed (in electrons for e-/s/px).
    hot_sigma : float
        Hot pixel: rate above median + ``hot_sigma`` robust sigma.
    min_rate : float, optional
        Also require a rate above this (unit of the master per second).
    """

    name = "dark_current"
    capture_errors = False
    new_log = False

    def __init__(
        self, masterdark_file: PathLike, hot_sigma: float = 5.0, min_rate: float | None = None
    ):
        self.masterdark_file = _one_path(masterdark_file, "master dark")
        super().__init__(Path(self.masterdark_file).parent, [self.masterdark_file],
                         executor="serial", progress=False)
        self.hot_sigma, self.min_rate = float(hot_sigma), min_rate

    def parameters(self) -> dict:
        """The measuring parameters, recorded in the run log.

        Returns
        -------
        dict
            ``hot_sigma``, ``min_rate``.
        """
        return {"hot_sigma": self.hot_sigma, "min_rate": self.min_rate}

    def measure(self, ccd, path: str) -> dict:
        """Measure the master dark.

        %(frame_parameters)s

        Returns
        -------
        dict
            ``{'result': DarkCurrentResult}``.

        Raises
        ------
        CalibrationError
            The master still contains the bias.
        """
        if not cal.is_bias_subtracted(ccd.meta):
            raise CalibrationError(
                f"dark_current: {path} still contains the bias; "
                "use a master made from bias-subtracted darks"
            )
        t = FrameHeader(ccd.meta, path).exptime
        res = cal.measure_dark_current(
            ccd.data, t, self.hot_sigma, self.min_rate, unit=f"{ccd.unit.to_string()} / s"
        )
        return {"result": res}

    def result(self, tasks, report) -> cal.DarkCurrentResult:
        """The measurement of the master dark.

        %(result_parameters)s

        Returns
        -------
        DarkCurrentResult
            Dark current (unit of the master per second) and the hot-pixel mask.
        """
        return report.summaries[self.masterdark_file]["result"]
