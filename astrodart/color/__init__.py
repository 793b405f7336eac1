"""Layer 2: colour composites: background neutralisation, PSF matching, star colour balance, stretches."""
