"""Layer 2: aperture photometry, ensemble differential light curves, time (BJD_TDB,
airmass), sites, transit fit."""
