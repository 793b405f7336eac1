"""Layer 2: matching frames (WCS, star patterns, cross-correlation) and resampling onto a reference grid."""
