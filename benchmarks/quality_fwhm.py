"""Benchmark: the quality table's sep measurement against the Moffat fit, on real frames.

For every frame: :func:`astrodart.sources.sep_measure.sep_measure` (background, sky,
detections, FWHM and ellipticity from adaptive moments; what ``quality_table`` uses) and
:func:`astrodart.sources.psf.measure_fwhm` (the pixel-integrated Moffat fit, the reference
width, called as the quality table called it before). Prints the per-frame times (the
frame already in memory), the median ratio of the FWHMs and its scatter, the ellipticity
differences, and which frames the default quality rules flag with either width.

    python benchmarks/quality_fwhm.py --frames 'OUT/reduced_data/*/*/Visible/calibrated_*.fits'
    python benchmarks/quality_fwhm.py --frames '../shared/data/hatp32_mobs_171220_first10/*.FITS'

Only reads the frames. Never collected by pytest.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from astrodart.frames.header import FrameHeader  # noqa: E402
from astrodart.frames.io import read_frame  # noqa: E402
from astrodart.sources.background import estimate_background, saturation_level  # noqa: E402
from astrodart.sources.psf import measure_fwhm  # noqa: E402
from astrodart.sources.sep_measure import sep_measure  # noqa: E402


def best_of(fn, repeats):
    """(best wall time, result) of ``repeats`` calls."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(path: str, repeats: int) -> dict:
    """Both measurements of one frame, with their times."""
    ccd = read_frame(path)
    data = np.ascontiguousarray(ccd.data, dtype=np.float32)
    sat = FrameHeader(ccd.meta, path).saturation or saturation_level(data)
    t_sep, s = best_of(lambda: sep_measure(data, mask=ccd.mask, saturation=sat), repeats)

    def fit():
        back, rms = estimate_background(data, mask=ccd.mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return measure_fwhm(np.asarray(data, float), mask=ccd.mask, saturation=sat,
                                background=back, background_rms=rms)

    t_fit, f = best_of(fit, 1)
    return {"file": Path(path).name, "t_sep": t_sep, "t_fit": t_fit, "sep": s.fwhm,
            "fit": f.fwhm, "beta": f.beta, "ell_sep": s.ellipticity, "ell_fit": f.ellipticity,
            "n_sep": s.n_stars, "n_fit": f.n_stars}


def flagged(fwhm, ell, factor=1.5, max_ell=0.5) -> set[int]:
    """Frames the default fwhm and ellipticity rules flag (QualityRules defaults)."""
    fwhm, ell = np.asarray(fwhm), np.asarray(ell)
    bad = ~np.isfinite(fwhm) | (fwhm > factor * np.nanmedian(fwhm)) | (ell > max_ell)
    return set(np.nonzero(bad)[0].tolist())


def main(argv=None) -> None:
    """Run the comparison and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, help="glob of FITS frames")
    ap.add_argument("--every", type=int, default=1, help="take every Nth frame")
    ap.add_argument("--repeats", type=int, default=5, help="sep timing: best of N")
    args = ap.parse_args(argv)
    files = sorted(glob.glob(args.frames))[::args.every]
    if not files:
        raise SystemExit(f"--frames {args.frames!r}: no file matches")
    rows = []
    for p in files:
        r = measure(p, args.repeats)
        rows.append(r)
        print(f"{r['file'][-40:]:>40}  sep {r['sep']:.3f} px ({r['t_sep'] * 1e3:5.1f} ms, "
              f"{r['n_sep']:2d} stars)  fit {r['fit']:.3f} px ({r['t_fit']:.2f} s, beta "
              f"{r['beta']:4.1f})  ratio {r['sep'] / r['fit']:.3f}  ell {r['ell_sep']:.3f} / "
              f"{r['ell_fit']:.3f}")
    ratio = np.array([r["sep"] / r["fit"] for r in rows])
    ok = np.isfinite(ratio)
    med = float(np.median(ratio[ok]))
    scatter = float(1.4826 * np.median(np.abs(ratio[ok] - med)))
    t_sep = np.array([r["t_sep"] for r in rows])
    t_fit = np.array([r["t_fit"] for r in rows])
    dell = np.array([r["ell_sep"] - r["ell_fit"] for r in rows])
    print(f"\n{len(rows)} frames ({ok.sum()} with both widths)")
    print(f"FWHM sep / fit: median {med:.3f}, scatter (1.4826 MAD) {scatter:.3f}, "
          f"5-95 % {np.percentile(ratio[ok], 5):.3f}-{np.percentile(ratio[ok], 95):.3f}")
    print(f"ellipticity sep - fit: median {np.nanmedian(dell):+.3f}, "
          f"scatter {1.4826 * np.nanmedian(np.abs(dell - np.nanmedian(dell))):.3f}")
    print(f"time per frame: sep median {np.median(t_sep) * 1e3:.1f} ms (max "
          f"{t_sep.max() * 1e3:.1f}), fit median {np.median(t_fit):.2f} s")
    fs = flagged([r["sep"] for r in rows], [r["ell_sep"] for r in rows])
    ff = flagged([r["fit"] for r in rows], [r["ell_fit"] for r in rows])
    print(f"flagged by the fwhm/ellipticity rules: sep {sorted(fs)}, fit {sorted(ff)}, "
          f"both {sorted(fs & ff)}")


if __name__ == "__main__":
    main()
