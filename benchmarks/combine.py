"""Benchmark: astrodart's band-wise combine vs ccdproc.combine vs Siril (stand-alone script).

Makes ``--nframes`` uint16 FITS frames of ``--size`` x ``--size`` pixels (sky gradient,
stars, Poisson and read noise, cosmic rays; seeded), then times, each in a fresh process
so peak memory is per tool:

* astrodart ``combine_files(..., 'median', clipping='sigclip', 3/3)`` (median/MAD clipping),
  also the 'average' + sigclip recipe (Siril's ``rej`` is an average with rejection);
* ``ccdproc.combine(method='median', sigma_clip=True, 3/3, sigma_clip_func=median,
  sigma_clip_dev_func=mad_std, mem_limit=2e9)``;
* ``siril-cli`` with ``stack frame_ rej s 3 3 -nonorm`` when it is installed.

and prints wall times, peak resident memory (ru_maxrss) and ratios. ``--memory`` also
combines 20 frames of 4096x4096 with ``memory_limit=1e9`` and reports the peak resident
memory (target < 1.5 GB). Run from the repository root::

    python benchmarks/combine.py                 # speed (20 x 2048^2)
    python benchmarks/combine.py --memory        # + memory check (20 x 4096^2, ~700 MB of disk)

Never collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]


def make_frames(
    folder: Path, nframes: int, size: int, seed: int = 1, simple: bool = False
) -> list[Path]:
    """Write ``nframes`` uint16 frames ``frame_00001.fit``...; ``simple`` = noise only (fast)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ny = nx = size
    if simple:
        sky = None
    else:
        y, x = np.mgrid[:ny, :nx].astype(np.float32)
        sky = 1000.0 + 0.02 * x + 0.01 * y
        for _ in range(size // 8):  # Gaussian stars, FWHM ~3.5 px
            x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
            flux, sig = rng.uniform(2e3, 2e5), 1.5
            x1, x2 = int(max(0, x0 - 8)), int(min(nx, x0 + 9))
            y1, y2 = int(max(0, y0 - 8)), int(min(ny, y0 + 9))
            yy, xx = np.mgrid[y1:y2, x1:x2]
            sky[y1:y2, x1:x2] += (
                flux
                / (2 * np.pi * sig**2)
                * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sig**2))
            )
    paths = []
    for i in range(nframes):
        if simple:
            img = rng.normal(1000.0, 10.0, (ny, nx)).astype(np.float32)
        else:
            img = rng.poisson(sky).astype(np.float32) + rng.normal(0.0, 8.0, (ny, nx)).astype(
                np.float32
            )
            ncr = size * size // 20000  # cosmic rays: single hot pixels and short tracks
            cy, cx = rng.integers(0, ny - 2, ncr), rng.integers(0, nx - 2, ncr)
            amp = rng.uniform(1e3, 4e4, ncr).astype(np.float32)
            img[cy, cx] += amp
            img[cy + 1, cx + 1] += amp / 2
        img = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
        p = folder / f"frame_{i + 1:05d}.fit"
        hdu = fits.PrimaryHDU(img)
        hdu.header["BUNIT"] = "adu"
        hdu.header["IMAGETYP"] = "Light Frame"
        hdu.writeto(p, overwrite=True)
        paths.append(p)
    return paths


_CHILD = r"""
import json, resource, sys, time, warnings
import psutil
args = json.loads(sys.argv[1])
rss0 = psutil.Process().memory_info().rss
t_import = time.perf_counter()
if args["tool"] == "astrodart":
    sys.path.insert(0, args["repo"])
    from astrodart.combine.files import combine_files
    import astrodart.combine.engine  # noqa
    rss0 = psutil.Process().memory_info().rss
    c0, t0 = time.process_time(), time.perf_counter()
    combine_files(args["files"], args["out"], args["method"], clipping="sigclip", sigma_low=3,
                  sigma_high=3, memory_limit=args["memory_limit"], overwrite=True)
else:
    import numpy as np
    import ccdproc
    from astropy.stats import mad_std
    rss0 = psutil.Process().memory_info().rss
    c0, t0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccdproc.combine(args["files"], args["out"], method="median", sigma_clip=True,
                        sigma_clip_low_thresh=3, sigma_clip_high_thresh=3,
                        sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std,
                        mem_limit=args["memory_limit"], unit="adu", overwrite_output=True)
t1, c1 = time.perf_counter(), time.process_time()
ru = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM is this process image's peak; ru_maxrss would carry the forking parent's peak over exec.
with open("/proc/self/status") as fh:
    peak = [int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:")][0]
print(json.dumps({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "cpu_process": ru.ru_utime + ru.ru_stime,
                  "peak_rss": peak, "rss_before": rss0}))
"""


def run_python(tool: str, files, out: Path, method: str, memory_limit: float) -> dict:
    args = {
        "tool": tool,
        "files": [str(f) for f in files],
        "out": str(out),
        "method": method,
        "memory_limit": memory_limit,
        "repo": str(REPO),
    }
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode:
        raise RuntimeError(f"{tool} run failed:\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["process_seconds"] = time.perf_counter() - t0
    return info


def run_siril(folder: Path) -> dict | None:
    exe = shutil.which("siril-cli")
    if exe is None:
        return None
    for stale in list(folder.glob("*.seq")) + list(folder.glob("siril_result*")):
        stale.unlink()
    script = folder / "stack.ssf"
    script.write_text("requires 1.0.0\nstack frame_ rej s 3 3 -nonorm -out=siril_result\n")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [exe, "-d", str(folder), "-s", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    text = proc.stdout.read()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or "Stacked sequence successfully" not in text:
        raise RuntimeError(f"siril-cli failed:\n{text[-2000:]}")
    exec_line = [ln for ln in text.splitlines() if "Execution time" in ln]
    return {
        "process_seconds": seconds,
        "peak_rss": usage.ru_maxrss * 1024,
        "cpu_process": usage.ru_utime + usage.ru_stime,
        "siril_reported": exec_line[0].split(":", 2)[-1].strip() if exec_line else "",
        "version": subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def machine() -> str:
    import psutil

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}; load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )


def _mb(x: float) -> str:
    return f"{x / 1e6:.0f} MB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nframes", type=int, default=20)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of astrodart and Siril (best and median reported)",
    )
    ap.add_argument("--skip-ccdproc", action="store_true")
    ap.add_argument(
        "--memory", action="store_true", help="also the 20 x 4096^2, memory_limit=1e9 check"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="astrodart-bench-"))
    print(f"machine: {machine()}")
    print(f"work folder: {work}")
    t0 = time.perf_counter()
    files = make_frames(work / "frames", args.nframes, args.size)
    print(
        f"made {len(files)} frames of {args.size}x{args.size} uint16 in {time.perf_counter() - t0:.1f} s"
    )

    results = {}
    for label, method in (
        ("astrodart median+sigclip", "median"),
        ("astrodart average+sigclip", "average"),
    ):
        runs = [
            run_python("astrodart", files, work / f"ad_{method}.fits", method, 1e9)
            for _ in range(args.repeats)
        ]
        results[label] = runs
    siril_runs = []
    for _ in range(args.repeats):
        r = run_siril(work / "frames")
        if r is None:
            break
        siril_runs.append(r)
    if not args.skip_ccdproc:
        results["ccdproc median+sigclip"] = [
            run_python("ccdproc", files, work / "ccdproc.fits", "median", 2e9)
        ]

    def best(runs, key="seconds"):
        return min(r[key] for r in runs)

    def med(runs, key="seconds"):
        return float(np.median([r[key] for r in runs]))

    print(
        "\nresults (seconds = the combine call; process = whole process incl. interpreter start-up)"
    )
    for label, runs in results.items():
        print(
            f"  {label:28s} best {best(runs):6.2f} s  median {med(runs):6.2f} s  "
            f"process best {best(runs, 'process_seconds'):6.2f} s  CPU call/process "
            f"{best(runs, 'cpu_seconds'):5.2f}/{best(runs, 'cpu_process'):5.2f} s  "
            f"peak RSS {_mb(max(r['peak_rss'] for r in runs))}"
        )
    if siril_runs:
        print(
            f"  {'siril-cli rej s 3 3':28s} best {best(siril_runs, 'process_seconds'):6.2f} s  "
            f"median {med(siril_runs, 'process_seconds'):6.2f} s  (whole process; Siril reported "
            f"{siril_runs[0]['siril_reported']})  CPU process {best(siril_runs, 'cpu_process'):5.2f} s  peak RSS {_mb(max(r['peak_rss'] for r in siril_runs))}"
            f"  [{siril_runs[0]['version']}]"
        )
    ours = results["astrodart median+sigclip"]
    if "ccdproc median+sigclip" in results:
        ratio = best(results["ccdproc median+sigclip"]) / best(ours)
        print(f"\n  speed-up vs ccdproc (combine calls): {ratio:.1f}x (target >= 10x)")
        a = fits.getdata(work / "ad_median.fits")
        b = fits.getdata(work / "ccdproc.fits")
        diff = np.abs(a - b)
        print(
            f"  astrodart vs ccdproc pixels: median |diff| {np.median(diff):.3g} ADU, "
            f"99.9th pct {np.percentile(diff, 99.9):.3g} ADU (ccdproc clips once, astrodart iterates)"
        )
    if siril_runs:
        for label in ("astrodart median+sigclip", "astrodart average+sigclip"):
            r1 = best(results[label]) / best(siril_runs, "process_seconds")
            r2 = best(results[label], "process_seconds") / best(siril_runs, "process_seconds")
            r3 = best(results[label], "cpu_process") / best(siril_runs, "cpu_process")
            print(
                f"  {label} / Siril wall: {r1:.2f} (combine call), {r2:.2f} (whole process) "
                f"(target <= 1.5); CPU time (whole process): {r3:.2f}"
            )
    else:
        print("  siril-cli not installed: Siril comparison skipped (apt-get install siril)")

    if args.memory:
        print("\nmemory check: 20 frames of 4096x4096 uint16, memory_limit=1e9")
        big = make_frames(work / "big", 20, 4096, seed=2, simple=True)
        r = run_python("astrodart", big, work / "big_master.fits", "median", 1e9)
        print(
            f"  astrodart: {r['seconds']:.1f} s, peak RSS {_mb(r['peak_rss'])} "
            f"(after imports {_mb(r['rss_before'])}; target < 1500 MB)"
        )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
