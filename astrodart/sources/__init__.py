"""Layer 2: the one star detector, the one FWHM/PSF estimator, the one background estimator.

* :mod:`astrodart.sources.stars` -- :func:`~astrodart.sources.stars.find_stars`.
* :mod:`astrodart.sources.psf` -- :func:`~astrodart.sources.psf.measure_fwhm`,
  :func:`~astrodart.sources.psf.fwhm_of_stars`, :func:`~astrodart.sources.psf.fit_stars`.
* :mod:`astrodart.sources.background` --
  :func:`~astrodart.sources.background.estimate_background`,
  :func:`~astrodart.sources.background.sky_stats`,
  :func:`~astrodart.sources.background.saturation_level`.

The per-frame quality table built from files is :mod:`astrodart.pipeline.quality`.
"""
