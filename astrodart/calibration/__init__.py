"""Layer 2: CCD calibration on arrays and CCDData: trim/overscan, gain and uncertainty, bias, dark, flat, bad pixels, cosmic rays, detector characterisation."""
