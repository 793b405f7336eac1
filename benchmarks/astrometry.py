"""Benchmark: plate solving the 10 HAT-P-32 frames offline, in process vs solve-field.

Stand-alone (never run as a test)::

    python benchmarks/astrometry.py [--data ../shared/data/hatp32_mobs_171220_first10]

Works on copies in a temporary folder. For each backend it reports seconds per frame
for the solve alone (same star lists for both) and for the whole ``astrometry`` step
(read, detect, solve, write), the pixel scale, and the centre's distance to the header
pointing and to an independent solve of the first frame (solve-field with Tycho-2:
RA 31.24850, Dec +46.74113).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

REPO = Path(__file__).resolve().parents[1]
# this script is itself called astrometry.py: keep its folder off the import path so that
# ``import astrometry`` finds the solver package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from astrodart.astrometry import solve as A
from astrodart.sources.stars import find_stars
from astrodart.frames.io import find_fits, read_frame
from astrodart.frames.header import FrameHeader
from astrodart.second_stage import astrometry

REFERENCE = SkyCoord(31.24850 * u.deg, 46.74113 * u.deg)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data",
                   default=str(REPO.parent / "shared" / "data" / "hatp32_mobs_171220_first10"))
    p.add_argument("--time-limit", type=float, default=30.0)
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    warnings.simplefilter("ignore")

    src = find_fits(args.data)
    if not src:
        print(f"no FITS files in {args.data}")
        return 1
    frames = []
    for f in src:
        ccd = read_frame(f)
        t = find_stars(ccd.data, 2.0, max_stars=100)
        frames.append((Path(f).name, np.column_stack([t["x"], t["y"]]), np.asarray(t["flux"]),
                       ccd.shape, FrameHeader(ccd.meta, f)))
    index_files = A.discover_index_files()
    print(f"{len(frames)} frames from {args.data}")
    print(f"index files: {len(index_files)} covering {A.index_coverage(index_files)}")

    backends = (("inprocess", A.solve_in_process), ("solve-field", A.solve_with_solve_field))
    for name, solve in backends:
        times, scales, off_ptg = [], [], []
        first = None
        for fname, xy, flux, shape, fh in frames:
            kw = dict(pixel_scale=fh.pixel_scale, position=fh.coord, time_limit=args.time_limit,
                      index_files=index_files)
            if name == "solve-field":
                kw["flux"] = flux
            t0 = time.perf_counter()
            r = solve(xy, shape, **kw)
            times.append(time.perf_counter() - t0)
            if not r.solved:
                print(f"  {name} {fname}: NOT solved: {r.reason}")
                continue
            scales.append(r.pixel_scale)
            off_ptg.append(r.center.separation(fh.coord).arcmin)
            if first is None:
                first = r.center.separation(REFERENCE).arcsec
        print(f"{name:12s} solve only: {statistics.mean(times):.3f} s/frame "
              f"(min {min(times):.3f}, max {max(times):.3f}); solved {len(scales)}/{len(frames)}; "
              f"scale {statistics.mean(scales):.4f}\"/px; centre-pointing {min(off_ptg):.2f}'"
              f"–{max(off_ptg):.2f}'; first frame vs independent solve {first:.2f}\"")

    for backend in ("inprocess", "solve-field"):
        with tempfile.TemporaryDirectory() as tmp:
            files = [shutil.copy(f, tmp) for f in src]
            t0 = time.perf_counter()
            failed = astrometry(tmp, files, None, 2.0, backend=backend,
                                time_limit=args.time_limit).run()
            dt = time.perf_counter() - t0
        print(f"astrometry step, backend={backend}: {dt / len(files):.3f} s/frame "
              f"(read + detect + solve + write), {len(failed)} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
