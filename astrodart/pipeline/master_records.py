"""Layer 3: how a master frame records its inputs and combine settings in its header,
and the resume check of masters built from named inputs (``IMCMBnnn``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from astropy.io import fits

from astrodart import __version__
from astrodart.calibration.base import CalibrationError
from astrodart.exceptions import warn
from astrodart.frames.checks import header_text
from astrodart.frames.io import read_header
from astrodart.pipeline.calibration_step import KW_NONFINITE
from astrodart.pipeline.fingerprint import FINGERPRINT_CARD
from astrodart.pipeline.kinds import ManyToOneStep
from astrodart.pipeline.runlog import find_log_path, log_event
from astrodart.pipeline.step import OutputRecomputedWarning

__all__: list[str] = []

log = logging.getLogger("astrodart")


def _recorded_inputs(path) -> list[str]:
    h = read_header(path)
    return [str(h[k]) for k in h if k.startswith(("IMCMB", "IMCB"))]


def _reuse_master(out: Path, inputs: Sequence[str], what: str) -> bool:
    """True if ``out`` exists and was made from ``inputs`` (same file names). A master made
    from other frames is not reused: it is rebuilt, and the log says why."""
    if not out.exists():
        return False
    recorded = _recorded_inputs(out)
    wanted = [header_text(Path(f).name) for f in inputs]
    if recorded and recorded != wanted:
        log.warning("%s: %s was made from other frames (%d recorded, %d given now); "
                    "rebuilding it", what, out, len(recorded), len(wanted))
        return False
    log.info("%s: %s exists, reused", what, out)
    return True


def _record_inputs(
    header: fits.Header, files: Sequence[str], settings: dict, rejected: float, frame_type: str
) -> None:
    header["ADMASTER"] = (frame_type, "astrodart master frame type")
    header["NCOMBINE"] = (len(files), "number of frames combined")
    for i, f in enumerate(files, 1):
        header[f"IMCMB{i:03d}" if i < 1000 else f"IMCB{i:04d}"] = header_text(Path(f).name)
    header["ADCMETH"] = (settings.get("method"), "combine method")
    header["ADCCLIP"] = (str(settings.get("clipping")), "rejection method")
    for key, card in (
        ("low", "ADCLOW"),
        ("high", "ADCHIGH"),
        ("nlow", "ADCNLOW"),
        ("nhigh", "ADCNHIGH"),
        ("vmin", "ADCVMIN"),
        ("vmax", "ADCVMAX"),
        ("iterations", "ADCITER"),
    ):
        if settings.get(key) is not None:
            header[card] = (settings[key], f"combine setting {key}")
    if settings.get("normalised"):
        header["ADCNORM"] = (True, "inputs scaled to their central median")
    header["ADCREJ"] = (round(rejected, 6), "fraction of values rejected")
    header.add_history(f"astrodart {__version__} master_frame: {settings} of {len(files)} frames")


#: Keywords of one input frame that do not describe a master made of many.
_PER_FRAME_KEYWORDS = (
    "ADNCRPIX",
    "ADDKSCAL",
    "ADFLBAD",
    KW_NONFINITE,
    "ADNBADPX",
    "ADMDARK",
    "ADDKEXP",
    "ADDKSRC",
)


class _MasterStep(ManyToOneStep):
    """A master written by a guide class on the many-to-one engine, in this process.

    Its own cards record its inputs (no engine provenance cards, only ``ADFPRINT``); an
    existing output is reused when :meth:`reuse` says so (default: made from the same
    input names, else :class:`CalibrationError`); every input is validated by
    :meth:`combine` itself; after writing, the run log gets the class's own record
    (``self._record``, set by :meth:`combine`).
    """

    fsync_outputs = True

    def __init__(self, wdir, files, output, overwrite, log_path):
        super().__init__(wdir, files, output, overwrite, executor="serial", progress=False,
                         log_path=log_path)
        self._record: dict = {}

    def reuse(self) -> bool:
        """Whether the existing output is reused (default: its fingerprint matches).

        A master sealed by the engine is reused only when its fingerprint (the inputs'
        content, settings, masters used, package version) equals this run's; otherwise
        an :class:`~astrodart.pipeline.step.OutputRecomputedWarning` says what changed.
        A master without one (an earlier astrodart) is reused when made from the same
        input names.

        Returns
        -------
        bool
            True: reuse it; False when absent or made differently (rebuilt).
        """
        if not self.output.is_file():
            return False
        if FINGERPRINT_CARD not in fits.getheader(self.output):
            return _reuse_master(self.output, self.files, self.name)
        why = self.stale_reason(self.files, [str(self.output)])
        if why is not None:
            warn(f"{self.name}: {why}; rebuilt", OutputRecomputedWarning, item=str(self.output))
            return False
        log.info("%s: %s made from the same inputs and settings, reused", self.name, self.output)
        return True

    def is_done(self, task) -> bool:
        """Reuse the output unless ``overwrite`` (see :meth:`reuse`).

        %(task_parameters)s

        Returns
        -------
        bool
            True: the output is reused.
        """
        return not self.overwrite and self.reuse()

    def check_input(self, path: str) -> None:
        """Accept every input (:meth:`combine` validates them all together, or raises).

        Parameters
        ----------
        path : str
            An input file.
        """

    def stamp(self, ccd, in_path) -> None:
        """No engine provenance cards: the master's own cards record it.

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The master.
        in_path : sequence of str
            Its inputs.
        """

    def log_target(self) -> None:
        """None: :meth:`execute` writes the class's own run-log record.

        Returns
        -------
        None
            No engine record.
        """

    def execute(self, task) -> dict:
        """Combine and write the output (see :meth:`combine`), then log it.

        %(task_parameters)s

        Returns
        -------
        dict
            ``{'inputs': n, 'failed_inputs': {}}``.

        Raises
        ------
        CalibrationError
            No input, or as :meth:`combine`.
        """
        if not task.inputs:
            raise CalibrationError(f"{self.name} {self._label()}: no input frames")
        summary = super().execute(task)
        log_event(self.log_path or find_log_path(self.wdir), step=self.name,
                  output=str(self.output), **self._record)
        return summary

    def _label(self) -> str:
        return str(getattr(self, "output_name", self.output.name))
