"""Layer 2: CCD calibration on arrays and CCDData (no file I/O, no printing).

The room's public API, by concept (each module documents its methods and sources):

* :mod:`~astrodart.calibration.base`: errors, header keywords, variance, bias state,
  and the units and conventions of the whole room;
* :mod:`~astrodart.calibration.sections`: FITS sections, trim, overscan;
* :mod:`~astrodart.calibration.noise`: uncertainty plane, gain (ADU to electrons),
  measured background/noise maps, the one robust standard deviation;
* :mod:`~astrodart.calibration.bias`, :mod:`~astrodart.calibration.dark`,
  :mod:`~astrodart.calibration.flat`: the masters applied to a frame (dark scaling and
  interpolation, flat normalisation and sky flatness);
* :mod:`~astrodart.calibration.pixels`: bad-pixel map and repair;
* :mod:`~astrodart.calibration.cosmics`: cosmic rays (L.A.Cosmic, median filter);
* :mod:`~astrodart.calibration.detector`: read noise, gain (photon transfer), dark current.

The file-level steps over these functions are in :mod:`astrodart.pipeline` (and the
AstroDART facade :mod:`astrodart.first_stage`).
"""

from astrodart.calibration import base, bias, cosmics, dark, detector, flat, noise, pixels, sections
from astrodart.calibration.base import *
from astrodart.calibration.bias import *
from astrodart.calibration.cosmics import *
from astrodart.calibration.dark import *
from astrodart.calibration.detector import *
from astrodart.calibration.flat import *
from astrodart.calibration.noise import *
from astrodart.calibration.pixels import *
from astrodart.calibration.sections import *

#: The room's API: each module's ``__all__``, in the order of the list above.
__all__ = [
    name
    for module in (base, sections, noise, bias, dark, flat, pixels, cosmics, detector)
    for name in module.__all__
]
