"""Layer 2: star detection, background, FWHM/PSF and the per-frame quality table."""
