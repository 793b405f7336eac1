"""astrodart: from a night of raw CCD/CMOS frames to calibrated, plate-solved, stacked
images and differential light curves. The tested successor of AstroDART.

Layers (see ARCHITECTURE.md): ``frames``/``headers`` (FITS I/O and header normalisation),
``core`` (pure science functions), ``steps`` (the file-level step engine), the
AstroDART-compatible stages (``utils``, ``first_stage``, ``second_stage``,
``third_stage_astrophotography``, ``third_stage_photometry``), and interaction
(``widgets``, ``plotting``, ``datasets``, ``cli``).
"""

__all__ = ["__version__"]


def __getattr__(name):
    # ``__version__`` is read from the installed metadata on first use (PEP 562):
    # importlib.metadata costs ~30 ms that ``import astrodart`` need not pay.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("astrodart")
    except PackageNotFoundError:  # running from a source tree that is not installed
        value = "0.1.0"
    globals()["__version__"] = value
    return value
