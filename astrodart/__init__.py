"""astrodart: from a night of raw CCD/CMOS frames to calibrated, plate-solved, stacked
images and differential light curves. The tested successor of AstroDART.

Layers (see ARCHITECTURE.md): ``frames``/``headers`` (FITS I/O and header normalisation),
``core`` (pure science functions), ``steps`` (the file-level step engine), the
AstroDART-compatible stages (``utils``, ``first_stage``, ``second_stage``,
``third_stage_astrophotography``, ``third_stage_photometry``), and interaction
(``widgets``, ``plotting``, ``datasets``, ``cli``).
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("astrodart")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
