"""Benchmark: peak resident memory of the heavy steps on 4096 x 4096 frames, default settings.

Stand-alone (never run as a test)::

    python benchmarks/memory.py [--nframes 10] [--workers 2] [--write-results]

A synthetic night of 4096 x 4096 frames is written with
:func:`astrodart.datasets.simulated_night.simulate_night` (uint16, gzip, stars of the M67 field, dithered
science frames, cosmic rays) into ``benchmarks/_work/memory`` (removed at the end). Each
step then runs in a fresh Python process (``python benchmarks/memory.py --child ...``) at
its default settings, so that its peak is not hidden by an earlier step's:

* ``master_frame``: median + sigma-clipped master bias of the bias frames;
* ``cosmic_ray_laplacian_correction`` on gain-corrected science frames (with a bad-pixel
  map, as in the guides);
* ``calibration_chain``: trim, uncertainty, gain, L.A.Cosmic, bias, dark, flat in one pass;
* ``align`` (star matching, bicubic resampling) of the calibrated science frames.

Reported per step: wall time, the peak resident set (VmHWM) of the calling process, the
largest peak of its worker processes (``RUSAGE_CHILDREN``), and the sum bound
``caller + workers x largest worker`` (what the machine must hold at worst). The target
is <= 2 GB for any one process. ``--write-results`` replaces the "memory" section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RON = 8.0


def _peak_self_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _TotalSampler:
    """Largest sum of the resident sets of this process and all its descendants, sampled
    every 20 ms in a thread (psutil, installed with dask[distributed]); pages shared
    between forked workers are counted in each, so this errs on the high side."""

    def __init__(self):
        import threading

        import psutil

        self.me, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except Exception:  # a worker that just ended
                    pass
            self.peak = max(self.peak, total)
            self.stop.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        return False


def child(step: str, work: Path, workers: int) -> dict:
    """Run one step in this (fresh) process; return its numbers."""
    warnings.simplefilter("ignore")
    # imported before the baseline is read, so that it includes them
    import astrodart.first_stage  # noqa: F401
    import astrodart.third_stage_astrophotography  # noqa: F401

    d = json.loads((work / "files.json").read_text())
    base = _peak_self_mb()
    kw = dict(progress=False, workers=workers)
    t0 = time.perf_counter()
    with _TotalSampler() as sampler:
        _run_step(step, d, work, kw)
    wall = time.perf_counter() - t0
    return dict(step=step, wall=wall, caller_mb=_peak_self_mb(), imports_mb=base,
                worker_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                total_mb=sampler.peak / 2**20, load=os.getloadavg()[0])


def _run_step(step: str, d: dict, work: Path, kw: dict) -> None:
    from astrodart.first_stage import (
        calibration_chain,
        cosmic_ray_laplacian_correction,
        master_frame,
    )
    from astrodart.third_stage_astrophotography import align

    if step == "master_frame":
        master_frame(work / "m", d["bias_gc"], "mb.fits", "median", "sigclip", 3, 3,
                     overwrite="yes").run()
    elif step == "cosmic_rays":
        cosmic_ray_laplacian_correction(work / "cr", d["sci_gc"], "yes",
                                        mask_file=d["bpm"], **kw).run()
    elif step == "calibration_chain":
        calibration_chain(work / "cal", d["sci"], "yes", ron=RON, cosmic_rays="lacosmic",
                          masterbias_file=d["mb"], masterdark_file=d["md"],
                          masterflatfield_file=d["mf"], badpixel_file=d["bpm"], **kw).run()
    elif step == "align":
        a = align(d["sci_cal"], str(work / "cal"), d["sci_cal"][0], "yes",
                  output_dir=work / "aligned", **kw)
        a.run()
        assert not a.failed, a.failed
    else:
        raise ValueError(step)


def prepare(work: Path, nframes: int, workers: int) -> None:
    """Simulate the night and make the inputs of every measured step."""
    from astrodart.datasets.simulated_night import simulate_night
    from astrodart.first_stage import (
        bad_pixel_map,
        calibration_chain,
        master_frame,
    )
    from astrodart.frames.io import find_fits, read_header

    t0 = time.perf_counter()
    simulate_night(work / "night", seed=3, shape=(4096, 4096), pixel_scale=0.75,
                   n_bias=nframes, n_dark=5,
                   dark_exptimes=(60.0,), n_flat=5, n_science={"V": nframes},
                   exptimes={"V": 60.0}, flat_exptimes={"V": 5.0}, workers=workers)
    files = find_fits(work / "night", recursive=True)
    kind = {f: str(read_header(f).get("IMAGETYP", "")).lower() for f in files}
    bias = [f for f in files if "bias" in kind[f]]
    dark = [f for f in files if "dark" in kind[f]]
    flat = [f for f in files if "flat" in kind[f]]
    sci = [f for f in files if "light" in kind[f] or "object" in kind[f] or "science" in kind[f]]
    print(f"simulated {len(bias)} bias, {len(dark)} dark, {len(flat)} flat, {len(sci)} "
          f"science frames of 4096x4096 in {time.perf_counter() - t0:.0f} s", flush=True)
    kw = dict(progress=False, workers=workers, ron=RON)
    b = calibration_chain(work / "bias", bias, "yes", **kw).run()
    mb = master_frame(work / "bias", b, "masterbias.fits", "median", "sigclip", 3, 3).run()
    dk = calibration_chain(work / "dark", dark, "yes", masterbias_file=mb, **kw).run()
    md = master_frame(work / "dark", dk, "masterdark.fits", "median", "sigclip", 3, 3).run()
    fl = calibration_chain(work / "flat", flat, "yes", masterbias_file=mb, masterdark_file=md,
                           **kw).run()
    mf = master_frame(work / "flat", fl, "masterflat.fits", "median", "sigclip", 3, 3,
                      frame_type="flat").run()
    bpm = bad_pixel_map(work / "dark", md, mf).run()
    sci_gc = calibration_chain(work / "scigc", sci, "yes", **kw).run()
    sci_cal = calibration_chain(work / "cal", sci, "yes", masterbias_file=mb,
                                masterdark_file=md, masterflatfield_file=mf, **kw).run()
    (work / "files.json").write_text(json.dumps(dict(
        bias_gc=b, sci=sci, sci_gc=sci_gc, sci_cal=sci_cal, mb=mb, md=md, mf=mf, bpm=bpm)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nframes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "_work" / "memory"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept simulated night")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    if args.child:
        print(json.dumps(child(args.child, work, args.workers)))
        return 0
    if not (args.reuse and (work / "files.json").exists()):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        prepare(work, args.nframes, args.workers)
    rows = []
    try:
        for step in ("master_frame", "cosmic_rays", "calibration_chain", "align"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", step, "--workdir", str(work),
                 "--workers", str(args.workers)],
                capture_output=True, text=True, check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["bound_mb"] = r["caller_mb"] + args.workers * r["worker_mb"]
            rows.append(r)
            print(f"{step:18s} wall {r['wall']:6.1f} s  caller {r['caller_mb']:6.0f} MB  "
                  f"largest worker {r['worker_mb']:6.0f} MB  all processes {r['total_mb']:6.0f} "
                  f"MB  bound {r['bound_mb']:6.0f} MB  "
                  f"(load {r['load']:.1f})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.write_results:
        sys.path.insert(0, str(Path(__file__).parent))
        from stage1 import write_results  # noqa: E402  (same folder)

        lines = [
            "## memory (4096 x 4096 frames, `benchmarks/memory.py`)",
            "",
            f"Command: `python benchmarks/memory.py --nframes {args.nframes} --workers "
            f"{args.workers} --write-results`. A simulated night of 4096 x 4096 uint16 frames "
            f"(`simulate_night`, {args.nframes} bias and science frames, 5 darks and 5 flats), "
            "each step at its default settings in a fresh process; peak resident set "
            "(VmHWM) of the calling process and of its largest worker process. Target: "
            "<= 2 GB for any step.",
            "",
            "| step | frames | wall (s) | caller peak (MB) | largest worker peak (MB) | "
            "all processes together, sampled peak (MB) | caller + workers x largest (MB) | "
            "load average |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r['step']} | {args.nframes} | {r['wall']:.1f} | {r['caller_mb']:.0f} | "
                f"{r['worker_mb']:.0f} | {r['total_mb']:.0f} | {r['bound_mb']:.0f} | "
                f"{r['load']:.1f} |"
            )
        worst = max(max(r["caller_mb"], r["worker_mb"]) for r in rows)
        total = max(r["total_mb"] for r in rows)
        lines += ["", f"Largest single-process peak: **{worst:.0f} MB** (target 2048 MB); "
                  f"largest sum over the caller and its {args.workers} workers: {total:.0f} MB "
                  "(each worker holds one frame's calibration at a time, so the machine needs "
                  "about the single-process peak per worker; `workers=` bounds it). The "
                  f"caller's peak includes ~{min(r['imports_mb'] for r in rows):.0f} MB of "
                  "interpreter and imports."]
        print("written:", write_results("\n".join(lines) + "\n", "memory"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
