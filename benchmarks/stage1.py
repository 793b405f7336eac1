"""Benchmark: stage 1 (calibration) of the real HAT-P-27b night, astrodart vs the original approach.

Stand-alone (never run as a test)::

    python benchmarks/stage1.py [--data ../shared/data/hatp27b_sbu_180423] [--nsci 30]
                                [--workers 2] [--write-results] [--only astrodart]
    python benchmarks/stage1.py --night-report     # the whole night, the guide's chain

Both chains calibrate the same frames in a scratch folder (``benchmarks/_work/stage1``,
git-ignored, removed at the end; the sample data are only read): 10 bias, 10 darks
(20 s), 10 dome flats (10 s) and ``--nsci`` science frames (20 s), with the
astrophotography guide's chain plus darks: trim, uncertainty, gain, cosmic rays
(science), bias, dark (scaled), flat.

* **original approach**: what AstroDART did, done right — one process, plain ccdproc
  (``trim_image``, ``create_deviation``, ``gain_correct``, ``cosmicray_lacosmic``,
  ``subtract_bias``, ``subtract_dark``, ``flat_correct``), a FITS write and read between
  every step, ``ccdproc.combine`` (median, sigma clipping) for the masters;
* **astrodart**: the :mod:`astrodart.first_stage` step classes as a user runs them
  (still a FITS write after every step, its planes plain: an intermediate), with the
  engine's parallel map, the master builder and the bad-pixel map handed to the
  cosmic-ray step (cut-outs around the candidates);
* **astrodart, no bad-pixel map**: the same without the map (a night without darks):
  astroscrappy on the full frame, one OpenMP thread per worker (threadpoolctl);
* **fused**: the same calibrations with ``calibration_chain``, one read and one write
  a frame.

The original approach runs at its fastest documented settings: astroscrappy's OpenMP
threads on every core (ccdproc's default), ``sepmed=True`` (its default), uncompressed
FITS, one process (ccdproc has no parallel map).

Reported: wall and CPU time of each chain and their ratio, and the cosmic-ray detection
quality of both configurations on a synthetic frame of known truth (detection rate,
false detections, star cores flagged), plus the pixels flagged on the real frames and
the agreement of the two calibrated results. ``--write-results`` replaces the
"stage 1" section of ``benchmarks/RESULTS.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from astropy import units as u  # noqa: E402
from astropy.nddata import CCDData  # noqa: E402
from astropy.stats import sigma_clipped_stats  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "hatp27b_sbu_180423"
REGION = "[1:1024,1:1024]"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (workers)."""
    import multiprocessing

    multiprocessing.active_children()  # reap finished workers now, not in a later interval
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


# ---------------------------------------------------------------------------------------
# the original approach: one process, plain ccdproc, a write after every step
# ---------------------------------------------------------------------------------------
def original_chain(work: Path, bias, dark, flat, sci, ron: float, gain: float) -> dict:
    import ccdproc

    def step(files, wdir, prefix, fn):
        out = []
        for f in files:
            ccd = CCDData.read(f, unit="adu") if str(f).endswith(".gz") else CCDData.read(f)
            res = fn(ccd)
            p = wdir / (
                prefix + Path(f).name.replace(".FIT.gz", ".fits").replace(".fit.gz", ".fits")
            )
            res.write(p, overwrite=True)
            out.append(str(p))
        return out

    def pre(files, wdir):
        wdir.mkdir(parents=True, exist_ok=True)
        r = step(files, wdir, "trimmed_", lambda c: ccdproc.trim_image(c, fits_section=REGION))
        r = step(
            r,
            wdir,
            "dc_",
            lambda c: ccdproc.create_deviation(
                c, gain=gain * u.electron / u.adu, readnoise=ron * u.electron
            ),
        )
        return step(r, wdir, "gc_", lambda c: ccdproc.gain_correct(c, gain * u.electron / u.adu))

    def combine(files, out, **kw):
        ccdproc.combine(
            files,
            output_file=str(out),
            method="median",
            sigma_clip=True,
            sigma_clip_low_thresh=3,
            sigma_clip_high_thresh=3,
            sigma_clip_func=np.ma.median,
            mem_limit=1e9,
            **kw,
        )
        return str(out)

    b = pre(bias, work / "bias")
    mb = combine(b, work / "bias" / "Masterbias.fits")
    mbias = CCDData.read(mb)
    d = step(
        pre(dark, work / "dark"),
        work / "dark",
        "bias_subtracted_",
        lambda c: ccdproc.subtract_bias(c, mbias),
    )
    md = combine(d, work / "dark" / "Masterdark.fits")
    mdark = CCDData.read(md)
    mdark.header["EXPTIME"] = 20.0

    def sub_dark(c):
        return ccdproc.subtract_dark(
            c, mdark, exposure_time="EXPTIME", exposure_unit=u.s, scale=True
        )

    f = step(
        pre(flat, work / "flat"),
        work / "flat",
        "bias_subtracted_",
        lambda c: ccdproc.subtract_bias(c, mbias),
    )
    f = step(f, work / "flat", "dark_subtracted_", sub_dark)
    mf = combine(f, work / "flat" / "Masterflat.fits", scale=lambda a: 1 / np.ma.median(a))
    mflat = CCDData.read(mf)
    s = pre(sci, work / "object")
    s = step(s, work / "object", "crlc_", lambda c: ccdproc.cosmicray_lacosmic(c, sigclip=5))
    s = step(s, work / "object", "bias_subtracted_", lambda c: ccdproc.subtract_bias(c, mbias))
    s = step(s, work / "object", "dark_subtracted_", sub_dark)
    s = step(s, work / "object", "flatfield_corrected_", lambda c: ccdproc.flat_correct(c, mflat))
    return {"science": s, "cr": sorted((work / "object").glob("crlc_*"))}


# ---------------------------------------------------------------------------------------
# astrodart
# ---------------------------------------------------------------------------------------
def astrodart_chain(
    work: Path, bias, dark, flat, sci, ron: float, workers: int, shared_pool: bool = False,
    use_bpm: bool = True,
) -> dict:
    """The guide's chain with the step classes; ``shared_pool``: one process pool handed
    to every step (``executor=``) instead of one pool per step (the default); ``use_bpm``:
    the bad-pixel map handed to the cosmic-ray step (the guide's way) or not (a night
    without darks: astroscrappy on the full frame)."""
    if shared_pool:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            return _astrodart_chain(
                work, bias, dark, flat, sci, ron, dict(progress=False, executor=pool), use_bpm
            )
    return _astrodart_chain(work, bias, dark, flat, sci, ron,
                            dict(progress=False, workers=workers), use_bpm)


def _astrodart_chain(work: Path, bias, dark, flat, sci, ron: float, kw: dict,
                     use_bpm: bool = True) -> dict:
    from astrodart.first_stage import (
        bad_pixel_map,
        correct_flatfield,
        cosmic_ray_laplacian_correction,
        deviation_calculation,
        gain_correction,
        master_frame,
        subtract_bias,
        subtract_dark,
        trimmer,
    )

    dirs = {k: work / k for k in ("bias", "dark", "flat", "object")}

    def pre(files, wdir):
        r = trimmer(wdir, files, REGION, "yes", **kw).run()
        r = deviation_calculation(wdir, r, "yes", ron=ron, **kw).run()
        return gain_correction(wdir, r, "yes", **kw).run()

    mb = master_frame(
        dirs["bias"],
        pre(bias, dirs["bias"]),
        "masterbias.fits",
        "median",
        "sigclip",
        3,
        3,
        overwrite="yes",
    ).run()
    d = subtract_bias(dirs["dark"], pre(dark, dirs["dark"]), mb, "yes", **kw).run()
    md = master_frame(
        dirs["dark"], d, "masterdark_20s.fits", "median", "sigclip", 3, 3, overwrite="yes"
    ).run()
    f = subtract_bias(dirs["flat"], pre(flat, dirs["flat"]), mb, "yes", **kw).run()
    f = subtract_dark(dirs["flat"], f, md, "yes", **kw).run()
    mf = master_frame(
        dirs["flat"],
        f,
        "masterflat.fits",
        "median",
        "sigclip",
        3,
        3,
        frame_type="flat",
        overwrite="yes",
    ).run()
    bpm = bad_pixel_map(dirs["dark"], md, mf, overwrite="yes").run() if use_bpm else None
    s = pre(sci, dirs["object"])
    s = cosmic_ray_laplacian_correction(dirs["object"], s, "yes", mask_file=bpm, **kw).run()
    cr = list(s)
    s = subtract_bias(dirs["object"], s, mb, "yes", **kw).run()
    s = subtract_dark(dirs["object"], s, md, "yes", **kw).run()
    s = correct_flatfield(dirs["object"], s, mf, "yes", **kw).run()
    return {"science": s, "cr": cr, "bpm": bpm}


def astrodart_fused(work: Path, bias, dark, flat, sci, ron: float, workers: int) -> dict:
    """The same chain with :class:`~astrodart.first_stage.calibration_chain`: each frame is
    read once and written once (no intermediate files)."""
    from astrodart.first_stage import bad_pixel_map, calibration_chain, master_frame

    kw = dict(progress=False, workers=workers, region=REGION, ron=ron)
    dirs = {k: work / k for k in ("bias", "dark", "flat", "object")}
    b = calibration_chain(dirs["bias"], bias, "yes", **kw).run()
    mb = master_frame(
        dirs["bias"], b, "masterbias.fits", "median", "sigclip", 3, 3, overwrite="yes"
    ).run()
    d = calibration_chain(dirs["dark"], dark, "yes", masterbias_file=mb, **kw).run()
    md = master_frame(
        dirs["dark"], d, "masterdark_20s.fits", "median", "sigclip", 3, 3, overwrite="yes"
    ).run()
    f = calibration_chain(
        dirs["flat"], flat, "yes", masterbias_file=mb, masterdark_file=md, **kw
    ).run()
    mf = master_frame(
        dirs["flat"],
        f,
        "masterflat.fits",
        "median",
        "sigclip",
        3,
        3,
        frame_type="flat",
        overwrite="yes",
    ).run()
    bpm = bad_pixel_map(dirs["dark"], md, mf, overwrite="yes").run()
    s = calibration_chain(
        dirs["object"],
        sci,
        "yes",
        cosmic_rays="lacosmic",
        masterbias_file=mb,
        masterdark_file=md,
        masterflatfield_file=mf,
        badpixel_file=bpm,
        **kw,
    ).run()
    return {"science": s, "cr": s, "bpm": bpm}


# ---------------------------------------------------------------------------------------
# cosmic-ray quality on known truth
# ---------------------------------------------------------------------------------------
def cr_quality(seed: int = 7) -> dict:
    """Both configurations on a synthetic 512 x 512 frame in electrons with its bias
    pedestal (as in the chain: cosmic rays before bias subtraction), 120 stars and 250
    hits; hot and dead pixels are handed to astrodart as its bad-pixel map."""
    import ccdproc
    from scipy import ndimage

    from astrodart.calibration.cosmics import lacosmic
    from conftest import SyntheticCamera

    cam = SyntheticCamera(ny=512, nx=512, seed=seed)
    stars, simg = cam.stars(n=120, fwhm=3.0, flux_range=(2e3, 6e5))
    hits, cimg = cam.cosmic_rays(250, avoid=stars[:, :2])
    e = (cam.expose(20, photons=simg, sky=600, cosmics=cimg) * cam.gain).astype(np.float32)
    bad = cam.hot | cam.dead

    def score(mask):
        mask = mask & ~bad
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        foot = np.zeros(mask.shape, bool)
        det = 0
        for px in hits:
            det += bool(mask[px[:, 0], px[:, 1]].any())
            foot[px[:, 0], px[:, 1]] = True
        foot = ndimage.binary_dilation(foot, iterations=2)
        ids = np.unique(lab[foot & mask])
        false = n - len(ids[ids > 0])
        core = np.zeros(mask.shape, bool)
        for x, y, _ in stars:
            core[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = (
                True
            )
        return {
            "detected": det / len(hits),
            "false_per_1e5": false / mask.size * 1e5,
            "star_core_px": int((mask & core).sum()),
        }

    orig = ccdproc.cosmicray_lacosmic(CCDData(e, unit="electron"), sigclip=5).mask
    ours, _ = lacosmic(e, gain=1.0, sigclip=5, mask=bad)
    return {"original": score(orig), "astrodart": score(ours)}


# ---------------------------------------------------------------------------------------
def sky_flatness(files) -> float:
    """RMS/mean of the sigma-clipped sky medians on an 8x8 grid of the median of the
    first 15 frames."""
    from astrodart.frames.io import read_frame

    return _grid_flatness(np.median([read_frame(f).data for f in files[:15]], axis=0))


def night_report(data: Path, work: Path) -> dict:
    """The guide's chain plus darks on the whole night, as a user runs it: header fixes
    on copies, data_organiser, the step classes, image_combination masters (bias, flat),
    master_frame (dark), bad-pixel map, finalize_stage1. Returns the measured numbers."""
    from astrodart.first_stage import (
        bad_pixel_map,
        correct_flatfield,
        cosmic_ray_laplacian_correction,
        dark_current,
        deviation_calculation,
        finalize_stage1,
        gain_correction,
        master_frame,
        photon_transfer,
        subtract_bias,
        subtract_dark,
        trimmer,
    )
    from astrodart.frames.io import read_frame, read_header
    from astrodart.utils import data_organiser, get_directory, header_tools, image_combination

    night = work / "uncal_data" / "180423"
    night.mkdir(parents=True)
    for p in data.iterdir():
        if p.name.endswith(".gz"):
            shutil.copy2(p, night / p.name)
    files = sorted(night.iterdir())
    header_tools(
        [f for f in files if "dome_flat" in f.name], {"IMAGETYP": "Flat Field"}
    ).update_header_values()
    header_tools(
        [f for f in files if "science" in f.name], {"OBJECT": "HAT-P-27"}
    ).append_header_key()
    org = data_organiser(
        work / "uncal_data", work / "reduced_data", "180423", "HAT-P-27", verbose=False
    )
    org.run()
    data_dir = org.get_directory()
    g = get_directory(data_dir)
    bias_dir, bias_files = g.bias()
    dark_dirs, dark_files, _ = g.dark()
    flat_dirs, flat_files, _ = g.flatfield()
    obj_dirs, obj_files, _ = g.science()
    t0 = time.perf_counter()
    ptc = photon_transfer(bias_files, flat_files[0]).run()
    ron = ptc.read_noise_for_gain(2.06)
    kw = dict(progress=False)

    def pre(w, f):
        r = trimmer(w, f, REGION, "yes", **kw).run()
        r = deviation_calculation(w, r, "yes", ron=ron, **kw).run()
        return gain_correction(w, r, "yes", **kw).run()

    combine = dict(combining_method="median", clipping_method="sigclip", minclip=3, maxclip=3)
    mb = image_combination(
        wdir=bias_dir, files=pre(bias_dir, bias_files), output_name="masterbias.fits", **combine
    ).run()
    d = subtract_bias(dark_dirs[0], pre(dark_dirs[0], dark_files[0]), mb, "yes", **kw).run()
    md = master_frame(dark_dirs[0], d, "masterdark_20s.fits", "median", "sigclip", 3, 3).run()
    f = subtract_bias(flat_dirs[0], pre(flat_dirs[0], flat_files[0]), mb, "yes", **kw).run()
    f = subtract_dark(flat_dirs[0], f, md, "yes", **kw).run()
    mf = image_combination(
        wdir=flat_dirs[0], files=f, output_name="masterflat_Visible.fits", **combine
    ).run()
    bpm = bad_pixel_map(dark_dirs[0], md, mf).run()
    s = pre(obj_dirs[0], obj_files[0])
    s = cosmic_ray_laplacian_correction(obj_dirs[0], s, "yes", mask_file=bpm, **kw).run()
    ncr = [read_header(x)["ADNCRPIX"] for x in s]
    s = subtract_bias(obj_dirs[0], s, mb, "yes", **kw).run()
    s = subtract_dark(obj_dirs[0], s, md, "yes", **kw).run()
    s = correct_flatfield(obj_dirs[0], s, mf, "yes", **kw).run()
    wall = time.perf_counter() - t0
    mbias = read_frame(mb).data
    raw = np.median([read_frame(p).data for p in obj_files[0][:15]], axis=0) - mbias / 2.06
    nan = sum(int((~np.isfinite(read_frame(p).data)).sum()) for p in s)
    flat_raw, flat_cal = _grid_flatness(raw), sky_flatness(s)
    finalize_stage1(data_dir, obj_dirs, bias_dir, dark_dirs, flat_dirs).run()
    _, final, filters = get_directory(data_dir).science_final()
    calib = Path(data_dir) / "calibration"
    dc = dark_current(calib / "masterdark_20s.fits").run()
    bh = read_header(calib / "master_badpixel_map.fits")
    return dict(
        wall=wall,
        ptc=str(ptc),
        gain=ptc.gain,
        ron_adu=ptc.read_noise_adu,
        ron_e_measured_gain=ptc.read_noise,
        ron_e_header_gain=ron,
        bias_e=float(np.median(mbias)),
        bias_adu=float(np.median(mbias) / 2.06),
        dark=str(dc),
        hot_10sigma=bh["ADBPHOT"],
        warm_5_10sigma=bh["ADBPWARM"],
        flat_low=bh["ADBPLOW"],
        flat_deviant=bh["ADBPDEV"],
        flatness_uncalibrated=flat_raw,
        flatness_calibrated=flat_cal,
        cosmic_ray_pixels_median=float(np.median(ncr)),
        cosmic_ray_pixels_max=max(ncr),
        non_finite=nan,
        finalized=[len(x) for x in final],
        filters=filters,
        calibration=sorted(p.name for p in calib.iterdir()),
    )


def _grid_flatness(img) -> float:
    ny, nx = img.shape
    vals = [
        sigma_clipped_stats(img[i * ny // 8 : (i + 1) * ny // 8, j * nx // 8 : (j + 1) * nx // 8])[
            1
        ]
        for i in range(8)
        for j in range(8)
    ]
    return float(np.std(vals) / np.mean(vals))


def write_results(text: str, section: str = "stage 1") -> Path:
    """Replace (or add) the '## <section>' section of benchmarks/RESULTS.md."""
    path = REPO / "benchmarks" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    out, skip = [], False
    for line in lines:
        if line.startswith("## "):
            skip = line.strip().lower().startswith("## " + section)
            if skip:
                continue
        if not skip:
            out.append(line)
    body = "\n".join(out).rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(body)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--nsci", type=int, default=30)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the chains N times, interleaved, and keep each chain's best wall time "
        "(the machine may be shared)",
    )
    parser.add_argument(
        "--workdir",
        default=str(REPO / "benchmarks" / "_work" / "stage1"),
        help="scratch folder (emptied first, removed at the end)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--night-report",
        action="store_true",
        help="run the guide's chain on the whole night (all science frames) "
        "through data_organiser and finalize_stage1, print the numbers",
    )
    parser.add_argument(
        "--only",
        choices=("astrodart", "nobpm", "fused", "original"),
        help="time one chain only (no comparison, nothing written)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # ccdproc logs a warning per frame
    warnings.simplefilter("ignore")

    from astrodart.first_stage import photon_transfer
    from astrodart.frames.io import read_frame

    data = Path(args.data)
    if args.night_report:
        import json

        tmp = Path(args.workdir)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            print(json.dumps(night_report(data, tmp), indent=1, default=float))
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        return 0
    bias = sorted(map(str, data.glob("*bias_frame*")))
    dark = sorted(map(str, data.glob("*dark_frame*")))
    flat = sorted(map(str, data.glob("*dome_flat*")))
    sci = sorted(map(str, data.glob("*science_exposures*")))[: args.nsci]
    if not (bias and dark and flat and sci):
        print(f"{data}: sample night not found", file=sys.stderr)
        return 1
    ptc = photon_transfer(bias, flat).run()
    gain = 2.06  # the header's EGAIN, used by both chains
    ron = ptc.read_noise_for_gain(gain)
    print(f"frames: {len(bias)} bias, {len(dark)} darks, {len(flat)} flats, {len(sci)} science")
    print(f"photon transfer: {ptc}")

    results = {}
    tmp = Path(args.workdir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        chains = (
            ("original", lambda w: original_chain(w, bias, dark, flat, sci, ron, gain)),
            ("astrodart", lambda w: astrodart_chain(w, bias, dark, flat, sci, ron, args.workers)),
            ("nobpm", lambda w: astrodart_chain(w, bias, dark, flat, sci, ron, args.workers,
                                                use_bpm=False)),
            ("fused", lambda w: astrodart_fused(w, bias, dark, flat, sci, ron, args.workers)),
        )
        for rep in range(args.repeats):
            for name, fn in chains:
                if args.only and name != args.only:
                    continue
                work = tmp / f"{name}_{rep}"
                work.mkdir()
                load0 = os.getloadavg()[0]
                c0, t0 = cpu_seconds(), time.perf_counter()
                out = fn(work)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                runs = results.get(name, {}).get("runs", []) + [(wall, cpu, load0)]
                if name not in results or wall < results[name]["wall"]:
                    results[name] = dict(wall=wall, cpu=cpu, load=load0, out=out)
                results[name]["runs"] = runs
                print(
                    f"{name:10s} wall {wall:6.1f} s   cpu {cpu:6.1f} s   "
                    f"(load average at start {load0:.1f})",
                    flush=True,
                )
        if args.only:
            return 0
        o, a, nb = (results[k]["out"] for k in ("original", "astrodart", "nobpm"))
        n_cr_o = [int(np.asarray(read_frame(f).mask).sum()) for f in o["cr"]]
        n_cr_a = [int(np.asarray(read_frame(f).mask).sum()) for f in a["cr"]]
        n_cr_nb = [int(np.asarray(read_frame(f).mask).sum()) for f in nb["cr"]]
        flat_o, flat_a = sky_flatness(o["science"]), sky_flatness(a["science"])
        scale, diff = [], []
        for fo, fa in zip(o["science"][:5], a["science"][:5]):
            co, ca = read_frame(fo), read_frame(fa)
            good = ~np.asarray(ca.mask, bool) if ca.mask is not None else np.ones(ca.shape, bool)
            if co.mask is not None:
                good &= ~np.asarray(co.mask, bool)
            k = float(np.median(ca.data[good]) / np.median(co.data[good]))  # flat normalisation
            r = (ca.data - k * co.data)[good]
            noise = 1.4826 * np.median(np.abs(ca.data[good] - np.median(ca.data[good])))
            scale.append(k)
            diff.append(float(np.median(np.abs(r - np.median(r))) / noise))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    ro, ra, rf = results["original"], results["astrodart"], results["fused"]
    rn = results["nobpm"]
    ratio, cpu_ratio = ro["wall"] / ra["wall"], ro["cpu"] / ra["cpu"]
    nratio, ncpu_ratio = ro["wall"] / rn["wall"], ro["cpu"] / rn["cpu"]
    fratio, fcpu_ratio = ro["wall"] / rf["wall"], ro["cpu"] / rf["cpu"]
    q = cr_quality()
    print(
        f"speed-up over the original: guide's step classes with the bad-pixel map "
        f"{ratio:.2f}x wall ({cpu_ratio:.2f}x CPU), without it {nratio:.2f}x wall "
        f"({ncpu_ratio:.2f}x CPU); one-pass chain {fratio:.2f}x wall ({fcpu_ratio:.2f}x CPU)"
    )
    print(f"cosmic rays, synthetic truth: {q}")
    print(
        f"cosmic-ray pixels per real frame: original median {np.median(n_cr_o):.0f}, "
        f"astrodart median {np.median(n_cr_a):.0f} (bad-pixel map), "
        f"{np.median(n_cr_nb):.0f} (none: hot pixels of the undarked frame flagged too)"
    )
    print(
        f"sky flatness (8x8 grid, median of 15 frames): original {100 * flat_o:.2f} %, "
        f"astrodart {100 * flat_a:.2f} %"
    )
    print(
        f"calibrated frames: astrodart/original sky scale {np.median(scale):.4f}; after it, "
        f"median |difference| {np.median(diff):.3f} of the sky noise"
    )
    if args.write_results:
        qo, qa = q["original"], q["astrodart"]

        def row(*cells):
            return "| " + " | ".join(str(c) for c in cells) + " |"

        def paired(label, key):
            w = [o[0] / a[0] for o, a in zip(ro["runs"], results[key]["runs"])]
            c = [o[1] / a[1] for o, a in zip(ro["runs"], results[key]["runs"])]
            return (
                f"* {label}: wall **{np.median(w):.2f}x** median of the {len(w)} pairs "
                f"(range {min(w):.2f}-{max(w):.2f}), CPU **{np.median(c):.2f}x** "
                f"(range {min(c):.2f}-{max(c):.2f})"
            )

        def timing(label, r):
            return row(
                label,
                f"{r['wall']:.1f}",
                f"{r['cpu']:.1f}",
                f"{r['load']:.1f}",
                f"{ro['wall'] / r['wall']:.2f}x",
                f"{ro['cpu'] / r['cpu']:.2f}x",
                ", ".join(f"{w:.1f} s / {c:.1f} s @ {ld:.1f}" for w, c, ld in r["runs"]),
            )

        lines = [
            "## stage 1 (calibration, `benchmarks/stage1.py`)",
            "",
            f"Machine: see the top of this file ({os.cpu_count()} cores, Python "
            f"{platform.python_version()}). Command: `python benchmarks/stage1.py "
            f"--repeats {args.repeats} --workers {args.workers} --write-results`; the three "
            f"chains run interleaved {args.repeats} time(s), best wall time kept (its CPU "
            "time beside it; every run listed with the load average at its start).",
            f"Real HAT-P-27b night: {len(bias)} bias, {len(dark)} darks, {len(flat)} dome flats "
            f"and {len(sci)} science frames (1024 x 1024, gzip); the astrophotography guide's "
            "chain plus darks (trim, uncertainty, gain, cosmic rays, bias, scaled dark, flat) "
            "and the masters. Wall times depend on the load of the (shared) machine, given "
            "as the load average when each chain started; CPU times (all processes) are "
            "steadier.",
            "",
            row(
                "chain",
                "best wall (s)",
                "CPU (s)",
                "load average",
                "speed-up (wall)",
                "speed-up (CPU)",
                "all runs: wall / CPU @ load",
            ),
            row("---", "---", "---", "---", "---", "---", "---"),
            timing(
                "original approach: one process, plain ccdproc, a FITS write after every "
                "step, `ccdproc.combine` masters",
                ro,
            ),
            timing(
                f"astrodart step classes as the guide calls them (a FITS write after every "
                f"step), {args.workers} worker processes, `master_frame`, bad-pixel map",
                ra,
            ),
            timing(
                "astrodart step classes, no bad-pixel map (astroscrappy on the full frame)",
                rn,
            ),
            timing(
                "astrodart `calibration_chain`: the same calibrations in one pass per frame "
                "(read once, write once)",
                rf,
            ),
            "",
            f"Best against best: {ratio:.2f}x wall ({cpu_ratio:.2f}x CPU) with the step "
            f"classes and the bad-pixel map, {nratio:.2f}x wall ({ncpu_ratio:.2f}x CPU) "
            f"without it, {fratio:.2f}x wall ({fcpu_ratio:.2f}x CPU) with the one-pass chain. "
            "As the load changed between runs, the fairer figure pairs each astrodart run "
            "with the original run made just before it (same repeat):",
            "",
            paired("step classes, bad-pixel map", "astrodart"),
            paired("step classes, no bad-pixel map", "nobpm"),
            paired("one-pass `calibration_chain`", "fused"),
            "",
            "Cosmic-ray detection on a synthetic 512 x 512 frame of known truth (250 hits of "
            "500-8000 e-, 120 stars of FWHM 3 px; in electrons with the bias pedestal, as in "
            "the chain):",
            "",
            row(
                "configuration",
                "hits detected",
                "false detections / 1e5 px",
                "star-core pixels flagged",
            ),
            row("---", "---", "---", "---"),
            row(
                "original: `ccdproc.cosmicray_lacosmic(sigclip=5)` (gain 1, default read noise)",
                f"{100 * qo['detected']:.1f} %",
                f"{qo['false_per_1e5']:.2f}",
                qo["star_core_px"],
            ),
            row(
                "astrodart: `cosmic_ray_laplacian_correction` (measured noise model, bad-pixel "
                "map, star-core guard; astroscrappy run only where it can find something)",
                f"{100 * qa['detected']:.1f} %",
                f"{qa['false_per_1e5']:.2f}",
                qa["star_core_px"],
            ),
            "",
            f"Real frames: median {np.median(n_cr_o):.0f} (original) vs {np.median(n_cr_a):.0f} "
            "(astrodart) pixels flagged as cosmic rays per frame (the original also flags hot "
            "and warm pixels, which astrodart leaves to the bad-pixel map and the dark). Sky "
            "flatness of the calibrated frames (sigma-clipped medians on an 8x8 grid of the "
            f"median of 15 frames, rms/mean): {100 * flat_o:.2f} % (original) vs "
            f"{100 * flat_a:.2f} % (astrodart). The two calibrated results differ by a scale "
            f"of {np.median(scale):.4f} (the flat normalisation: ccdproc divides by the flat's "
            "mean, astrodart by its clipped central median); after it, by a median "
            f"{np.median(diff):.3f} of the sky noise per pixel.",
        ]
        text = "\n".join(lines) + "\n"
        print(f"written: {write_results(text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
