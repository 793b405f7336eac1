"""Layer 1: FITS frames as CCDData (reading every flavour, atomic writes), FrameHeader, header edits, provenance."""
