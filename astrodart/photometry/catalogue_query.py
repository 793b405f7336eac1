"""Layer 2: photometric reference catalogues, queried once and kept in an on-disk cache.

:func:`query_catalogue` returns the stars of a cone with their positions and magnitudes
(with units) from one of three sources:

``'gaia-dr3'``
    Gaia DR3 (Gaia Collaboration, Vallenari et al. 2023, A&A 674, A1) through the CDS
    VizieR copy ``I/355/gaiadr3`` (astroquery): ``G``, ``BP``, ``RP`` and their errors,
    and Johnson ``V`` and Cousins ``R`` from the polynomials in ``BP-RP`` of Riello et
    al. 2021 (A&A 649, A3, table C.2; scatter about 0.03 mag)::

        G - V = -0.02704 + 0.01424 X - 0.2156 X**2 + 0.01426 X**3
        G - R = -0.02275 + 0.3961 X - 0.1243 X**2 - 0.01396 X**3 + 0.003775 X**4

    with ``X = BP - RP``, used for ``-0.5 < X < 4`` (NaN outside). No Johnson B.
``'apass'``
    APASS DR9 (Henden et al. 2016, VizieR ``II/336/apass9``): Johnson ``B``, ``V`` and
    Sloan ``g``, ``r``, ``i`` with errors; Cousins ``R`` from Lupton (2005, the SDSS
    transformations page): ``R = r - 0.2936 (r - i) - 0.1439`` (scatter 0.007 mag).
``'tycho2-local'``
    Offline: the Tycho-2 stars (Høg et al. 2000, A&A 355, L27) of the astrometry.net index
    files (:func:`astrodart.datasets.catalogue.build_field_catalogue`): real positions
    and ``VT``; ``BT`` only for the few stars where it is known (the M67 stars of the
    sample's README), and there Johnson ``B`` and ``V`` from the ESA (1997) relations
    ``B-V = 0.850 (BT-VT)``, ``V = VT - 0.090 (BT-VT)``. Other stars have ``V`` NaN: the
    index files carry no colour, and a catalogue must not invent one.

Every answer from the network is written to ``cache_dir`` as ECSV whose ``meta['query']``
records the catalogue, centre, radius, source and retrieval time; the file name is keyed
by catalogue, centre and radius, and a cached answer is reused without the network.
``ASTRODART_OFFLINE=1`` (or ``offline=True``) forbids the network: a query that is not
cached then raises :class:`CatalogueUnavailableError`.
"""
from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, Table

__all__ = [
    "CATALOGUES",
    "CatalogueUnavailableError",
    "catalogue_cache_dir",
    "catalogue_cache_path",
    "query_catalogue",
]

log = logging.getLogger("astrodart.photometry")

#: The catalogues :func:`query_catalogue` knows: VizieR table, columns asked for, reference.
CATALOGUES = {
    "gaia-dr3": {"vizier": "I/355/gaiadr3",
                 "columns": ["Source", "RA_ICRS", "DE_ICRS", "Gmag", "e_Gmag", "BPmag",
                             "e_BPmag", "RPmag", "e_RPmag"],
                 "reference": "Gaia DR3 (Gaia Collaboration 2023, A&A 674, A1), VizieR "
                              "I/355/gaiadr3; V, R from Riello et al. 2021, A&A 649, A3"},
    "apass": {"vizier": "II/336/apass9",
              "columns": ["recno", "RAJ2000", "DEJ2000", "Bmag", "e_Bmag", "Vmag", "e_Vmag",
                          "g'mag", "e_g'mag", "r'mag", "e_r'mag", "i'mag", "e_i'mag"],
              "reference": "APASS DR9 (Henden et al. 2016), VizieR II/336/apass9; R from "
                           "Lupton 2005 (SDSS)"},
    "tycho2-local": {"vizier": None, "columns": [],
                     "reference": "Tycho-2 (Hog et al. 2000) in the astrometry.net index "
                                  "files; B, V from BT, VT by ESA 1997 where BT is known"},
}


class CatalogueUnavailableError(RuntimeError):
    """A catalogue query cannot be answered: offline (or the service unreachable) and no
    cached answer. The message says what was asked, where the cache was looked for and
    why the network was not used."""


def _offline_env() -> bool:
    return os.environ.get("ASTRODART_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def catalogue_cache_dir() -> Path:
    """The default folder of cached catalogue answers.

    Returns
    -------
    pathlib.Path
        ``$ASTRODART_CACHE/catalogues`` if ``ASTRODART_CACHE`` is set, else
        ``~/.cache/astrodart/catalogues`` (not created here).
    """
    root = os.environ.get("ASTRODART_CACHE") or Path.home() / ".cache" / "astrodart"
    return Path(root) / "catalogues"


def _check_query(coord, radius, catalogue: str) -> tuple[SkyCoord, float]:
    if catalogue not in CATALOGUES:
        raise ValueError(f"catalogue={catalogue!r}: allowed {sorted(CATALOGUES)}")
    if not isinstance(coord, SkyCoord):
        try:
            coord = SkyCoord(*coord, unit="deg")
        except Exception as exc:
            raise ValueError(f"coord={coord!r}: a SkyCoord or (ra, dec) in degrees") from exc
    if not coord.isscalar:
        raise ValueError(f"coord: one position expected, got shape {coord.shape}")
    r = radius.to_value(u.deg) if isinstance(radius, u.Quantity) else float(radius)
    if not (np.isfinite(r) and 0 < r <= 5):
        raise ValueError(f"radius={radius!r}: a cone radius between 0 and 5 deg (a Quantity "
                         "or degrees)")
    return coord.icrs, r


def catalogue_cache_path(coord, radius, catalogue: str = "gaia-dr3", cache_dir=None) -> Path:
    """The cache file of one query (keyed by catalogue, centre and radius).

    Parameters
    ----------
    coord : astropy.coordinates.SkyCoord or tuple of float
        Cone centre (ICRS; or ``(ra, dec)`` in degrees).
    radius : astropy.units.Quantity or float
        Cone radius (angle, or degrees).
    catalogue : {'gaia-dr3', 'apass', 'tycho2-local'}
        The catalogue.
    cache_dir : str or pathlib.Path, optional
        Folder of the cache (default :func:`catalogue_cache_dir`).

    Returns
    -------
    pathlib.Path
        ``<cache_dir>/<catalogue>_<ra>_<dec>_r<arcmin>.ecsv`` (centre to 1e-5 deg,
        radius to 0.001').

    Raises
    ------
    ValueError
        Unknown catalogue, or a bad centre or radius.
    """
    c, r = _check_query(coord, radius, catalogue)
    folder = Path(cache_dir) if cache_dir is not None else catalogue_cache_dir()
    return folder / f"{catalogue}_{c.ra.deg:09.5f}_{c.dec.deg:+09.5f}_r{r * 60:.3f}.ecsv"


def _fetch_vizier(table: str, columns: list[str], coord: SkyCoord, radius_deg: float,
                  timeout: float, row_limit: int) -> Table:
    """The network call: one cone of one VizieR table through astroquery (an empty table
    when VizieR has no star there)."""
    from astroquery.vizier import Vizier

    viz = Vizier(columns=columns, row_limit=row_limit, timeout=timeout)
    found = viz.query_region(coord, radius=radius_deg * u.deg, catalog=table)
    if len(found) == 0:
        return Table(names=columns, dtype=[float] * len(columns))
    return found[0]


def _column(raw: Table, name: str) -> np.ndarray:
    col = raw[name]
    if isinstance(col, MaskedColumn) or hasattr(col, "mask"):
        return np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col, float)
    return np.asarray(col, float)


def _mag_table(ids, ra, dec, mags: dict) -> Table:
    t = Table({"id": np.asarray(ids, str), "ra": np.asarray(ra, float) * u.deg,
               "dec": np.asarray(dec, float) * u.deg})
    for name, values in mags.items():
        t[name] = np.round(np.asarray(values, float), 4) * u.mag
    return t


def _standard_gaia(raw: Table) -> Table:
    g, bp, rp = (_column(raw, c) for c in ("Gmag", "BPmag", "RPmag"))
    x = bp - rp
    ok = (x > -0.5) & (x < 4.0)
    g_v = -0.02704 + 0.01424 * x - 0.2156 * x**2 + 0.01426 * x**3
    g_r = -0.02275 + 0.3961 * x - 0.1243 * x**2 - 0.01396 * x**3 + 0.003775 * x**4
    eg = _column(raw, "e_Gmag")
    return _mag_table(
        np.asarray(raw["Source"]).astype(str), _column(raw, "RA_ICRS"), _column(raw, "DE_ICRS"),
        {"G": g, "G_err": eg, "BP": bp, "BP_err": _column(raw, "e_BPmag"), "RP": rp,
         "RP_err": _column(raw, "e_RPmag"),
         "V": np.where(ok, g - g_v, np.nan), "V_err": np.where(ok, np.hypot(eg, 0.03), np.nan),
         "R": np.where(ok, g - g_r, np.nan), "R_err": np.where(ok, np.hypot(eg, 0.03), np.nan)})


def _standard_apass(raw: Table) -> Table:
    r, i = _column(raw, "r'mag"), _column(raw, "i'mag")
    er, ei = _column(raw, "e_r'mag"), _column(raw, "e_i'mag")
    big_r = r - 0.2936 * (r - i) - 0.1439
    big_r_err = np.sqrt((0.7064 * er) ** 2 + (0.2936 * ei) ** 2 + 0.0072**2)
    return _mag_table(
        np.asarray(raw["recno"]).astype(str), _column(raw, "RAJ2000"), _column(raw, "DEJ2000"),
        {"B": _column(raw, "Bmag"), "B_err": _column(raw, "e_Bmag"),
         "V": _column(raw, "Vmag"), "V_err": _column(raw, "e_Vmag"),
         "R": big_r, "R_err": big_r_err,
         "g": _column(raw, "g'mag"), "g_err": _column(raw, "e_g'mag"),
         "r": r, "r_err": er, "i": i, "i_err": ei})


def _tycho2_local(coord: SkyCoord, radius_deg: float, index_dir) -> Table:
    from astrodart.datasets.catalogue import build_field_catalogue

    field = build_field_catalogue(coord.ra.deg, coord.dec.deg, radius_deg, index_dir)
    real = np.asarray(field["colour_source"]) == "tycho2 BT"
    nan = np.full(len(field), np.nan)
    ids = [t if t != "-" else j for t, j in zip(field["tyc"], field["id"])]
    return _mag_table(ids, field["ra"], field["dec"],
                      {"VT": field["vt"], "BT": np.where(real, field["bt"], nan),
                       "B": np.where(real, field["B"], nan), "B_err": nan,
                       "V": np.where(real, field["V"], nan), "V_err": nan})


def _standardise(raw: Table, catalogue: str) -> Table:
    try:
        return {"gaia-dr3": _standard_gaia, "apass": _standard_apass}[catalogue](raw)
    except KeyError as exc:
        raise ValueError(f"{catalogue} answer lacks column {exc}: got {raw.colnames}") from None


def _read_cache(path: Path, meta: dict) -> Table | None:
    if not path.is_file():
        return None
    table = Table.read(path, format="ascii.ecsv")
    q = table.meta.get("query", {})
    same = (q.get("catalogue") == meta["catalogue"]
            and np.allclose([q.get("ra", np.nan), q.get("dec", np.nan),
                             q.get("radius_deg", np.nan)],
                            [meta["ra"], meta["dec"], meta["radius_deg"]], atol=1e-6))
    if not same:
        log.warning("%s: cached query %s differs from %s; not used", path, q, meta)
        return None
    return table


def _write_cache(table: Table, path: Path) -> None:
    from astrodart.frames.io import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def query_catalogue(coord, radius, catalogue: str = "gaia-dr3", *, cache_dir=None,
                    offline: bool | None = None, refresh: bool = False, timeout: float = 60.0,
                    row_limit: int = 20000, index_dir=None) -> Table:
    """Stars of a cone with positions and magnitudes, from a cache, VizieR or local files.

    Parameters
    ----------
    coord : astropy.coordinates.SkyCoord or tuple of float
        Cone centre (ICRS; or ``(ra, dec)`` in degrees).
    radius : astropy.units.Quantity or float
        Cone radius (angle, or degrees; at most 5 deg).
    catalogue : {'gaia-dr3', 'apass', 'tycho2-local'}
        The source (see the module notes). ``'tycho2-local'`` reads the astrometry.net
        index files and never uses the network or the cache.
    cache_dir : str or pathlib.Path, optional
        Folder of cached answers (default :func:`catalogue_cache_dir`).
    offline : bool, optional
        Forbid the network (default: ``ASTRODART_OFFLINE`` is set).
    refresh : bool
        Ask the service again even when an answer is cached (ignored offline).
    timeout : float
        Seconds allowed for the VizieR request.
    row_limit : int
        Most stars asked for (``-1``: no limit).
    index_dir : str or pathlib.Path, optional
        Folder of ``index-tycho2-*.fits`` for ``'tycho2-local'``.

    Returns
    -------
    astropy.table.Table
        One row per star: ``id`` (str), ``ra``, ``dec`` (deg, ICRS; Gaia at its epoch
        2016.0, APASS and Tycho-2 at J2000), and magnitude columns (mag) with ``<band>_err``
        where the catalogue gives errors: Gaia ``G BP RP V R``; APASS ``B V R g r i``;
        Tycho-2 ``VT BT B V``. NaN where unknown. ``meta['query']`` holds the catalogue,
        centre, radius (deg), source, reference and retrieval time (UTC);
        ``meta['from_cache']`` says whether the answer came from the cache.

    Raises
    ------
    ValueError
        Unknown catalogue, bad centre or radius, or an answer without the expected columns.
    CatalogueUnavailableError
        Offline (or the service unreachable) and no cached answer for this query.
    FileNotFoundError
        ``'tycho2-local'`` without index files.
    """
    c, r = _check_query(coord, radius, catalogue)
    spec = CATALOGUES[catalogue]
    meta = {"catalogue": catalogue, "ra": round(float(c.ra.deg), 7),
            "dec": round(float(c.dec.deg), 7), "radius_deg": r,
            "reference": spec["reference"]}
    if catalogue == "tycho2-local":
        table = _tycho2_local(c, r, index_dir)
        table.meta.update(query={**meta, "source": "astrometry.net index files"},
                          from_cache=False)
        return table
    offline = _offline_env() if offline is None else bool(offline)
    path = catalogue_cache_path(c, r, catalogue, cache_dir)
    cached = None if refresh and not offline else _read_cache(path, meta)
    if cached is not None:
        cached.meta["from_cache"] = True
        return cached
    if offline:
        raise CatalogueUnavailableError(
            f"{catalogue} around ({meta['ra']:.5f}, {meta['dec']:+.5f}) radius {r:.4f} deg: "
            f"offline (ASTRODART_OFFLINE or offline=True) and no cached answer at {path}; "
            "run the query once with network, or use catalogue='tycho2-local'")
    table = _fetch_and_standardise(catalogue, spec, c, r, timeout, row_limit, path)
    table.meta.update(query={**meta, "source": f"VizieR {spec['vizier']} via astroquery",
                             "retrieved_utc": datetime.datetime.now(datetime.timezone.utc)
                             .strftime("%Y-%m-%dT%H:%M:%S")})
    _write_cache(table, path)
    table.meta["from_cache"] = False
    log.info("%s: %d stars cached in %s", catalogue, len(table), path)
    return table


def _fetch_and_standardise(catalogue, spec, c, r, timeout, row_limit, path) -> Table:
    """Ask VizieR; a network failure becomes :class:`CatalogueUnavailableError`."""
    try:
        raw = _fetch_vizier(spec["vizier"], spec["columns"], c, r, timeout, row_limit)
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise CatalogueUnavailableError(
            f"{catalogue}: VizieR {spec['vizier']} unreachable ({type(exc).__name__}: {exc}) "
            f"and no cached answer at {path}") from exc
    except Exception as exc:  # requests' errors derive from OSError; astroquery's may not
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "astroquery"):
            raise CatalogueUnavailableError(
                f"{catalogue}: VizieR {spec['vizier']} failed ({type(exc).__name__}: {exc}) "
                f"and no cached answer at {path}") from exc
        raise
    return _standardise(raw, catalogue)
