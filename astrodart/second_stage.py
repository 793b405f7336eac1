"""Stage 2 (AstroDART-compatible): seeing, plate solving and a quick look in DS9.

The names are AstroDART's, so an AstroDART notebook keeps working::

    from astrodart.second_stage import *
    fwhm = get_fwhm(files).estimate_fwhm()             # one FWHM per file, pixels
    failed = astrometry(directory, files, api_key, fwhm).run()
    check_ds9(files[0])

A facade: the work is done in the rooms below.

* :class:`get_fwhm` (:mod:`astrodart.pipeline.measure`) measures a true FWHM: a
  pixel-integrated elliptical Moffat fitted to isolated, unsaturated stars
  (:func:`astrodart.sources.psf.measure_fwhm`), not a bounding box averaged across
  files. It also gives ellipticity, and arcseconds when the pixel scale is known.
* :class:`astrometry` (:mod:`astrodart.pipeline.solve`) solves offline first (the
  in-process astrometry.net engine with local index files, or ``solve-field``), online
  through nova.astrometry.net only as a fallback when an API key is known
  (:mod:`astrodart.astrometry`). The pixel FWHM is used as is for star finding (never
  multiplied by arcsec/px). The WCS is written into each solved file atomically
  (:func:`write_solution`), pixel data untouched; a frame that cannot be solved is
  reported with the reason and never stops the batch.
* :class:`check_ds9` (:mod:`astrodart.pipeline.ds9`) opens a frame in SAOImage DS9.
"""
from __future__ import annotations

from astrodart.pipeline.ds9 import DS9NotInstalledWarning, check_ds9
from astrodart.pipeline.measure import FWHMFailedWarning, get_fwhm
from astrodart.pipeline.solve import (
    AstrometryFailedWarning,
    astrometry,
    has_astrodart_wcs,
    write_solution,
)

__all__ = [
    "AstrometryFailedWarning",
    "DS9NotInstalledWarning",
    "FWHMFailedWarning",
    "astrometry",
    "check_ds9",
    "get_fwhm",
    "has_astrodart_wcs",
    "write_solution",
]
