"""Layer 2: plate solving with the ``solve-field`` program of an astrometry.net install.

The star list goes to ``solve-field`` as an xylist (``--width``/``--height`` are the
image's x and y sizes: NAXIS1, NAXIS2); the solution, the log-odds and the star
correspondences are read back from its output files.

References
----------
Lang, D., Hogg, D. W., Mierle, K., Blanton, M. & Roweis, S. 2010, AJ 139, 1782,
"Astrometry.net: blind astrometric calibration of arbitrary astronomical images".
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import ArrayLike

from astrodart.astrometry.index import (
    IndexFile,
    _coverage_reason,
    _default_radius,
    discover_index_files,
    field_size_arcmin,
    usable_index_files,
)
from astrodart.astrometry.result import SolveResult, _check_shape, _xy_array
from astrodart.astrometry.verify import verify_wcs
from astrodart.exceptions import quiet

__all__ = ["solve_with_solve_field"]

log = logging.getLogger("astrodart.astrometry")

def solve_with_solve_field(xy: ArrayLike, shape: tuple[int, int], *, flux: ArrayLike | None = None,
                           index_files: Sequence[IndexFile] | None = None,
                           pixel_scale: float | None = None, scale_tolerance: float = 0.1,
                           position: SkyCoord | None = None, radius: float | None = None,
                           time_limit: float = 20.0, sip_order: int = 2, max_stars: int = 100,
                           match_radius: float = 2.0, executable: str = "solve-field",
                           workdir: str | os.PathLike | None = None) -> SolveResult:
    """Plate-solve a star list with astrometry.net's ``solve-field`` program.

    Parameters
    ----------
    xy : array_like, shape (n, 2)
        0-based pixel positions, brightest first.
    shape : tuple of int
        Image shape ``(ny, nx)``; passed as ``--width nx --height ny``.
    flux : array_like, shape (n,), optional
        Brightness used to sort (default: the given order).
    index_files : sequence of IndexFile, optional
        When given (or found by :func:`discover_index_files`), a temporary engine
        configuration lists their directories; otherwise solve-field's own
        configuration is used.
    pixel_scale, scale_tolerance, position, radius, time_limit, sip_order, max_stars, \
match_radius
        As for :func:`solve_in_process`; ``time_limit`` is both ``--cpulimit`` and a
        hard wall-clock limit on the program.
    executable : str
        Program name or path.
    workdir : path, optional
        Where the temporary files go (default: a new temporary directory, removed after).

    Returns
    -------
    SolveResult
        ``n_matched`` and ``rms_arcsec`` come from solve-field's correspondence file.
    """
    t0 = time.monotonic()
    ny, nx = _check_shape(shape)
    xy = _xy_array(xy)[:max_stars]
    exe = shutil.which(executable)
    backend = "solve-field"
    if exe is None:
        return SolveResult(False, backend, f"'{executable}' is not installed", elapsed=0.0)
    solver = f"astrometry.net solve-field {_solve_field_version(exe)}".strip()

    def failed(reason):
        return SolveResult(False, backend, reason, solver=solver, elapsed=time.monotonic() - t0)

    if len(xy) < 4:
        return failed(f"only {len(xy)} stars detected (at least 4 needed)")
    if index_files is None:
        index_files = discover_index_files()
    if pixel_scale and index_files:
        w, h = field_size_arcmin((ny, nx), pixel_scale)
        grow = 1 + scale_tolerance
        if not usable_index_files(index_files, w * grow, h * grow):
            return failed(_coverage_reason((ny, nx), pixel_scale, index_files))
    own_tmp = workdir is None
    tmp = Path(tempfile.mkdtemp(prefix="astrodart-solve-")) if own_tmp else Path(workdir)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        fl = (np.asarray(flux, float)[:len(xy)] if flux is not None
              else np.arange(len(xy), 0, -1, dtype=float))
        Table({"X": xy[:, 0] + 1.0, "Y": xy[:, 1] + 1.0, "FLUX": fl}).write(tmp / "stars.xyls",
                                                                          format="fits",
                                                                          overwrite=True)
        cmd = _command(exe, tmp, (ny, nx), time_limit, sip_order, pixel_scale, scale_tolerance,
                       position, radius, index_files)
        log.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  timeout=time_limit + 15)
        except subprocess.TimeoutExpired:
            return failed(f"solve-field did not finish within {time_limit:g} s")
        out = proc.stdout + proc.stderr
        if not (tmp / "solved").exists() or not (tmp / "solution.wcs").exists():
            tail = " ".join(out.strip().splitlines()[-3:])[-300:]
            return failed(f"solve-field found no solution (exit {proc.returncode}): {tail}")
        wcs, index, logodds, (n, rms, center, scale) = _read_solution(tmp, out, xy, (ny, nx),
                                                                      match_radius)
        return SolveResult(True, backend, "", wcs, solver, index, n, rms, logodds, scale, center,
                           time.monotonic() - t0)
    finally:
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _command(exe, tmp: Path, shape, time_limit, sip_order, pixel_scale, scale_tolerance,
             position, radius, index_files) -> list[str]:
    """The solve-field command line for the xylist ``tmp/stars.xyls`` (writes the engine
    configuration listing ``index_files`` into ``tmp`` when there are any)."""
    ny, nx = shape
    cpulimit = str(max(1, math.ceil(time_limit)))
    cmd = [exe, str(tmp / "stars.xyls"), "--width", str(nx), "--height", str(ny),
           "--x-column", "X", "--y-column", "Y", "--sort-column", "FLUX",
           "--no-plots", "--overwrite", "--dir", str(tmp), "--temp-dir", str(tmp),
           "--cpulimit", cpulimit, "--crpix-center",
           "--new-fits", "none", "--match", "none", "--rdls", "none", "--index-xyls", "none",
           "--corr", str(tmp / "corr.fits"), "--wcs", str(tmp / "solution.wcs"),
           "--solved", str(tmp / "solved")]
    cmd += ["--tweak-order", str(sip_order)] if sip_order else ["--no-tweak"]
    if pixel_scale:
        lo, hi = pixel_scale * (1 - scale_tolerance), pixel_scale * (1 + scale_tolerance)
        cmd += ["--scale-units", "arcsecperpix", "--scale-low", f"{lo:.6g}",
                "--scale-high", f"{hi:.6g}"]
    if position is not None:
        if radius is None:
            radius = _default_radius(shape, pixel_scale)
        cmd += ["--ra", f"{position.icrs.ra.deg:.6f}", "--dec", f"{position.icrs.dec.deg:.6f}",
                "--radius", f"{radius:.4g}"]
    if index_files:
        cfg = tmp / "engine.cfg"
        dirs = sorted({str(i.path.parent) for i in index_files})
        cfg.write_text(f"cpulimit {cpulimit}\n" + "".join(f"add_path {d}\n" for d in dirs)
                       + "autoindex\n")
        cmd += ["--config", str(cfg)]
    return cmd


def _read_solution(tmp: Path, out: str, xy, shape, match_radius):
    """``(wcs, index, logodds, verify_wcs(...))`` from solve-field's files and log."""
    with quiet(FITSFixedWarning):
        wcs = WCS(fits.getheader(tmp / "solution.wcs"))
    m = re.search(r"solved with index (\S+?)\.?\s*$", out, re.MULTILINE)
    index = m.group(1) if m else None
    lo_m = re.findall(r"log-odds ratio ([-\d.]+)", out)
    logodds = float(lo_m[-1]) if lo_m else None
    if (tmp / "corr.fits").exists():
        corr = fits.getdata(tmp / "corr.fits", 1)
        cat = SkyCoord(corr["index_ra"] * u.deg, corr["index_dec"] * u.deg)
        return wcs, index, logodds, verify_wcs(wcs, xy, cat, shape, match_radius)
    return wcs, index, logodds, verify_wcs(wcs, xy, SkyCoord([], [], unit="deg"), shape)


_SF_VERSION: dict[str, str] = {}


def _solve_field_version(exe: str) -> str:
    if exe not in _SF_VERSION:
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False,
                                 timeout=10)
            _SF_VERSION[exe] = (out.stdout or out.stderr).strip().splitlines()[0][:30]
        except (OSError, subprocess.SubprocessError, IndexError):
            _SF_VERSION[exe] = ""
    return _SF_VERSION[exe]

