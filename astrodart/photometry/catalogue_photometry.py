"""Layer 2: magnitudes on a standard system from catalogue stars in the frame.

Method
------
The standard transformation equation of a frame in band ``m`` (Harris, Fitzgerald &
Reed 1981, PASP 93, 507; Warner 2006, *A Practical Guide to Lightcurve Photometry and
Analysis*, ch. 4)::

    m_cat - m_inst = ZP + k * colour

``m_inst = -2.5 log10(flux / exptime)`` (+ any constant) of catalogue stars measured on
the frame, ``colour`` their catalogue colour (e.g. ``B-V``), ``ZP`` the frame's zero point
(it absorbs the exposure, extinction at the frame's airmass and the transparency) and
``k`` the colour term of the filter + detector. :func:`fit_zero_point` fits ``ZP`` and
``k`` (or ``ZP`` alone with ``k`` fixed, e.g. from a night with many stars, or 0) by
weighted least squares (:class:`astropy.modeling.fitting.LinearLSQFitter`) with sigma
clipping (:func:`astropy.stats.sigma_clip`, median and MAD) of the residuals divided by
their errors, refitting until no star changes (outliers: variables, blends, mismatches;
clipping the raw residuals instead would throw out faint stars just for being noisy).
The covariance of ``(ZP, k)`` is the weighted least-squares one, ``(A^T W A)^-1``,
scaled up by the reduced chi-square when that exceeds 1 (the stars scatter more than
their errors say); without errors, the stars are weighted equally and the covariance is
scaled by their scatter.
:func:`calibrated_magnitudes` applies the fit with errors from the photon noise, the fit
covariance and the colour's error. :func:`fit_zero_points` does it per frame and filter.
:func:`comparison_photometry` gives what the AAVSO Extended File Format asks of a
single comparison star: the standardized magnitude, CMAG and KMAG (instrumental
magnitudes of the comparison and check stars) and the check star's error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

__all__ = [
    "ZeroPointFit",
    "calibrated_magnitudes",
    "comparison_photometry",
    "fit_zero_point",
    "fit_zero_points",
    "leave_one_out",
    "match_catalogue",
]


@dataclass
class ZeroPointFit:
    """The transformation ``m_cat - m_inst = zp + colour_term * colour`` of one frame.

    Parameters
    ----------
    zp, zp_err : float
        Zero point and its 1-sigma error, mag.
    colour_term, colour_term_err : float
        Colour term ``k`` (mag per mag of colour) and its error (0 when it was fixed).
    covariance : numpy.ndarray, shape (2, 2)
        Covariance of ``(zp, colour_term)``, mag**2.
    used : numpy.ndarray of bool, shape (n,)
        Stars kept by the fit (finite inputs, not clipped).
    residuals : numpy.ndarray, shape (n,)
        ``m_cat - m_inst - zp - k colour`` of every star, mag (NaN where an input is).
    rms : float
        Unweighted RMS of the kept residuals, mag.
    chi2_red : float
        Reduced chi-square of the kept stars (NaN with no degree of freedom).
    n_used : int
        Number of stars kept.
    fixed_colour_term : bool
        True when ``colour_term`` was given, not fitted.
    band, colour_name : str
        Labels (e.g. ``'V'``, ``'B-V'``).
    """

    zp: float
    zp_err: float
    colour_term: float
    colour_term_err: float
    covariance: np.ndarray
    used: np.ndarray
    residuals: np.ndarray
    rms: float
    chi2_red: float
    n_used: int
    fixed_colour_term: bool
    band: str = ""
    colour_name: str = ""

    def as_row(self) -> dict:
        """The scalar results as a dict (for a table of frames).

        Returns
        -------
        dict
            ``zp``, ``zp_err``, ``colour_term``, ``colour_term_err``, ``rms``,
            ``chi2_red``, ``n_used``, ``fixed_colour_term``.
        """
        return {k: getattr(self, k) for k in ("zp", "zp_err", "colour_term",
                                              "colour_term_err", "rms", "chi2_red",
                                              "n_used", "fixed_colour_term")}


def _vector(name: str, value, n: int | None = None) -> np.ndarray:
    if isinstance(value, u.Quantity):
        value = value.to_value(u.mag)
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size == 1 and n != 1:
        arr = np.full(n, arr[0])
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} values; m_inst has {n}")
    return arr


def _errors(n: int, *errs) -> np.ndarray:
    """Quadrature sum of the given error arrays (None or NaN count as 0)."""
    total = np.zeros(n)
    for name, e in errs:
        if e is not None:
            total += np.nan_to_num(_vector(name, e, n), nan=0.0) ** 2
    return np.sqrt(total)


def _wls_covariance(colour, sigma, used, fixed: bool, chi2_red: float) -> np.ndarray:
    """Weighted least-squares covariance of (zp, k), scaled by max(1, chi2_red)."""
    a = np.column_stack([np.ones(used.sum()), colour[used]])[:, : 1 if fixed else 2]
    w = 1.0 / sigma[used] ** 2
    cov = np.zeros((2, 2))
    k = a.shape[1]
    cov[:k, :k] = np.linalg.inv(a.T @ (a * w[:, None]))
    return cov * (max(1.0, chi2_red) if np.isfinite(chi2_red) else 1.0)


def _zp_inputs(m_inst, m_cat, m_inst_err, m_cat_err, colour):
    mi = _vector("m_inst", m_inst)
    n = mi.size
    mc = _vector("m_cat", m_cat, n)
    col = np.zeros(n) if colour is None else _vector("colour", colour, n)
    sig = _errors(n, ("m_inst_err", m_inst_err), ("m_cat_err", m_cat_err))
    ok = np.isfinite(mi) & np.isfinite(mc) & np.isfinite(col)
    return mi, mc, col, sig, ok


def _clipped_fit(x, y, s, ok, k0: float, fixed: bool, sigma: float, maxiters: int, need: int):
    """Weighted linear fit of y = zp + k x, then clip |residual / s| beyond ``sigma`` robust
    standard deviations and refit, until no star changes (rejection is cumulative)."""
    from astropy.modeling import fitting, models
    from astropy.stats import sigma_clip

    model = models.Polynomial1D(1, c0=float(np.median(y[ok])), c1=k0)
    model.c1.fixed = fixed
    fitter = fitting.LinearLSQFitter()
    used = ok.copy()
    for _ in range(max(1, maxiters)):
        model = fitter(model, x[used], y[used], weights=1.0 / s[used])
        if not np.isfinite(sigma):
            break
        pulls = (y[used] - model(x[used])) / s[used]
        clipped = np.asarray(sigma_clip(pulls, sigma=sigma, stdfunc="mad_std", maxiters=1,
                                        masked=True).mask)
        keep = used.copy()
        keep[np.flatnonzero(used)[clipped]] = False
        if keep.sum() == used.sum() or keep.sum() < need:
            break
        used = keep
    return model, used


def fit_zero_point(m_inst, m_cat, *, m_inst_err=None, m_cat_err=None, colour=None,
                   colour_term: float | None = None, sigma: float = 3.0, maxiters: int = 5,
                   band: str = "", colour_name: str = "") -> ZeroPointFit:
    """Fit a frame's zero point (and colour term) to catalogue stars, clipping outliers.

    Parameters
    ----------
    m_inst : array_like, shape (n,)
        Instrumental magnitudes of the catalogue stars on the frame (e.g.
        :func:`astrodart.photometry.apertures.instrumental_magnitude`), mag.
    m_cat : array_like, shape (n,)
        Their catalogue magnitudes in the band of the frame, mag.
    m_inst_err, m_cat_err : array_like, shape (n,), optional
        1-sigma errors, mag (NaN counts as 0). When both are missing (or an error is 0)
        the stars are weighted equally and the covariance comes from their scatter.
    colour : array_like, shape (n,), optional
        Catalogue colour of the stars (e.g. ``B-V``), mag. Without it only ``zp`` is fitted.
    colour_term : float, optional
        Fix ``k`` to this value (e.g. from a night with many stars); default: fitted when
        ``colour`` is given (needs 3 stars), 0 otherwise.
    sigma : float
        Clipping threshold in robust standard deviations (``mad_std``) of the residuals
        divided by their errors (``inf``: no clipping).
    maxiters : int
        Most fit-and-clip rounds (rejection is cumulative).
    band, colour_name : str
        Labels kept in the result.

    Returns
    -------
    ZeroPointFit

    Raises
    ------
    ValueError
        Inputs of different lengths, a bad ``sigma``, or too few usable stars (1 for the
        zero point alone, 3 with a fitted colour term).

    Notes
    -----
    Harris, Fitzgerald & Reed (1981, PASP 93, 507); Warner (2006), ch. 4. See the module
    notes for the weights and the covariance.
    """
    mi, mc, col, sig, ok = _zp_inputs(m_inst, m_cat, m_inst_err, m_cat_err, colour)
    if not (np.isfinite(sigma) or sigma == np.inf) or sigma <= 0:
        raise ValueError(f"sigma={sigma!r}: a positive clipping threshold")
    fixed = colour_term is not None or colour is None
    need = 1 if fixed else 3
    if ok.sum() < need:
        raise ValueError(f"{ok.sum()} usable star(s) (finite m_inst, m_cat, colour): "
                         f"{need} needed {'' if fixed else 'to fit a colour term'}")
    weighted = bool(np.all(sig[ok] > 0))
    s = sig if weighted else np.ones_like(sig)
    fitted, used = _clipped_fit(col, mc - mi, s, ok, float(colour_term or 0.0), fixed, sigma,
                                maxiters, need)
    zp, k = float(fitted.c0.value), float(fitted.c1.value)
    resid = np.where(ok, mc - mi - zp - k * col, np.nan)
    dof = used.sum() - need
    chi2 = float(np.sum((resid[used] / s[used]) ** 2) / dof) if dof > 0 else np.nan
    cov = _wls_covariance(col, s, used, fixed, chi2 if weighted else 1.0)
    if not weighted:
        cov = cov * (chi2 if dof > 0 else np.nan)
    return ZeroPointFit(zp=zp, zp_err=float(np.sqrt(cov[0, 0])), colour_term=k,
                        colour_term_err=float(np.sqrt(cov[1, 1])), covariance=cov, used=used,
                        residuals=resid, rms=float(np.sqrt(np.mean(resid[used] ** 2))),
                        chi2_red=chi2, n_used=int(used.sum()), fixed_colour_term=fixed,
                        band=band, colour_name=colour_name)


def calibrated_magnitudes(m_inst, fit: ZeroPointFit, *, m_inst_err=None, colour=None,
                          colour_err=None) -> tuple[np.ndarray, np.ndarray]:
    """Standard magnitudes of stars of the frame, and their errors.

    Parameters
    ----------
    m_inst : array_like, shape (n,)
        Instrumental magnitudes measured as for the fit (same aperture scheme, same
        constant), mag.
    fit : ZeroPointFit
        The frame's transformation (:func:`fit_zero_point`).
    m_inst_err : array_like, shape (n,), optional
        Their photon-noise errors, mag.
    colour, colour_err : array_like, shape (n,), optional
        The stars' standard colours and errors, mag: a catalogue colour, or one measured
        and transformed (a :func:`fit_zero_point` of ``B-V`` against ``b-v`` gives
        ``B-V = (b-v) + zp + k (b-v)``). Needed when the colour term is not 0.

    Returns
    -------
    mag, mag_err : numpy.ndarray, shape (n,)
        ``m_inst + zp + k colour`` and
        ``sqrt(m_inst_err**2 + J C J^T + (k colour_err)**2)`` with ``J = (1, colour)`` and
        ``C`` the fit covariance.

    Raises
    ------
    ValueError
        No colour given for a fit with a non-zero colour term, or inputs of different
        lengths.
    """
    mi = _vector("m_inst", m_inst)
    n = mi.size
    if colour is None and fit.colour_term != 0:
        raise ValueError(f"colour is needed: the fit has colour term {fit.colour_term:.4f} "
                         f"({fit.colour_name or 'colour'})")
    col = np.zeros(n) if colour is None else _vector("colour", colour, n)
    c = fit.covariance
    var_fit = c[0, 0] + 2 * col * c[0, 1] + col**2 * c[1, 1]
    var = (_errors(n, ("m_inst_err", m_inst_err)) ** 2 + var_fit
           + (fit.colour_term * _errors(n, ("colour_err", colour_err))) ** 2)
    return mi + fit.zp + fit.colour_term * col, np.sqrt(var)


def leave_one_out(m_inst, m_cat, *, m_inst_err=None, m_cat_err=None, colour=None,
                  colour_term: float | None = None) -> np.ndarray:
    """Each star's calibrated magnitude minus its catalogue value, the star left out of
    the fit: an honest error estimate when the stars are few.

    Parameters
    ----------
    m_inst, m_cat, m_inst_err, m_cat_err, colour, colour_term
        As for :func:`fit_zero_point` (no clipping: every other star is used).

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``calibrated - m_cat`` of each star from the fit to the others, mag (NaN where
        its inputs are not finite or the others are too few).
    """
    mi, mc, col, _sig, ok = _zp_inputs(m_inst, m_cat, m_inst_err, m_cat_err, colour)
    n = mi.size
    out = np.full(n, np.nan)
    errs = [None if e is None else _vector(nm, e, n)
            for nm, e in (("m_inst_err", m_inst_err), ("m_cat_err", m_cat_err))]
    for i in np.flatnonzero(ok):
        keep = np.arange(n) != i
        try:
            fit = fit_zero_point(mi[keep], mc[keep], colour=None if colour is None else
                                 col[keep], colour_term=colour_term, sigma=np.inf,
                                 m_inst_err=None if errs[0] is None else errs[0][keep],
                                 m_cat_err=None if errs[1] is None else errs[1][keep])
        except ValueError:
            continue
        mag, _ = calibrated_magnitudes(mi[i:i + 1], fit, colour=col[i:i + 1])
        out[i] = mag[0] - mc[i]
    return out


def fit_zero_points(measurements: Table, *, band_column: str = "m_cat",
                    colour_column: str | None = "colour", colour_terms: dict | None = None,
                    sigma: float = 3.0) -> Table:
    """A zero point (and colour term) per frame and filter.

    Parameters
    ----------
    measurements : astropy.table.Table
        One row per catalogue star per frame, with columns ``frame``, ``filter``,
        ``m_inst``, ``band_column`` and optionally ``m_inst_err``, ``m_cat_err`` and
        ``colour_column``.
    band_column : str
        Column of the catalogue magnitude in the frame's filter.
    colour_column : str, optional
        Column of the catalogue colour (None: zero points only).
    colour_terms : dict, optional
        ``{filter: k}`` colour terms to hold fixed (e.g. fitted on a night's best frame);
        filters not in it get a fitted term.
    sigma : float
        Clipping threshold (:func:`fit_zero_point`).

    Returns
    -------
    astropy.table.Table
        One row per (frame, filter): ``frame``, ``filter``, ``n_stars`` and the
        :meth:`ZeroPointFit.as_row` values (NaN with a ``note`` where the fit failed).

    Raises
    ------
    KeyError
        A required column is missing (the message names it).
    """
    needed = ["frame", "filter", "m_inst", band_column] + ([colour_column] if colour_column
                                                          else [])
    missing = [c for c in needed if c not in measurements.colnames]
    if missing:
        raise KeyError(f"measurements lacks column(s) {missing}; has {measurements.colnames}")
    rows = []
    for grp in measurements.group_by(["frame", "filter"]).groups:
        filt = str(grp["filter"][0])
        row = {"frame": str(grp["frame"][0]), "filter": filt, "n_stars": len(grp), "note": ""}
        try:
            fit = fit_zero_point(
                grp["m_inst"], grp[band_column], sigma=sigma,
                m_inst_err=grp["m_inst_err"] if "m_inst_err" in grp.colnames else None,
                m_cat_err=grp["m_cat_err"] if "m_cat_err" in grp.colnames else None,
                colour=grp[colour_column] if colour_column else None,
                colour_term=(colour_terms or {}).get(filt), band=filt)
            row.update(fit.as_row())
        except ValueError as exc:
            row.update(zp=np.nan, zp_err=np.nan, colour_term=np.nan, colour_term_err=np.nan,
                       rms=np.nan, chi2_red=np.nan, n_used=0, fixed_colour_term=False,
                       note=str(exc))
        rows.append(row)
    return Table(rows=rows)


def match_catalogue(positions, catalogue: Table, *, wcs=None,
                    max_separation=2.0 * u.arcsec) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue star nearest each measured star, within a separation.

    Parameters
    ----------
    positions : astropy.coordinates.SkyCoord or array_like, shape (n, 2)
        Sky positions, or 0-based pixel ``(x, y)`` with ``wcs``.
    catalogue : astropy.table.Table
        With ``ra``, ``dec`` columns (deg), e.g. from :func:`query_catalogue`.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of the frame (for pixel positions).
    max_separation : astropy.units.Quantity or float
        Largest separation (angle, or arcsec).

    Returns
    -------
    index : numpy.ndarray of int, shape (n,)
        Row of ``catalogue`` matched to each star, -1 where none is near enough (or a
        nearer star took it: each catalogue star is matched once).
    separation : numpy.ndarray, shape (n,)
        Separation to the nearest catalogue star, arcsec.

    Raises
    ------
    ValueError
        Pixel positions without a WCS, or a catalogue without ``ra``/``dec``.
    """
    if not isinstance(positions, SkyCoord):
        if wcs is None:
            raise ValueError("positions are pixels: pass the frame's wcs (or a SkyCoord)")
        xy = np.asarray(positions, float).reshape(-1, 2)
        positions = wcs.pixel_to_world(xy[:, 0], xy[:, 1])
    if not {"ra", "dec"} <= set(catalogue.colnames):
        raise ValueError(f"catalogue needs ra and dec columns; has {catalogue.colnames}")
    limit = (max_separation if isinstance(max_separation, u.Quantity)
             else float(max_separation) * u.arcsec)
    n = len(np.atleast_1d(positions.ra))
    if len(catalogue) == 0 or n == 0:
        return np.full(n, -1), np.full(n, np.inf)
    cat = SkyCoord(np.asarray(catalogue["ra"], float) * u.deg,
                   np.asarray(catalogue["dec"], float) * u.deg)
    idx, sep, _ = positions.reshape(-1).match_to_catalog_sky(cat)
    sep = sep.to_value(u.arcsec)
    index = np.where(sep <= limit.to_value(u.arcsec), idx, -1)
    for j in np.unique(index[index >= 0]):  # one star per catalogue entry: the nearest
        rivals = np.flatnonzero(index == j)
        index[rivals[rivals != rivals[np.argmin(sep[rivals])]]] = -1
    return index, sep


def comparison_photometry(target_inst, comp_inst, comp_cat: float, *, target_err=None,
                          comp_err=None, comp_cat_err: float = 0.0, comp_name: str = "",
                          check_inst=None, check_err=None, check_cat: float | None = None,
                          check_name: str | None = None) -> dict:
    """A variable's standard magnitude from one comparison star, with the AAVSO fields.

    The AAVSO Extended File Format (version 1.2) reports, with ``MTYPE=STD`` and a single
    comparison star, the variable's magnitude standardized with the comparison's
    catalogue magnitude, CNAME/CMAG (the comparison's name and *instrumental* magnitude)
    and KNAME/KMAG (the check star's name and instrumental magnitude).

    Parameters
    ----------
    target_inst, comp_inst : array_like, shape (n,)
        Instrumental magnitudes of the variable and the comparison on ``n`` frames.
    comp_cat : float
        Catalogue magnitude of the comparison in the frames' band (from the AAVSO chart's
        sequence, or :func:`query_catalogue`).
    target_err, comp_err : array_like, shape (n,), optional
        Their photon-noise errors.
    comp_cat_err : float
        Error of ``comp_cat``.
    comp_name : str
        CNAME (the chart's label or AUID of the comparison).
    check_inst, check_err : array_like, shape (n,), optional
        The check star's instrumental magnitudes and errors.
    check_cat : float, optional
        The check star's catalogue magnitude (to report how far off it comes out).
    check_name : str, optional
        KNAME.

    Returns
    -------
    dict
        ``mag``, ``mag_err`` (arrays, shape (n,)): ``target - comp + comp_cat`` with errors
        in quadrature; ``cname``, ``cmag`` (= ``comp_inst``); ``kname``, ``kmag``
        (= ``check_inst``, None without a check star); ``check_mag`` and
        ``check_residual`` (standardized check star minus ``check_cat``; None without),
        ``check_err`` (its error; absent without a check star).
        ``mag``, ``mag_err``, ``cname``, ``cmag``, ``kname``, ``kmag`` are the arguments
        of :func:`astrodart.photometry.exports.aavso_extended_text` with ``mtype='STD'``.

    Raises
    ------
    ValueError
        Arrays of different lengths, or a non-finite ``comp_cat``.
    """
    t = _vector("target_inst", target_inst)
    n = t.size
    c = _vector("comp_inst", comp_inst, n)
    if not np.isfinite(comp_cat):
        raise ValueError(f"comp_cat={comp_cat!r}: the comparison's catalogue magnitude")
    shift = float(comp_cat) - c
    err = np.sqrt(_errors(n, ("target_err", target_err), ("comp_err", comp_err)) ** 2
                  + comp_cat_err**2)
    out = {"mag": t + shift, "mag_err": err, "cname": comp_name, "cmag": c,
           "kname": check_name, "kmag": None, "check_mag": None, "check_residual": None}
    if check_inst is not None:
        k = _vector("check_inst", check_inst, n)
        out["kmag"] = k
        out["check_mag"] = k + shift
        out["check_err"] = np.sqrt(_errors(n, ("check_err", check_err), ("comp_err", comp_err))
                                   ** 2 + comp_cat_err**2)
        if check_cat is not None:
            out["check_residual"] = k + shift - float(check_cat)
    return out
