"""Layer 3: the master sky of dithered science frames, and its subtraction, as file steps.

:class:`sky_frame` writes the master sky (:func:`astrodart.calibration.sky.master_sky`:
sources masked, frames normalised by their sky level, median-combined by the one
stacking engine); :class:`sky_subtraction` writes each frame minus the master sky scaled
to it, or, without a master (``astrodart master-sky --no-master-sky``), minus its own
median sky level (:func:`astrodart.calibration.sky.subtract_sky`). Both are steps of the
one engine: atomic writes, provenance, outputs reused while current.
"""
from __future__ import annotations

from astrodart.calibration.sky import master_sky, subtract_sky
from astrodart.frames.checks import check_number, check_path
from astrodart.frames.io import read_frame
from astrodart.pipeline.kinds import ManyToOneStep
from astrodart.pipeline.step import Step

__all__ = ["sky_frame", "sky_subtraction"]


def _mask_settings(owner: str, fwhm, nsigma, dilate) -> dict:
    """The source-mask settings, checked."""
    return {"fwhm": check_number("fwhm", fwhm, minimum=0, exclusive=True, owner=owner),
            "nsigma": check_number("nsigma", nsigma, minimum=0, exclusive=True, owner=owner),
            "dilate": check_number("dilate", dilate, minimum=1, integer=True, owner=owner)}


class sky_frame(ManyToOneStep):
    """A master sky frame from dithered science frames (sources masked).

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    files : sequence of str or pathlib.Path
        At least three dithered frames of one shape and unit.
    output : str or pathlib.Path
        Output file name (in ``wdir``) or path.
    overwrite : bool or {'yes', 'no'}
        Redo an output that exists.
    mask_sources : bool
        Mask each frame's sources before combining.
    fwhm, nsigma : float
        Seeing FWHM (pixels) and threshold (sigma) of the source mask.
    dilate : int
        Growth of the source mask, pixels.
    sigma : float
        Sigma-clipping threshold of the median combination.
    %(engine_parameters)s

    Raises
    ------
    ValueError
        A setting out of range (said before any frame is read).
    """

    name = "master_sky"

    def __init__(self, wdir, files, output, overwrite=False, *, mask_sources: bool = True,
                 fwhm: float = 3.0, nsigma: float = 3.0, dilate: int = 11,
                 sigma: float = 3.0, **engine):
        super().__init__(wdir, files, output, overwrite, **engine)
        self.settings = _mask_settings("sky_frame", fwhm, nsigma, dilate)
        self.settings["mask_sources"] = bool(mask_sources)
        self.settings["sigma"] = check_number("sigma", sigma, minimum=0, exclusive=True,
                                              owner="sky_frame")

    def parameters(self):
        """Parameters recorded in provenance.

        Returns
        -------
        dict
            The source-mask and clipping settings.
        """
        return dict(self.settings)

    def combine(self, paths):
        """Read the frames and make the master sky.

        Parameters
        ----------
        paths : list of str
            The frames.

        Returns
        -------
        astropy.nddata.CCDData
            The master sky.
        """
        return master_sky([read_frame(p) for p in paths], **self.settings)


class sky_subtraction(Step):
    """Frames minus the master sky scaled to each (``skysub_<name>.fits``), or minus their
    median sky level when no master is given.

    %(step_parameters)s
    sky : str or pathlib.Path, optional
        The master sky (:class:`sky_frame`); None: each frame's median sky is subtracted.
    mask_sources : bool
        Leave each frame's sources out of the sky fit.
    fwhm, nsigma : float
        Seeing FWHM (pixels) and threshold (sigma) of the source mask.
    dilate : int
        Growth of the source mask, pixels.
    %(engine_parameters)s

    Raises
    ------
    FileNotFoundError
        The master sky does not exist.
    """

    name, prefix = "sky_subtraction", "skysub_"

    def __init__(self, wdir, files, sky=None, overwrite=False, *, mask_sources: bool = True,
                 fwhm: float = 3.0, nsigma: float = 3.0, dilate: int = 11, **engine):
        super().__init__(wdir, files, overwrite, **engine)
        self.sky = None if sky is None else str(check_path("sky", sky, owner="sky_subtraction"))
        self.settings = _mask_settings("sky_subtraction", fwhm, nsigma, dilate)
        self.settings["mask_sources"] = bool(mask_sources)
        self._sky_frame = None

    def parameters(self):
        """Parameters recorded in provenance.

        Returns
        -------
        dict
            The source-mask settings and the method (``'master'`` or ``'median'``).
        """
        return {"method": "master" if self.sky else "median", **self.settings}

    def masters(self):
        """The master sky, recorded in provenance and the fingerprint.

        Returns
        -------
        dict
            ``{'master sky': path}``, or empty.
        """
        return {"master sky": self.sky} if self.sky else {}

    def process(self, ccd, path):
        """Subtract the sky from one frame.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            The sky-subtracted frame (header ``SKYSUB``, ``SKYSCALE`` or ``SKYLEVEL``).
        """
        if self.sky and self._sky_frame is None:  # read once per worker
            self._sky_frame = read_frame(self.sky)
        return subtract_sky(ccd, self._sky_frame, **self.settings)
