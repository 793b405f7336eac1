"""The star catalogue shipped with astrodart: real Tycho-2 stars around M67.

:func:`load_catalogue` reads ``astrodart/data/m67_tycho2.ecsv`` (see
``astrodart/data/README.md``); :func:`build_field_catalogue` rebuilds it, or a catalogue of
another field, from the Tycho-2 stars of the astrometry.net index files
(:func:`tycho2_index_stars`). The simulated night (:mod:`astrodart.datasets.simulated_night`)
places these stars.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.table import Table


__all__ = [
    "CATALOGUE_PATH",
    "M67_CENTRE",
    "tycho2_index_stars",
    "build_field_catalogue",
    "load_catalogue",
]

log = logging.getLogger("astrodart")


#: The shipped catalogue: real Tycho-2 stars around M67 (see astrodart/data/README.md).
CATALOGUE_PATH = Path(__file__).resolve().parents[1] / "data" / "m67_tycho2.ecsv"

#: Centre of M67 (ICRS, degrees) used for the shipped catalogue and the simulated pointing.
M67_CENTRE = (132.825, 11.8)

#: Tycho-2 BT/VT of M67 stars listed in the real M67 sample's README (shared/data); matched
#: to index stars by VT (identical to 0.001 mag) within 10' of the cluster centre.
_M67_TYCHO_BT = {  # VT: (TYC, BT)
    9.969: ("TYC 814-2331", 11.581), 10.523: ("TYC 814-1493", 12.075),
    10.520: ("TYC 814-1531", 11.915), 11.843: ("TYC 814-1119", 12.626),
    11.277: ("TYC 814-1931", 11.469), 10.072: ("TYC 814-1795", 10.018),
}

_INDEX_DIRS = ("/usr/share/astrometry", "/usr/local/share/astrometry", "/usr/share/astrometry-data")


def _index_files(index_dir=None) -> list[Path]:
    dirs = [Path(index_dir)] if index_dir else (
        ([Path(os.environ["ASTRODART_INDEX_DIR"])] if os.environ.get("ASTRODART_INDEX_DIR") else [])
        + [Path(d) for d in _INDEX_DIRS])
    for d in dirs:
        files = sorted(d.glob("index-tycho2-*.fits")) if d.is_dir() else []
        if files:
            return files
    raise FileNotFoundError("no astrometry.net Tycho-2 index files (index-tycho2-*.fits) in "
                            + ", ".join(str(d) for d in dirs)
                            + "; install astrometry-data-tycho2-* or set ASTRODART_INDEX_DIR")


def _read_index_stars(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (n, 3) and VT magnitudes (n,) of the stars of one index file.

    The star kd-tree stores each star's unit vector as three unsigned 32-bit integers
    mapped linearly onto [lower, upper] by the scale in ``kdtree_range_stars`` (as the
    comments of that HDU explain); ``MAG_VT`` is a tag-along column in the same order.
    """
    with fits.open(path, memmap=True) as hdul:
        by_col = {h.columns.names[0]: h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)}
        for need in ("kdtree_data_stars", "kdtree_range_stars", "MAG_VT"):
            if need not in by_col:
                raise ValueError(f"{path}: not a Tycho-2 index file with a {need} table")
        order = "<" if hdul[0].header.get("ENDIAN", "04:03:02:01") == "04:03:02:01" else ">"
        kind = by_col["kdtree_header_stars"].header.get("KDT_DATA", "u32").strip()
        rng = np.frombuffer(np.asarray(by_col["kdtree_range_stars"].data).tobytes(), order + "f8")
        raw = np.asarray(by_col["kdtree_data_stars"].data).tobytes()
        if kind == "u32":
            xyz = rng[:3] + np.frombuffer(raw, order + "u4").reshape(-1, 3) / rng[6]
        elif kind == "double":
            xyz = np.frombuffer(raw, order + "f8").reshape(-1, 3)
        else:
            raise ValueError(f"{path}: star tree data type {kind!r} not supported")
        mag = np.asarray(by_col["MAG_VT"].data["MAG_VT"], dtype=float)
    return xyz, mag


def tycho2_index_stars(ra: float, dec: float, radius: float, index_dir=None) -> Table:
    """Real Tycho-2 stars near a position, read from astrometry.net index files.

    The Debian packages ``astrometry-data-tycho2-*`` install index files built from the
    Tycho-2 catalogue (Høg et al. 2000, A&A 355, L27); each keeps a spatially uniform
    subset of the stars with their positions and ``MAG_VT``. The stars of all files are
    merged (duplicates within 0.5" dropped).

    Parameters
    ----------
    ra, dec : float
        Centre (ICRS, degrees).
    radius : float
        Search radius (degrees).
    index_dir : str or pathlib.Path, optional
        Folder of ``index-tycho2-*.fits``; default ``ASTRODART_INDEX_DIR``, then
        ``/usr/share/astrometry``.

    Returns
    -------
    astropy.table.Table
        Columns ``ra``, ``dec`` (deg, 7 decimals) and ``vt`` (mag, 3 decimals), sorted by
        ``vt`` then ``ra``.

    Raises
    ------
    FileNotFoundError
        No index files found (the message names the folders looked in).
    """
    r0, d0 = math.radians(ra), math.radians(dec)
    centre = np.array([math.cos(d0) * math.cos(r0), math.cos(d0) * math.sin(r0), math.sin(d0)])
    found: list[tuple[float, float, float]] = []
    for path in _index_files(index_dir):
        xyz, mag = _read_index_stars(path)
        sel = xyz @ centre > math.cos(math.radians(radius))
        v = xyz[sel] / np.linalg.norm(xyz[sel], axis=1)[:, None]
        ras = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
        decs = np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1)))
        found += zip(np.round(ras, 7), np.round(decs, 7), np.round(mag[sel], 3))
    kept: list[tuple[float, float, float]] = []
    for s in sorted(set(found), key=lambda s: (s[2], s[0])):
        dup = any(abs(s[1] - k[1]) * 3600 < 0.5 and abs(s[0] - k[0]) * 3600 * math.cos(d0) < 0.5
                  for k in kept)
        if not dup:
            kept.append(s)
    t = Table(rows=kept, names=("ra", "dec", "vt"), dtype=(float, float, float))
    t["ra"].unit = t["dec"].unit = u.deg
    t["vt"].unit = u.mag
    return t


def _jname(ra: float, dec: float) -> str:
    ra_s = Angle(ra, u.deg).to_string(unit=u.hourangle, sep="", precision=2, pad=True)
    dec_s = Angle(dec, u.deg).to_string(unit=u.deg, sep="", precision=1, pad=True, alwayssign=True)
    return f"J{ra_s}{dec_s}"


def build_field_catalogue(ra: float = M67_CENTRE[0], dec: float = M67_CENTRE[1],
                          radius: float = 0.75, index_dir=None, colour_seed: int = 67) -> Table:
    """Build the simulation catalogue of a field from the Tycho-2 index files.

    Positions and VT are real (:func:`tycho2_index_stars`). Johnson B and V and Cousins R
    are derived from them: where BT is known (:data:`_M67_TYCHO_BT`, the M67 stars of the
    real M67 sample), ``B-V = 0.850 (BT-VT)`` and ``V = VT - 0.090 (BT-VT)`` (ESA 1997,
    The Hipparcos and Tycho Catalogues, vol. 1, sect. 1.3); elsewhere ``B-V`` is *assumed*,
    drawn from N(0.75, 0.25) clipped to [0, 1.6] with a fixed seed, and the same relations
    are inverted for V. ``V-R = 0.56 (B-V)`` for all (an approximate dwarf-star relation
    from Bessell 1990, PASP 102, 1181, tables; good to ~0.05 mag for 0 < B-V < 1.2).
    Column ``colour_source`` says which stars carry real colours.

    Parameters
    ----------
    ra, dec : float
        Centre (ICRS, degrees).
    radius : float
        Radius (degrees).
    index_dir : str or pathlib.Path, optional
        See :func:`tycho2_index_stars`.
    colour_seed : int
        Seed of the assumed colours.

    Returns
    -------
    astropy.table.Table
        Columns ``id`` (J-name from the position), ``tyc`` (TYC number where known, else
        ``'-'``),
        ``ra``, ``dec`` (deg), ``vt``, ``bt`` (NaN where unknown), ``b_v``, ``v_r``,
        ``B``, ``V``, ``R`` (mag) and ``colour_source`` (``'tycho2 BT'`` or ``'assumed'``).
    """
    t = tycho2_index_stars(ra, dec, radius, index_dir)
    rng = np.random.default_rng(colour_seed)
    assumed = np.clip(rng.normal(0.75, 0.25, len(t)), 0.0, 1.6)
    rows = []
    c0 = math.cos(math.radians(M67_CENTRE[1]))
    for s, bv_assumed in zip(t, assumed):
        # the README's BT values belong to M67's stars: matched near the cluster, wherever
        # the query is centred
        near = math.hypot((s["ra"] - M67_CENTRE[0]) * c0, s["dec"] - M67_CENTRE[1]) < 10 / 60
        known = _M67_TYCHO_BT.get(round(float(s["vt"]), 3)) if near else None
        if known:
            tyc, bt = known
            bv, source = 0.850 * (bt - s["vt"]), "tycho2 BT"
        else:
            tyc, bt, bv, source = "-", float("nan"), float(bv_assumed), "assumed"
        v = s["vt"] - 0.090 * bv / 0.850
        vr = 0.56 * bv
        mags = [round(m, 3) for m in (bv, vr, v + bv, v, v - vr)]
        rows.append((_jname(s["ra"], s["dec"]), tyc, s["ra"], s["dec"], s["vt"], bt, *mags, source))
    names = ("id", "tyc", "ra", "dec", "vt", "bt", "b_v", "v_r", "B", "V", "R", "colour_source")
    out = Table(rows=rows, names=names, dtype=(str, str) + (float,) * 9 + (str,))
    for c in ("ra", "dec"):
        out[c].unit = u.deg
    for c in ("vt", "bt", "b_v", "v_r", "B", "V", "R"):
        out[c].unit = u.mag
    out.meta.update({"centre_ra": ra, "centre_dec": dec, "radius_deg": radius,
                     "colour_seed": colour_seed,
                     "source": "Tycho-2 (Hog et al. 2000) via astrometry.net index files "
                               "(Debian astrometry-data-tycho2-*); see astrodart/data/README.md"})
    return out


def load_catalogue(path=None) -> Table:
    """The star catalogue shipped with astrodart (real Tycho-2 stars around M67).

    Parameters
    ----------
    path : str or pathlib.Path, optional
        Another catalogue in the same format (ECSV written from
        :func:`build_field_catalogue`).

    Returns
    -------
    astropy.table.Table
        See :func:`build_field_catalogue` for the columns.

    Raises
    ------
    FileNotFoundError
        The file is missing (a broken installation: check the package data).
    """
    path = Path(path) if path is not None else CATALOGUE_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path}: star catalogue missing (astrodart/data is package data; "
                                "reinstall astrodart)")
    return Table.read(path, format="ascii.ecsv")
