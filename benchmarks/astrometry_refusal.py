"""Benchmark: what an unsolvable field costs the astrometry step, by time limit and hints.

Stand-alone (never run as a test)::

    python benchmarks/astrometry_refusal.py --refuse 'OUT/reduced_data/*/*/Visible/calibrated_*.fits'
                                            [--solve '../shared/data/hatp32_mobs_171220_first10/*']

``--refuse``: calibrated frames of a field the offline index files cannot solve (the
HAT-P-27b night: a 24' field, the Debian Tycho-2 quads start at 30'); the first frame is
tried. ``--solve``: frames of a field that solves (HAT-P-32), to check that the same
limits still solve it. For each setting: the detection time, the solve time, solved or
not and the reason. Only reads the frames.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from astropy.coordinates import SkyCoord  # noqa: E402

from astrodart.astrometry import solve as A  # noqa: E402
from astrodart.frames.header import FrameHeader  # noqa: E402
from astrodart.frames.io import read_frame  # noqa: E402
from astrodart.sources.stars import find_stars  # noqa: E402


def stars_of(path: str, fwhm: float = 3.0):
    """Star list (brightest 100) of a frame, the detection time, shape and header."""
    ccd = read_frame(path)
    t0 = time.perf_counter()
    st = find_stars(ccd.data, fwhm, 5.0, mask=ccd.mask, max_stars=100)
    dt = time.perf_counter() - t0
    return np.column_stack([st["x"], st["y"]]), dt, ccd.shape, FrameHeader(ccd.meta, path)


def trial(xy, shape, label, **kw) -> None:
    """One solve; prints its time and outcome."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = A.solve_in_process(xy, shape, **kw)
        dt = time.perf_counter() - t0
    what = "SOLVED" if res.solved else "refused"
    print(f"  {label:<52} {dt:6.2f} s  {what}: {str(res.reason)[:110]}", flush=True)


def main(argv=None) -> None:
    """Run the trials."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refuse", required=True, help="glob of frames of an unsolvable field")
    ap.add_argument("--solve", default=None, help="glob of frames of a solvable field")
    ap.add_argument("--scale", type=float, default=1.39,
                    help="true pixel scale of the --refuse field, arcsec/px")
    ap.add_argument("--coord", default="14h51m04.2s +05d56m50s", help="its target position")
    args = ap.parse_args(argv)
    index = A.discover_index_files()
    print(f"{len(index)} index files: {', '.join(str(i.index_id) for i in index)}")
    path = sorted(glob.glob(args.refuse))[0]
    xy, dt, shape, _ = stars_of(path)
    print(f"unsolvable field: {Path(path).name}, {len(xy)} stars, detection {dt:.2f} s")
    pos = SkyCoord(args.coord)
    for limit in (20.0, 5.0, 2.0, 1.0, 0.5):
        trial(xy, shape, f"blind, time_limit {limit:g} s", index_files=index, time_limit=limit)
    trial(xy, shape, f"pixel_scale {args.scale} (+-10 %), limit 20 s", index_files=index,
          pixel_scale=args.scale, time_limit=20.0)
    trial(xy, shape, f"position only ({args.coord}), limit 2 s", index_files=index,
          position=pos, time_limit=2.0)
    if args.solve:
        path = sorted(glob.glob(args.solve))[0]
        xy, dt, shape, fh = stars_of(path, 2.0)
        print(f"solvable field: {Path(path).name}, {len(xy)} stars, detection {dt:.2f} s, header "
              f"scale {fh.pixel_scale} arcsec/px, pointing {fh.coord}")
        for limit in (20.0, 5.0, 2.0, 1.0):
            trial(xy, shape, f"blind, time_limit {limit:g} s", index_files=index, time_limit=limit)
        trial(xy, shape, "header scale + pointing, limit 1 s", index_files=index,
              pixel_scale=fh.pixel_scale, position=fh.coord, time_limit=1.0)


if __name__ == "__main__":
    main()
