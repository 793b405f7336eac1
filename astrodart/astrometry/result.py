"""Layer 2: what a plate solve returns, shared by every backend.

Star positions are 0-based ``(x, y)`` pixel positions (numpy/photutils convention, ``x``
along NAXIS1), brightest first; shapes are numpy ``(ny, nx)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

__all__ = ["BACKENDS", "SolveResult"]

#: Backend names accepted by ``backend=``.
BACKENDS = ("inprocess", "solve-field", "online")


@dataclass
class SolveResult:
    """Outcome of one plate solve.

    Parameters
    ----------
    solved : bool
        True when a WCS was found and passed verification.
    backend : str
        One of :data:`BACKENDS` (or ``'none'`` when no backend could run).
    reason : str
        Why the frame was not solved (empty when solved); notes when solved.
    wcs : astropy.wcs.WCS or None
        The solution (TAN, with SIP distortion when fitted), FITS 1-based ``CRPIX``.
    solver : str
        Software and version, e.g. ``'astrometry.net engine (astrometry 4.3.0)'``.
    index : str or None
        Index file (or service) that gave the match.
    n_matched : int or None
        Detected stars within ``match_radius`` of a catalogue star.
    rms_arcsec : float or None
        Rms distance of those pairs, arcseconds.
    logodds : float or None
        Log-odds of the match reported by the engine.
    pixel_scale : float or None
        Arcseconds per pixel of the solution.
    center : astropy.coordinates.SkyCoord or None
        Sky position of the image centre.
    elapsed : float
        Wall-clock seconds spent.
    attempts : list of str
        One line per backend tried.
    """

    solved: bool
    backend: str
    reason: str = ""
    wcs: WCS | None = field(default=None, repr=False)
    solver: str = ""
    index: str | None = None
    n_matched: int | None = None
    rms_arcsec: float | None = None
    logodds: float | None = None
    pixel_scale: float | None = None
    center: SkyCoord | None = None
    elapsed: float = 0.0
    attempts: list[str] = field(default_factory=list)

    @property
    def sip(self) -> bool:
        """True when the WCS carries SIP distortion polynomials."""
        return self.wcs is not None and self.wcs.sip is not None

    def summary(self) -> dict:
        """The result as a JSON-friendly dict, for logs and tables.

        Returns
        -------
        dict
            The scalar attributes, ``sip``, and the centre in degrees
            (``center_ra_deg``, ``center_dec_deg``) when known.
        """
        d = {k: getattr(self, k) for k in ("solved", "backend", "reason", "solver", "index",
                                           "n_matched", "rms_arcsec", "logodds", "pixel_scale",
                                           "elapsed", "attempts")}
        d["sip"] = self.sip
        if self.center is not None:
            d["center_ra_deg"] = float(self.center.ra.deg)
            d["center_dec_deg"] = float(self.center.dec.deg)
        return d


def _xy_array(xy) -> np.ndarray:
    a = np.asarray(xy, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"star positions must have shape (n, 2), got {a.shape}")
    return a[np.all(np.isfinite(a), axis=1)]


def _check_shape(shape) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"shape must be (ny, nx) with positive sizes, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # metadata missing in odd installs: the version is only informative
        return "?"

