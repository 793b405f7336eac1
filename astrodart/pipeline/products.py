"""Layer 3: image products as file-level steps -- resampling, mosaics, image arithmetic.

Each is a step of the one engine (:mod:`astrodart.pipeline.step`), so outputs are
written atomically with provenance (``ADSTEPnn``, ``HISTORY``, the ``ADFPRINT``
fingerprint of inputs and parameters) and reused when current:

* :class:`resample_frames` -- every frame onto the WCS grid of a reference frame
  (:func:`astrodart.alignment.resample.resample_frame`, reproject);
* :class:`mosaic` -- frames of several pointings on one grid
  (:func:`astrodart.alignment.mosaic.coadd_mosaic`);
* :class:`image_arithmetic` -- ``A op B`` with B a frame or a number
  (:func:`astrodart.calibration.arithmetic.imarith`, astropy NDData arithmetic);
* :class:`continuum_subtraction` -- a narrow-band frame minus the broad-band continuum
  scaled on the stars (:func:`astrodart.color.continuum.continuum_subtract`).

The master sky and its subtraction are in :mod:`astrodart.pipeline.sky`.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

from astrodart.alignment.mosaic import MOSAIC_COMBINE, coadd_mosaic
from astrodart.alignment.resample import resample_frame
from astrodart.alignment.wcs import celestial_wcs
from astrodart.calibration.arithmetic import ARITHMETIC_OPERATORS, imarith
from astrodart.color.continuum import continuum_subtract
from astrodart.frames.checks import check_choice, check_path, header_text
from astrodart.frames.header import shape_of
from astrodart.frames.io import read_frame, read_header
from astrodart.pipeline.kinds import ManyToOneStep
from astrodart.pipeline.step import Step

__all__ = ["resample_frames", "mosaic", "image_arithmetic", "continuum_subtraction"]

_ORDERS = ("nearest-neighbor", "bilinear", "bicubic")


class resample_frames(Step):
    """Reproject frames onto the WCS grid of a reference frame (``resampled_<name>.fits``).

    %(step_parameters)s
    reference : str or pathlib.Path
        A FITS frame with a celestial WCS: its WCS and shape are the output grid.
    order : {'nearest-neighbor', 'bilinear', 'bicubic'}
        Interpolation.
    conserve_flux : bool
        Scale values by the pixel-area ratio (flux per pixel kept).
    %(engine_parameters)s

    Raises
    ------
    FileNotFoundError
        The reference does not exist.
    ValueError
        The reference has no celestial WCS, or ``order`` is unknown.
    """

    name, prefix = "resample_frames", "resampled_"

    def __init__(self, wdir, files, reference, overwrite=False, *, order: str = "bicubic",
                 conserve_flux: bool = False, **engine):
        super().__init__(wdir, files, overwrite, **engine)
        self.reference = str(check_path("reference", reference, owner="resample_frames"))
        self.order = check_choice("order", order, _ORDERS, owner="resample_frames")
        self.conserve_flux = bool(conserve_flux)
        self.ref_header = read_header(self.reference)
        if celestial_wcs(self.ref_header) is None:
            raise ValueError(f"resample_frames: reference={self.reference!r} has no celestial "
                             "WCS; plate-solve it first (astrodart solve)")
        self.ref_shape = shape_of(self.reference)

    def parameters(self):
        """Parameters recorded in provenance.

        Returns
        -------
        dict
            ``order`` and ``conserve_flux``.
        """
        return {"order": self.order, "conserve_flux": self.conserve_flux}

    def masters(self):
        """The reference frame, recorded in provenance and the fingerprint.

        Returns
        -------
        dict
            ``{'reference': path}``.
        """
        return {"reference": self.reference}

    def process(self, ccd, path):
        """Reproject one frame onto the reference grid.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            The frame on the reference grid, with the reference WCS.
        """
        return resample_frame(ccd, celestial_wcs(self.ref_header), self.ref_shape,
                              order=self.order, conserve_flux=self.conserve_flux)


class mosaic(ManyToOneStep):
    """Frames of several pointings reprojected onto one grid and combined.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    files : sequence of str or pathlib.Path
        Frames with a celestial WCS, in one unit.
    output : str or pathlib.Path
        Output file name (in ``wdir``) or path.
    overwrite : bool or {'yes', 'no'}
        Redo an output that exists.
    combine : str
        One of :data:`astrodart.alignment.mosaic.MOSAIC_COMBINE`.
    resolution : float, optional
        Pixel scale of the grid, arcsec/px (default the finest frame's).
    %(engine_parameters)s
    """

    name = "mosaic"

    def __init__(self, wdir, files, output, overwrite=False, *, combine: str = "mean",
                 resolution: float | None = None, **engine):
        super().__init__(wdir, files, output, overwrite, **engine)
        self.combine_with = check_choice("combine", combine, MOSAIC_COMBINE, owner="mosaic")
        self.resolution = resolution

    def parameters(self):
        """Parameters recorded in provenance.

        Returns
        -------
        dict
            ``combine`` and ``resolution``.
        """
        return {"combine": self.combine_with, "resolution": self.resolution}

    def combine(self, paths):
        """Reproject and combine the frames.

        Parameters
        ----------
        paths : list of str
            The frames.

        Returns
        -------
        astropy.nddata.CCDData
            The mosaic.
        """
        from astrodart.alignment.mosaic import mosaic_grid

        frames = [read_frame(p) for p in paths]
        wcs, shape = mosaic_grid(frames, self.resolution)
        return coadd_mosaic(frames, wcs, shape, combine=self.combine_with)


def _number(value):
    """``value`` as a float when it is a number (or a string of one), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and not Path(value).exists():
        try:
            return float(value)
        except ValueError:
            return None
    return None


class image_arithmetic(ManyToOneStep):
    """``A op B`` written as a new frame (IRAF ``imarith``), B a frame or a number.

    Parameters
    ----------
    a : str or pathlib.Path
        Frame A.
    operator : {'+', '-', '*', '/'}
        The operation (``'add'``, ``'subtract'``, ``'multiply'``, ``'divide'`` too).
    b : str, pathlib.Path or float
        Frame B or a number (a string that names no file and reads as a number is one).
    output : str or pathlib.Path
        The result's path.
    overwrite : bool or {'yes', 'no'}
        Redo an output that exists.
    %(engine_parameters)s

    Raises
    ------
    FileNotFoundError
        A or B (a file) does not exist.
    ValueError
        Unknown operator, or a number that is not finite (0 for '/').
    """

    name = "imarith"
    unique_inputs = False  # A - A is a fair question

    def __init__(self, a, operator, b, output, overwrite=False, **engine):
        op = check_choice("operator", operator, tuple(ARITHMETIC_OPERATORS)
                          + tuple(ARITHMETIC_OPERATORS.values()), owner="imarith")
        self.operator = {v: k for k, v in ARITHMETIC_OPERATORS.items()}.get(op, op)
        a = str(check_path("a", a, owner="imarith"))
        self.number = _number(b)
        if self.number is None:
            b = str(check_path("b", b, owner="imarith"))
        elif not (abs(self.number) < float("inf")) or (self.operator == "/" and not self.number):
            raise ValueError(f"imarith: b={b!r} is not allowed for {self.operator!r}; give a "
                             "finite number (non-zero for '/')")
        files = [a] if self.number is not None else [a, b]
        output = Path(output)
        super().__init__(output.parent if str(output.parent) else ".", files,
                         output.name, overwrite, **engine)
        self.output = Path(os.path.abspath(output))

    def parameters(self):
        """Parameters recorded in provenance.

        Returns
        -------
        dict
            ``operator`` and ``b`` (the number, or ``'frame'``).
        """
        return {"operator": self.operator,
                "b": self.number if self.number is not None else "frame"}

    def combine(self, paths):
        """Compute ``A op B``.

        Parameters
        ----------
        paths : list of str
            A, and B when it is a frame.

        Returns
        -------
        astropy.nddata.CCDData
            The result, with a HISTORY card naming the operands.

        Raises
        ------
        ValueError
            B could not be read (it failed its check).
        """
        if len(paths) != len(self.files):
            raise ValueError(f"imarith: an operand could not be read: {self.files}")
        a = read_frame(paths[0])
        b = self.number if self.number is not None else read_frame(paths[1])
        result = imarith(a, self.operator, b)
        b_name = Path(paths[1]).name if self.number is None else repr(self.number)
        result.meta.add_history(header_text(
            f"astrodart imarith: {Path(paths[0]).name} {self.operator} {b_name}"))
        return result


class continuum_subtraction(ManyToOneStep):
    """A narrow-band frame minus its continuum: the broad-band frame scaled on the stars.

    Parameters
    ----------
    narrow, broad : str or pathlib.Path
        Registered frames of one shape and unit.
    output : str or pathlib.Path
        The result's path.
    overwrite : bool or {'yes', 'no'}
        Redo an output that exists.
    scale : float, optional
        The continuum scale (default: fitted on the stars).
    fwhm : float, optional
        Seeing FWHM, pixels (default: measured).
    %(engine_parameters)s

    Raises
    ------
    FileNotFoundError
        A frame does not exist.
    """

    name = "continuum_subtraction"

    def __init__(self, narrow, broad, output, overwrite=False, *, scale: float | None = None,
                 fwhm: float | None = None, **engine):
        files = [str(check_path(n, f, owner="continuum_subtraction"))
                 for n, f in (("narrow", narrow), ("broad", broad))]
        output = Path(output)
        super().__init__(output.parent if str(output.parent) else ".", files, output.name,
                         overwrite, **engine)
        self.output = Path(os.path.abspath(output))
        self.scale, self.fwhm = scale, fwhm

    def parameters(self):
        """Parameters recorded in provenance.

        Returns
        -------
        dict
            ``scale`` and ``fwhm`` (None: fitted, measured).
        """
        return {"scale": self.scale, "fwhm": self.fwhm}

    def combine(self, paths):
        """Fit the scale on the stars and subtract the continuum.

        Parameters
        ----------
        paths : list of str
            The narrow-band and the broad-band frame.

        Returns
        -------
        astropy.nddata.CCDData
            The line emission (header ``CONTSCAL``, ``CONTSERR``, ``CONTNSTR``).

        Raises
        ------
        ValueError
            A frame could not be read, or too few stars to fit the scale.
        """
        if len(paths) != 2:
            raise ValueError(f"continuum_subtraction: a frame could not be read: {self.files}")
        fit = {} if self.fwhm is None else {"fwhm": self.fwhm}
        result, _ = continuum_subtract(read_frame(paths[0]), read_frame(paths[1]),
                                       scale=self.scale, **fit)
        return result
