"""Layer 3: the stage-1 steps that prepare raw frames: sections, noise, units.

:class:`trimmer` and :class:`overscan_correction` (FITS sections,
:mod:`astrodart.calibration.sections`), :class:`deviation_calculation` (the uncertainty
plane) and :class:`gain_correction` (ADU to electrons), with the AstroDART signatures.
"""

from __future__ import annotations

import logging
from typing import Any

from astropy import units as u

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.frames.checks import check_number
from astrodart.frames.header import FrameHeader
from astrodart.pipeline.calibration_step import (
    CalibrationStep,
    Files,
    Overwrite,
    PathLike,
    _frame_header,
    _gain_for,
    _shape_from_header,
)

__all__ = ["trimmer", "overscan_correction", "deviation_calculation", "gain_correction"]

log = logging.getLogger("astrodart")


class _RegionStep(CalibrationStep):
    """A step over a FITS section (``self.region``), checked before any frame is read."""

    def check(self) -> None:
        """Check the region against the first readable input before any frame.

        Raises
        ------
        CalibrationError
            The region is malformed or does not fit; the message names the file.
        """
        f, h = self._first_header()
        if h is not None:
            try:
                cal.parse_section(self.region, _shape_from_header(h))
            except CalibrationError as exc:
                raise CalibrationError(f"{self.name}: {f}: {exc}") from None


class trimmer(_RegionStep):  # noqa: N801  (AstroDART's public name)
    """Cut a region out of every frame.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder for the outputs (``trimmed_<name>.fits``).
    files : list of str
        Input frames.
    region : str
        FITS section ``'[x1:x2,y1:y2]'``: 1-based, inclusive, x (NAXIS1) first.
    overwrite : bool or {'yes', 'no'}
        Redo outputs that exist.
    %(engine_parameters)s

    Raises
    ------
    CalibrationError
        (at ``run``) the region is malformed or does not fit the first frame; the
        message names the file, its size and the valid ranges.
    """

    name = "trimmer"
    prefix = "trimmed_"

    def __init__(
        self, wdir: PathLike, files: Files, region: str, overwrite: Overwrite = False, **engine
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.region = str(region)

    def parameters(self) -> dict[str, Any]:
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``{'region': '[x1:x2,y1:y2]'}``.
        """
        return {"region": self.region}

    def apply(self, ccd, path):
        """Cut :attr:`region` out of one frame.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            The region of the data, uncertainty and mask; ``TRIMSEC`` and the offsets
            ``LTV1``/``LTV2`` to the raw frame in the header.
        """
        return cal.trim(ccd, self.region)


class overscan_correction(_RegionStep):  # noqa: N801
    """Subtract the bias level measured in an overscan strip (ccdproc ``subtract_overscan``).

    %(step_parameters)s
    region : str
        FITS section of the overscan strip, ``'[x1:x2,y1:y2]'``.
    overscan_axis : {0, 1, None}
        Numpy axis collapsed: 1 for a strip of columns (one level per row), 0 for a
        strip of rows; None: the strip's short axis.
    model : {'median', 'mean', 'constant', 'polynomial'}
        Line-by-line median or mean profile, a single level, or a polynomial of
        ``degree`` fitted to the median profile.
    degree : int
        Polynomial degree.
    %(engine_parameters)s

    Notes
    -----
    Trim the overscan strip away afterwards with :class:`trimmer`.
    """

    name = "overscan_correction"
    prefix = "overscan_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        region: str,
        overscan_axis: int | None = 1,
        overwrite: Overwrite = False,
        *,
        model: str = "median",
        degree: int = 1,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        if model not in cal.OVERSCAN_MODELS:
            raise CalibrationError(
                f"overscan_correction: model={model!r} unknown; use one of {cal.OVERSCAN_MODELS}"
            )
        if overscan_axis not in (0, 1, None):
            raise CalibrationError(
                f"overscan_correction: overscan_axis={overscan_axis!r}; use 0, 1 or None"
            )
        self.region, self.overscan_axis, self.model, self.degree = (
            str(region),
            overscan_axis,
            model,
            check_number("degree", degree, minimum=0, maximum=10, integer=True,
                         owner="overscan_correction"),
        )

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``region``, ``overscan_axis``, ``model`` and ``degree``.
        """
        return {
            "region": self.region,
            "overscan_axis": self.overscan_axis,
            "model": self.model,
            "degree": self.degree,
        }

    def apply(self, ccd, path):
        """Subtract the overscan level (profile or fit) from one frame.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            The frame minus the overscan model, same shape (the strip is kept).
        """
        return cal.subtract_overscan(ccd, self.region, self.overscan_axis, self.model, self.degree)


class deviation_calculation(CalibrationStep):  # noqa: N801
    """Add an uncertainty plane (standard deviation) of read noise and photon noise.

    ``sigma = sqrt(max(S, 0) * g + RON^2) / g`` in ADU (``sqrt(max(S, 0) + RON^2)`` in
    electrons). Bias frames (``IMAGETYP`` bias or ``EXPTIME`` 0) get read noise only.
    The photon noise of a raw frame includes the bias pedestal; it is taken out again
    when the bias is subtracted (see :mod:`astrodart.calibration.base`).

    %(step_parameters)s
    ron : float, optional
        Read noise in electrons; default: the header (``RON``/``RDNOISE``/``READNOIS``).
    gain : float, optional
        Gain in e-/ADU; default: the header (``GAIN``/``EGAIN``). Needed for ADU data.
    %(engine_parameters)s

    Raises
    ------
    CalibrationError
        (per frame, reported with the file name) no read noise given nor in the header,
        or no gain for data in ADU.
    """

    name = "deviation_calculation"
    prefix = "deviation_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        ron: float | None = None,
        gain: float | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        me = "deviation_calculation"
        self.ron = check_number("ron", ron, minimum=0, allow_none=True, owner=me, unit="e-")
        self.gain = check_number("gain", gain, minimum=0, exclusive=True, allow_none=True,
                                 owner=me, unit="e-/ADU")

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``{'ron': e- or None, 'gain': e-/ADU or None}`` (None: from each header).
        """
        return {"ron": self.ron, "gain": self.gain}

    def check(self):
        """Check that a read noise is known (given or in the first input's header).

        Raises
        ------
        CalibrationError
            No ``ron`` and none in the header; the message names the file and the fixes.
        """
        f, h = self._first_header()
        if h is None:
            return
        fh = FrameHeader(h, f)
        if self.ron is None and fh.read_noise is None:
            raise CalibrationError(
                f"deviation_calculation: {f}: no read noise given and none in the header (looked "
                f"for {', '.join(FrameHeader.RON_KEYS)}); pass ron= in electrons, add it with "
                "header_tools(files, {'RON': value}).append_header_key(), or measure it with "
                "photon_transfer(bias_files, flat_files).run()"
            )

    def apply(self, ccd, path):
        """Add the uncertainty plane of one frame (read noise, plus photon noise unless bias).

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            The frame with a :class:`~astropy.nddata.StdDevUncertainty` in its unit
            (an existing one is replaced).

        Raises
        ------
        CalibrationError
            No read noise, or no gain for data in ADU.
        """
        fh = _frame_header(ccd, path)
        ron = self.ron if self.ron is not None else fh.read_noise
        if ron is None:
            raise CalibrationError(
                f"no read noise for {path}: pass ron= (electrons) or add RON "
                "with header_tools(files, {'RON': value}).append_header_key()"
            )
        gain = _gain_for(self.gain, fh, path, ccd.unit, required=ccd.unit == u.adu)
        exptime = fh.exptime_or_none
        is_bias = fh.frame_type == "bias" or (exptime is not None and exptime == 0)
        if ccd.uncertainty is not None:
            log.info("%s: existing uncertainty plane replaced", path)
        return cal.add_uncertainty(ccd, float(ron), gain, poisson=not is_bias)


class gain_correction(CalibrationStep):  # noqa: N801
    """Convert frames from ADU to electrons (data and uncertainty times the gain).

    %(step_parameters)s
    gain : float, optional
        e-/ADU; default: the header (``GAIN``/``EGAIN``/``E-GAIN``).
    %(engine_parameters)s

    Raises
    ------
    CalibrationError
        (per frame) no gain, or the frame is already in electrons.
    """

    name = "gain_correction"
    prefix = "gain_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.gain = check_number("gain", gain, minimum=0, exclusive=True, allow_none=True,
                                 owner="gain_correction", unit="e-/ADU")

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``{'gain': e-/ADU or None}`` (None: from each header).
        """
        return {"gain": self.gain}

    def apply(self, ccd, path):
        """Convert one frame from ADU to electrons.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            Data and uncertainty times the gain, unit electron; the gain in ``ADGAIN``.

        Raises
        ------
        CalibrationError
            No usable gain given nor in the header, or the frame is not in ADU.
        """
        gain = _gain_for(self.gain, _frame_header(ccd, path), path, ccd.unit)
        return cal.gain_correct(ccd, float(gain))

