"""Layer 2: matching frames (WCS, star patterns, cross-correlation) and resampling onto a reference grid.

One home per job:

- :mod:`~astrodart.alignment.transforms` -- :class:`PixelTransform`, the limits a user
  accepts (:class:`AlignmentLimits`), least-squares similarity/affine fits, the errors;
- :mod:`~astrodart.alignment.matching` -- THE star matcher: :func:`crossmatch` (pairs on
  one grid), :func:`match_stars` (offset vote, else astroalign triangles, mirror
  included, refined by a similarity fit), :func:`pair_stars` (both);
- :mod:`~astrodart.alignment.correlation` -- :func:`fft_translation` (phase correlation);
- :mod:`~astrodart.alignment.wcs` -- pixel maps through two WCSs, pairing detected stars
  with a catalogue through a WCS;
- :mod:`~astrodart.alignment.resample` -- warping and reprojection onto the reference grid;
- :mod:`~astrodart.alignment.ladder` -- :func:`align_frame`, the ladder WCS -> stars -> FFT.

Stars are detected by :func:`astrodart.sources.stars.find_stars`. The file-level step is
:class:`astrodart.pipeline.align.align`.
"""
