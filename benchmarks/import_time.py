"""Benchmark: how long ``import astrodart`` and ``import astrodart.utils`` take (issue 20).

Stand-alone (never run as a test)::

    python benchmarks/import_time.py [--runs 5] [--no-cache-only] [--compare FOLDER]

Each statement is run in ``--runs`` fresh interpreters (round robin, so that a change of
machine load hits every statement alike) and reported as the median of:

- ``wall``: the wall time of ``python -c STATEMENT`` minus that of ``python -c pass``
  (interpreter start-up and ``site`` removed);
- ``CPU``: the same for the CPU time (user + system) of the interpreter, less sensitive to
  the other processes of a loaded machine;
- ``importtime``: the cumulative times ``python -X importtime`` gives the outermost imports
  the statement made (what the import itself costs, start-up excluded).

Two settings, because they differ by the compilation of astrodart's own sources:

- ``no bytecode cache``: as this checkout runs when ``PYTHONDONTWRITEBYTECODE`` is set (the
  sources are compiled on every import);
- ``bytecode cache``: as an installed package runs (``pip install`` writes the ``.pyc``
  files); the cache goes to a temporary folder (``PYTHONPYCACHEPREFIX``), never into the
  checkout, and is warmed by one untimed run first.

The issue-20 target is at most 0.3 s for ``import astrodart`` and ``import astrodart.utils``.
``from astrodart.utils import *`` (which resolves every name of ``__all__`` and so loads
astropy's FITS reader) is printed for information. ``--compare FOLDER`` measures the
astrodart package in FOLDER too (e.g. a copy from before a change), interleaved with
this checkout's in the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (label, statement)
STATEMENTS = (
    ("import astrodart", "import astrodart"),
    ("import astrodart.utils", "import astrodart.utils"),
    ("from astrodart.utils import *", "from astrodart.utils import *"),
)
TARGET_S = 0.3


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _run(code: str, env: dict, cwd: Path = REPO, importtime: bool = False) -> tuple[float, float, str]:
    """Run ``python -c code`` in a fresh interpreter in ``cwd`` (so that ``cwd``'s astrodart
    is the one imported); wall time, CPU time and stderr."""
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-c", code]
    t0, c0 = time.perf_counter(), _cpu()
    proc = subprocess.run(cmd, check=False, env=env, cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode:
        raise RuntimeError(f"{code!r} in {cwd} failed:\n{proc.stderr[-2000:]}")
    return wall, cpu, proc.stderr


def _top_level(stderr: str) -> list[tuple[str, float]]:
    """The outermost imports of a ``-X importtime`` report: ``(module, cumulative seconds)``."""
    return [(m[2], int(m[1]) / 1e6) for m in
            re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| (\S+)$", stderr, re.MULTILINE)]


def _import_seconds(stderr: str, start_up: set[str]) -> float:
    """Cumulative ``-X importtime`` seconds of every outermost import the statement made
    (``from m import *`` of a lazy module imports its names' homes as separate top-level
    entries), the start-up's own imports (``site`` ...) excluded."""
    return sum(t for name, t in _top_level(stderr) if name not in start_up)


def measure(env: dict, runs: int, trees: dict[str, Path]) -> dict[tuple[str, str], tuple]:
    """Median wall time, CPU time (start-up removed) and importtime of each statement.

    Parameters
    ----------
    env : dict
        The environment of the interpreters.
    runs : int
        Fresh interpreters per statement and tree.
    trees : dict
        ``{name: folder holding an astrodart package}``; measured round robin, so that a
        change of machine load hits every tree alike.

    Returns
    -------
    dict
        ``{(tree, label): (wall_s, cpu_s, importtime_s)}``; the start-up itself under the
        label ``"(python -c pass)"``.
    """
    start_up = {name for name, _ in _top_level(_run("pass", env, importtime=True)[2])}
    rows = [("(python -c pass)", "pass")] + list(STATEMENTS)
    samples = {(t, label): ([], [], []) for t in trees for label, _ in rows}
    for _ in range(runs):
        for tree, cwd in trees.items():
            for label, code in rows:
                wall, cpu, _err = _run(code, env, cwd)
                itime = _import_seconds(_run(code, env, cwd, importtime=True)[2], start_up)
                for store, value in zip(samples[tree, label], (wall, cpu, itime)):
                    store.append(value)
    med = {key: tuple(statistics.median(v) for v in vals) for key, vals in samples.items()}
    out = {}
    for (tree, label), (wall, cpu, itime) in med.items():
        w0, c0, _ = med[tree, "(python -c pass)"]
        out[tree, label] = (wall, cpu, itime) if label.startswith("(") else (wall - w0, cpu - c0, itime)
    return out


def _machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def _settings(pyc: str, no_cache_only: bool, trees: dict[str, Path]) -> list[tuple[str, dict]]:
    settings = [("no bytecode cache", {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})]
    if not no_cache_only:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        settings.append(("bytecode cache", cached | {"PYTHONPYCACHEPREFIX": pyc}))
        for cwd in trees.values():
            _run("from astrodart.utils import *", settings[-1][1], cwd)  # warm the cache
    return settings


def main(argv=None) -> int:
    """Print the import times of both settings; exit 1 when a target is missed.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        0 when ``import astrodart`` and ``import astrodart.utils`` of this checkout take at
        most 0.3 s (wall, start-up removed) in both settings, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per statement")
    parser.add_argument("--no-cache-only", action="store_true",
                        help="only the setting without bytecode cache")
    parser.add_argument("--compare", type=Path, metavar="FOLDER",
                        help="also measure the astrodart package in FOLDER (e.g. an older "
                             "copy), side by side in the same run")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    trees = {"this checkout": REPO}
    if args.compare is not None:
        if not (args.compare / "astrodart" / "__init__.py").is_file():
            parser.error(f"--compare {args.compare}: no astrodart/__init__.py in that folder")
        trees["compared"] = args.compare.resolve()
    print(f"machine: {_machine()}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="astrodart_pyc_") as pyc:
        for name, env in _settings(pyc, args.no_cache_only, trees):
            print(f"\n{name} (median of {args.runs} fresh interpreters):")
            print(f"  {'tree':14s} {'statement':32s} {'wall':>9s} {'CPU':>9s} {'-X importtime':>14s}")
            for (tree, label), (wall, cpu, itime) in measure(env, args.runs, trees).items():
                mark = ""
                if tree == "this checkout" and label in ("import astrodart", "import astrodart.utils"):
                    within = wall <= TARGET_S
                    ok &= within
                    mark = "  ok" if within else f"  OVER {TARGET_S} s"
                print(f"  {tree:14s} {label:32s} {wall:7.3f} s {cpu:7.3f} s {itime:12.3f} s{mark}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
