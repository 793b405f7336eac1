"""Layer 2: plate solving (offline with astrometry.net index files, online fallback) and WCS checks."""
