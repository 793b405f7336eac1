"""Layer 2: aperture and optimal photometry, ensemble differential light curves, time
(BJD_TDB, airmass), sites, transit fits, catalogue zero points (Gaia DR3 and APASS through
astroquery with a disk cache, or the local Tycho-2 stars; ``catalogue_query`` reads and
writes that cache, the one file I/O of this layer besides the report writers)."""
