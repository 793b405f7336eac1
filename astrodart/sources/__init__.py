"""Layer 2: the one star detector, the one FWHM/PSF estimator, the one background estimator.

* :mod:`astrodart.sources.stars` -- :func:`~astrodart.sources.stars.find_stars`.
* :mod:`astrodart.sources.psf` -- :func:`~astrodart.sources.psf.measure_fwhm`,
  :func:`~astrodart.sources.psf.fwhm_of_stars`, :func:`~astrodart.sources.psf.fit_stars`.
* :mod:`astrodart.sources.background` --
  :func:`~astrodart.sources.background.estimate_background`,
  :func:`~astrodart.sources.background.sky_stats`,
  :func:`~astrodart.sources.background.saturation_level`.
* :mod:`astrodart.sources.sep_measure` -- :func:`~astrodart.sources.sep_measure.sep_measure`:
  the fast per-frame look of the quality table (sep background, detection, adaptive-moment
  FWHM and ellipticity, ~0.03 s a 1024 x 1024 frame); ``measure_fwhm`` stays the reference.

The per-frame quality table built from files is :mod:`astrodart.pipeline.quality`.
"""
