"""Stage 1, AstroDART-compatible: from raw frames to calibrated science frames.

``from astrodart.first_stage import *`` gives the classes the AstroDART guides use,
with the same signatures (plus keyword-only options): :class:`trimmer`,
:class:`overscan_correction`, :class:`deviation_calculation`, :class:`gain_correction`,
:class:`cosmic_ray_laplacian_correction`, :class:`cosmic_ray_median_correction`,
:class:`subtract_bias`, :class:`subtract_dark`, :class:`correct_flatfield` and
:class:`finalize_stage1`. Each per-frame class is a :class:`astrodart.pipeline.step.Step`
(resume, parallel map, per-frame error capture, provenance, run log) bound to a pure
function of :mod:`astrodart.calibration`; its ``.run()`` returns the list of output paths
(``wdir/<prefix><name>.fits``).

This module is the AstroDART-compatible facade: the classes live in the pipeline room
(:mod:`astrodart.pipeline.prepare`, :mod:`~astrodart.pipeline.cosmic_rays`,
:mod:`~astrodart.pipeline.calibrate`, :mod:`~astrodart.pipeline.chain`,
:mod:`~astrodart.pipeline.masters`, :mod:`~astrodart.pipeline.characterise`,
:mod:`~astrodart.pipeline.finalize`) over the science of :mod:`astrodart.calibration`.

Beyond the original:

* :class:`master_frame` combines bias, dark or flat frames into a master that records
  its inputs (``NCOMBINE``, ``IMCMBnnn``) and its combine settings;
* :class:`dark_interpolation` makes a master dark for an exposure time without darks
  from masters at other exposures (least squares ``D = t A + B`` per pixel);
* :class:`subtract_dark` scales by exposure time, picks the matching master out of
  several, or interpolates between them, and refuses masters of another shape or binning;
* :class:`bad_pixel_map` and :class:`bad_pixel_correction` flag hot and defective pixels
  from the master dark and flat and repair them by interpolation;
* :class:`photon_transfer` measures gain and read noise from flat and bias pairs, and
  :class:`dark_current` the dark current and hot pixels of a master dark;
* :class:`calibration_chain` applies the whole per-frame chain in one pass (each frame
  read once and written once), with the same results and provenance as the classes;
  its options form a :class:`CalibrationPlan` that ``print`` shows step by step.

Order matters in one place: the guide removes cosmic rays before the bias and dark.
Hand the cosmic-ray step a bad-pixel map (``mask_file=``) then, or hot pixels are
"cleaned" into holes by the later dark subtraction (they are masked either way).

A typical chain (the astrophotography guide plus darks)::

    rn = photon_transfer(bias_files, flat_files).run()          # no RON in the header?
    b = gain_correction(bias_dir, deviation_calculation(bias_dir,
            trimmer(bias_dir, bias_files, region, 'yes').run(), 'yes', ron=rn.read_noise).run(),
            'yes').run()
    masterbias = master_frame(bias_dir, b, 'masterbias.fits', 'median', 'sigclip', 3, 3).run()
    ...
    directories, files = finalize_stage1(data_dir, object_dir, bias_dir, dark_dir, flat_dir).run()
"""

from __future__ import annotations

from astrodart.calibration.base import CalibrationError, CalibrationWarning
from astrodart.pipeline.calibrate import (
    bad_pixel_correction,
    correct_flatfield,
    subtract_bias,
    subtract_dark,
)
from astrodart.pipeline.calibration_step import KW_NONFINITE, load_master
from astrodart.pipeline.chain import CalibrationPlan, calibration_chain
from astrodart.pipeline.characterise import bad_pixel_map, dark_current, photon_transfer
from astrodart.pipeline.cosmic_rays import (
    cosmic_ray_laplacian_correction,
    cosmic_ray_median_correction,
)
from astrodart.pipeline.finalize import finalize_stage1
from astrodart.pipeline.interpolated_dark import dark_interpolation
from astrodart.pipeline.masters import master_frame
from astrodart.pipeline.prepare import (
    deviation_calculation,
    gain_correction,
    overscan_correction,
    trimmer,
)

__all__ = [
    "trimmer",
    "overscan_correction",
    "deviation_calculation",
    "gain_correction",
    "cosmic_ray_laplacian_correction",
    "cosmic_ray_median_correction",
    "subtract_bias",
    "subtract_dark",
    "correct_flatfield",
    "finalize_stage1",
    "master_frame",
    "dark_interpolation",
    "bad_pixel_map",
    "bad_pixel_correction",
    "calibration_chain",
    "CalibrationPlan",
    "photon_transfer",
    "dark_current",
    "CalibrationError",
    "CalibrationWarning",
]

# Names this module defined or imported before its classes moved to the pipeline room,
# kept importable for code written against it.
import functools, logging, os, shutil, warnings  # noqa: E401,E402,F401,I001
from pathlib import Path  # noqa: E402,F401
from typing import Any, Sequence  # noqa: E402,F401

import numpy as np  # noqa: E402,F401
from astropy import units as u  # noqa: E402,F401
from astropy.io import fits  # noqa: E402,F401
from astropy.nddata import CCDData, StdDevUncertainty  # noqa: E402,F401

from astrodart import __version__  # noqa: E402,F401
from astrodart import calibration as cal  # noqa: E402,F401
from astrodart.calibration import cosmics as crs  # noqa: E402,F401
from astrodart.calibration import detector as det  # noqa: E402,F401
from astrodart.frames.header import FrameHeader, MissingKeywordError  # noqa: E402,F401
from astrodart.frames.io import (  # noqa: E402,F401
    find_fits, read_frame, read_header, write_frame, write_hdulist,
)
from astrodart.pipeline.calibrate import (  # noqa: E402,F401
    _dark_entries, _dark_entries_cached, _dark_model, _normalised_flat,
    _shared_bias_variance,
)
from astrodart.pipeline.calibration_step import (  # noqa: E402,F401
    CalibrationStep as _CalibrationStep, Files, Overwrite, PathLike, _check_master,
    _compare_geometry, _frame_header, _geometry, _one_path, _read_cached, _sanitise,
    _shape_from_header, log,
)
from astrodart.pipeline.cosmic_rays import _CosmicStep  # noqa: E402,F401
from astrodart.pipeline.finalize import (  # noqa: E402,F401
    _as_list, _final_products, _is_master, _is_step_output,
)
from astrodart.pipeline.masters import (  # noqa: E402,F401
    _record_inputs, _recorded_inputs, _reuse_master,
)
from astrodart.pipeline.step import (  # noqa: E402,F401
    LOG_NAME, Step, check_kwargs, find_log_path, known_prefixes, log_event, parse_overwrite,
)
