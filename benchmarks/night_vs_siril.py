"""Benchmark: a whole night to the stack, ``astrodart reduce`` against Siril, side by side.

Stand-alone (never run as a test)::

    python benchmarks/night_vs_siril.py [--data ../shared/data/hatp27b_sbu_180423]
                                        [--work /tmp] [--keep]

Decompresses the HAT-P-27b night (10 bias, 10 darks, 10 dome flats, 100 lights; the
sample folder is only read) into a temporary folder outside the repository, then runs,
one after the other in this one run:

(a) ``astrodart reduce FRAMES --out OUT --stop stack --no-progress`` on the folder of the
    130 decompressed frames (organise, masters, calibrate + cosmics, quality, astrometry
    attempt, align, stack), in its own process;
(b) Siril's own standard mono script (``/usr/share/siril/scripts/Mono_Preprocessing.ssf``
    of the Debian ``siril`` package: convert, stack bias, stack darks, preprocess and stack
    flats, preprocess lights, register, stack) with ``siril-cli -s``, on hard links of the
    same decompressed files sorted into ``biases/ darks/ flats/ lights/``.

Prints the machine (CPU model, cores, RAM, load average), both wall times (whole process,
start-up included) and CPU times (user + system of the process and its children), their
ratio, the memory peaks (the whole process tree sampled every 0.1 s; the largest single
process), and astrodart's per-step times (``OUT/results/summary.json`` ``timings``). Skips (b)
with a message when ``siril-cli`` is not installed (``apt-get install siril``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hatp27b_sbu_180423"
SIRIL_SCRIPT = Path("/usr/share/siril/scripts/Mono_Preprocessing.ssf")
#: file-name token -> Siril's folder for that frame type
KINDS = {"bias_frame": "biases", "dark_frame": "darks", "dome_flat": "flats",
         "science_exposures": "lights"}


def machine() -> str:
    """CPU model, cores, RAM and OS, one line."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        ram = f"{mem / 1024 ** 2:.1f} GiB RAM"
    except (OSError, StopIteration):
        ram = "RAM unknown"
    return (f"{model}, {os.cpu_count()} cores, {ram}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def decompress(data: Path, dest: Path) -> dict[str, list[Path]]:
    """Decompress the night's frames into ``dest/frames``; hard-link them into Siril's
    folders; return the files per Siril folder."""
    frames = dest / "frames"
    frames.mkdir(parents=True)
    out: dict[str, list[Path]] = {k: [] for k in KINDS.values()}
    for src in sorted(data.glob("*.FIT.gz")):
        kind = next((v for k, v in KINDS.items() if k in src.name), None)
        if kind is None:
            continue
        target = frames / src.name[:-3].replace(".BIAS.FIT", ".FIT").replace(".DARK.FIT", ".FIT")
        with gzip.open(src, "rb") as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        out[kind].append(target)
    for kind, files in out.items():
        folder = dest / "siril" / kind
        folder.mkdir(parents=True)
        for f in files:
            os.link(f, folder / f.name.replace(".FIT", ".fit"))
    return out


def _tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of process ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d.name))
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total / 1e6


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, float, float, str]:
    """Run ``cmd``: wall time, CPU time (user + system of it and its children), the peak of
    the sampled resident memory of its whole process tree (MB, every 0.1 s; shared pages
    counted once per process), the largest single process's peak (MB, ``ru_maxrss`` of the
    waited-for children), and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    peak = 0.0
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.1)
        reader.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print("".join(out)[-3000:])
        raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode})")
    return wall, cpu, peak, after.ru_maxrss / 1e3, "".join(out)


def run_astrodart(frames: Path, out: Path) -> tuple[float, float, dict, float, float]:
    """``astrodart reduce`` to the stack; wall, CPU, summary.json and the memory peaks."""
    exe = shutil.which("astrodart")
    cmd = ([exe] if exe else [sys.executable, "-m", "astrodart.cli"]) + [
        "reduce", str(frames), "--out", str(out), "--stop", "stack", "--no-progress"]
    print(f"\n(a) {' '.join(cmd)}   [load average {os.getloadavg()[0]:.1f}]", flush=True)
    wall, cpu, peak, largest, _ = timed(cmd)
    summary = json.loads((out / "results" / "summary.json").read_text())
    return wall, cpu, summary, peak, largest


def run_siril(workdir: Path) -> tuple[float, float, float, float] | None:
    """Siril's standard mono script on ``workdir``; wall and CPU, or None without Siril."""
    exe = shutil.which("siril-cli")
    if exe is None:
        print("\n(b) Siril skipped: siril-cli is not installed (Debian/Ubuntu: "
              "apt-get install siril)")
        return None
    script = workdir / "Mono_Preprocessing.ssf"
    if SIRIL_SCRIPT.exists():
        shutil.copy(SIRIL_SCRIPT, script)
    else:
        raise SystemExit(f"{SIRIL_SCRIPT} not found: the siril package installs it")
    cmd = [exe, "-d", str(workdir), "-s", str(script)]
    print(f"\n(b) {' '.join(cmd)}   [load average {os.getloadavg()[0]:.1f}]", flush=True)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    wall, cpu, peak, largest, text = timed(cmd, cwd=workdir)
    if not (workdir / "result.fit").exists():
        print(text[-3000:])
        raise SystemExit("Siril wrote no result.fit")
    registered = [ln for ln in text.splitlines() if "registered" in ln.lower()]
    print(f"    {version}; {registered[-1].strip() if registered else ''}")
    return wall, cpu, peak, largest


def report(a: tuple, s: tuple | None) -> None:
    """Print the times, the memory peaks, the ratio and astrodart's steps."""
    wall, cpu, summary, peak, largest = a
    frames = summary.get("frames", {})
    print(f"\nastrodart reduce --stop stack: {wall:.1f} s wall, {cpu:.1f} s CPU, memory peak "
          f"{peak:.0f} MB (whole process tree, sampled), largest process {largest:.0f} MB "
          f"(frames: {', '.join(f'{k} {frames[k]}' for k in ('bias', 'dark', 'flat', 'light') if k in frames)})")
    timings = summary.get("timings", {})
    for step, t in timings.items():
        print(f"    {step:<12} {t:7.2f} s")
    print(f"    {'(outside)':<12} {wall - sum(timings.values()):7.2f} s  start-up, plan, summary")
    if s is not None:
        print(f"Siril Mono_Preprocessing:      {s[0]:.1f} s wall, {s[1]:.1f} s CPU, memory "
              f"peak {s[2]:.0f} MB")
        print(f"ratio astrodart / Siril: {wall / s[0]:.2f} (wall), {cpu / s[1]:.2f} (CPU)")


def main(argv=None) -> None:
    """Decompress, run both, report, clean up."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the HAT-P-27b sample folder")
    ap.add_argument("--work", type=Path, default=None,
                    help="parent of the scratch folder (default: the system temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: not a folder (the hatp27b_sbu_180423 sample night)")
    tmp = Path(tempfile.mkdtemp(prefix="night_vs_siril_", dir=args.work))
    if REPO in tmp.resolve().parents:
        raise SystemExit(f"--work {args.work}: the scratch folder must be outside the repository")
    try:
        print(f"machine: {machine()}")
        files = decompress(args.data, tmp)
        print(f"decompressed into {tmp}: " + ", ".join(f"{len(v)} {k}" for k, v in files.items()))
        a = run_astrodart(tmp / "frames", tmp / "astrodart_out")
        s = run_siril(tmp / "siril")
        report(a, s)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
