"""Layer 3: the stage-1 cosmic-ray steps (L.A.Cosmic and the median filter).

Both share the gain semantics of astroscrappy (e-/ADU for frames in ADU, 1 for frames in
electrons) and an optional bad-pixel map whose pixels are neither flagged nor used; the
science is in :mod:`astrodart.calibration.cosmics`.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy import units as u

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.frames.checks import check_number
from astrodart.pipeline.calibration_step import (
    CalibrationStep,
    Files,
    Overwrite,
    PathLike,
    _check_master,
    _frame_header,
    _gain_for,
    _one_path,
    load_master,
)

__all__ = ["cosmic_ray_laplacian_correction", "cosmic_ray_median_correction"]

log = logging.getLogger("astrodart")


class _CosmicStep(CalibrationStep):
    """Shared gain, saturation and bad-pixel-mask handling of the cosmic-ray steps."""

    method = "lacosmic"

    def __init__(self, wdir: PathLike, files: Files, overwrite: Overwrite = False, *,
                 gain: float | None = None, mask_file: PathLike | None = None, **engine):
        super().__init__(wdir, files, overwrite, **engine)
        self.gain = check_number("gain", gain, minimum=0, exclusive=True, allow_none=True,
                                 owner=type(self).__name__, unit="e-/ADU")
        self.mask_file = None if mask_file is None else _one_path(mask_file, "bad-pixel map")

    def masters(self):
        return {"bad-pixel map": self.mask_file} if self.mask_file else {}

    def check(self):
        if self.mask_file:
            _check_master(self.name, self.mask_file, "bad-pixel map", self.files)

    def _gain_and_mask(self, ccd, path):
        fh = _frame_header(ccd, path)
        if ccd.unit == u.electron:
            gain = 1.0  # astroscrappy's gain converts to electrons: none needed
        else:
            gain = _gain_for(self.gain, fh, path, ccd.unit,
                             fix=", add GAIN with header_tools, or run gain_correction first")
        mask = None
        if self.mask_file:
            bpm = load_master(self.mask_file)
            if bpm.shape != ccd.shape:
                raise CalibrationError(
                    f"bad-pixel map {self.mask_file} is {bpm.shape[::-1]} px but "
                    f"{path} is {ccd.shape[::-1]} px; make the map from masters "
                    "trimmed like the frames"
                )
            mask = np.asarray(bpm.data) > 0
        return gain, mask, fh


class cosmic_ray_laplacian_correction(_CosmicStep):  # noqa: N801
    """Remove cosmic rays with L.A.Cosmic (van Dokkum 2001) through astroscrappy.

    Gain semantics: astroscrappy multiplies the data by ``gain`` to reach electrons; for
    frames in ADU the gain (e-/ADU) is ``gain`` or the header's, for frames already in
    electrons (after :class:`gain_correction`) it is 1 and ``gain`` is ignored. The noise
    model is measured on the frame (:func:`astrodart.calibration.noise.noise_variance`), so a
    bias pedestal still in the data does not blunt the detection.

    %(step_parameters)s
    gain : float, optional
        e-/ADU for frames in ADU.
    sigclip : float
        Laplacian-to-noise detection limit.
    sigfrac : float
        Fraction of ``sigclip`` for the neighbours of detected pixels (astroscrappy).
    objlim : float
        Fine-structure contrast limit that keeps stars (astroscrappy).
    niter : int
        L.A.Cosmic iterations.
    satlevel : float, optional
        Saturation in the units of the data; default from ``SATURATE``/``DATAMAX`` (ADU,
        converted to electrons for gain-corrected frames).
    mask_file : str, optional
        Bad-pixel map (:class:`bad_pixel_map`); its pixels are neither flagged nor used.
        Recommended when cosmic rays are removed before dark subtraction, so that hot
        pixels are not "cleaned" into holes.
    %(engine_parameters)s

    Notes
    -----
    Flagged pixels are replaced (astroscrappy 'meanmask') and set in the output's mask;
    the header's ``ADNCRPIX`` counts them.
    """

    name = "cosmic_ray_laplacian_correction"
    prefix = "cosmic_ray_removed_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        sigclip: float = 5,
        *,
        sigfrac: float = 0.3,
        objlim: float = 5.0,
        niter: int = 4,
        satlevel: float | None = None,
        mask_file: PathLike | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, gain=gain, mask_file=mask_file, **engine)
        me, positive = "cosmic_ray_laplacian_correction", {"minimum": 0, "exclusive": True}
        self.sigclip, self.sigfrac, self.objlim = (
            check_number(n, v, owner=me, **positive)
            for n, v in (("sigclip", sigclip), ("sigfrac", sigfrac), ("objlim", objlim)))
        self.niter = check_number("niter", niter, minimum=1, integer=True, owner=me)
        self.satlevel = check_number("satlevel", satlevel, allow_none=True, owner=me, **positive)

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``gain``, ``sigclip``, ``sigfrac``, ``objlim``, ``niter``, ``satlevel`` and
            the noise model used.
        """
        return {
            "gain": self.gain,
            "sigclip": self.sigclip,
            "sigfrac": self.sigfrac,
            "objlim": self.objlim,
            "niter": self.niter,
            "satlevel": self.satlevel,
            "noise_model": "measured background + source photon noise",
        }

    def apply(self, ccd, path):
        """Detect and replace the cosmic rays of one frame with L.A.Cosmic.

        %(cosmic_apply_sections)s

        References
        ----------
        van Dokkum, P. G. 2001, PASP 113, 1420 (L.A.Cosmic); McCully, C. et al. 2018,
        astroscrappy, doi:10.5281/zenodo.1482019.
        """
        gain, mask, fh = self._gain_and_mask(ccd, path)
        if self.gain is not None and ccd.unit == u.electron and not np.isclose(self.gain, 1.0):
            log.warning("%s: gain=%s ignored, the frame is already in electrons", path, self.gain)
        sat = self.satlevel
        if sat is None and fh.saturation is not None:
            sat = fh.saturation * (
                float(ccd.meta.get(cal.KW_GAIN_USED, 1.0)) if ccd.unit == u.electron else 1.0
            )
        out, _ = cal.clean_cosmics(
            ccd,
            "lacosmic",
            gain=gain,
            mask=mask,
            satlevel=sat,
            sigclip=self.sigclip,
            sigfrac=self.sigfrac,
            objlim=self.objlim,
            niter=self.niter,
        )
        return out


class cosmic_ray_median_correction(_CosmicStep):  # noqa: N801
    """Remove cosmic rays with the median-filter method (ccdproc ``cosmicray_median``,
    like IRAF's), configured not to eat star cores.

    A pixel is a hit when it exceeds the ``mbox`` median by ``thresh`` times its noise
    *and* by ``contrast`` times its own 3x3 median's excess (a star raises its 3x3 median
    almost as much as its peak; a cosmic ray does not). See
    :func:`astrodart.calibration.cosmics.median_cosmics`.

    %(step_parameters)s
    gain : float, optional
        e-/ADU for frames in ADU (ignored for frames in electrons).
    mbox, rbox, gbox : int
        Median box for detection, median box for replacement, growth box (px).
    thresh : float
        Detection threshold (sigma).
    contrast : float
        Sharpness required of a hit (0 disables the star-core protection).
    mask_file : str, optional
        Bad-pixel map whose pixels are left alone.
    %(engine_parameters)s
    """

    name = "cosmic_ray_median_correction"
    prefix = "cosmic_ray_median_removed_"
    method = "median"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        mbox: int = 11,
        rbox: int = 11,
        gbox: int = 5,
        *,
        thresh: float = 5.0,
        contrast: float = 3.0,
        mask_file: PathLike | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, gain=gain, mask_file=mask_file, **engine)
        me = "cosmic_ray_median_correction"
        self.mbox, self.rbox, self.gbox = (
            check_number(n, v, minimum=low, integer=True, owner=me, unit="px")
            for n, v, low in (("mbox", mbox, 1), ("rbox", rbox, 0), ("gbox", gbox, 0)))
        self.thresh, self.contrast = (
            check_number(n, v, minimum=0, exclusive=True, owner=me)
            for n, v in (("thresh", thresh), ("contrast", contrast)))

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``gain``, ``mbox``, ``rbox``, ``gbox``, ``thresh`` and ``contrast``.
        """
        return {
            "gain": self.gain,
            "mbox": self.mbox,
            "rbox": self.rbox,
            "gbox": self.gbox,
            "thresh": self.thresh,
            "contrast": self.contrast,
        }

    def apply(self, ccd, path):
        """Detect and replace the cosmic rays of one frame with the median filter.

        %(cosmic_apply_sections)s

        References
        ----------
        IRAF ``noao.imred.crutil.cosmicrays``; ccdproc ``cosmicray_median`` (Craig et al.
        2017, doi:10.5281/zenodo.1069648).
        """
        gain, mask, _ = self._gain_and_mask(ccd, path)
        out, _ = cal.clean_cosmics(
            ccd,
            "median",
            gain=gain,
            mask=mask,
            thresh=self.thresh,
            mbox=self.mbox,
            rbox=self.rbox,
            gbox=self.gbox,
            contrast=self.contrast,
        )
        return out

