"""Command line: reduce one's own night, single jobs on files, the sample night and the guides.

``astrodart reduce NIGHT --out OUT`` (:mod:`astrodart.pipeline.reduce`) reduces a night
folder in any layout; ``astrodart clear OUT`` removes what it wrote; ``astrodart
header|solve|quality|stack|imarith|resample|master-sky ...`` do one job
(:mod:`astrodart.cli_stages`).

``python -m astrodart.cli demo`` (or ``astrodart demo``) lays the raw HAT-P-27b sample
night out under ``uncal_data/180423/`` and runs the guided notebooks on it, which fix the
two header problems of that night (the dome flats are labelled 'Light Frame'; the
science frames have no OBJECT) and sort it into ``reduced_data/180423/HAT-P-27/``
(executed copies and their figures land in ``reduced_data/notebooks/``); it ends with a
table of the science results from the notebooks' summaries and the disk used. Without the real
sample (or with ``--simulated``) it simulates a night with known truth, reduces it end to
end with :func:`astrodart.pipeline.night.reduce_night` and prints the truth-vs-measured table,
and says which night it used.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from astrodart.cli_stages import add_stage_parsers, run_stage_command

__all__ = ["main", "prepare_sample_night", "demo", "run_guides"]

log = logging.getLogger("astrodart")


def prepare_sample_night(root) -> tuple[str, str]:
    """Lay out the HAT-P-27b sample night under ``root`` and organise it.

    The camera labelled the dome flats 'Light Frame' (only their file names say
    'dome_flat') and wrote no OBJECT; both are fixed with explicit, logged header
    edits on the copies in ``root/uncal_data`` (the shared originals are untouched).

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder; the night goes to ``root/uncal_data/180423/``.

    Returns
    -------
    data_dir : str
        ``root/reduced_data/180423/HAT-P-27/``.
    date : str
        The night folder name.
    """
    from astrodart.datasets.samples import SAMPLES, sample_night
    from astrodart.frames.header import FrameHeader
    from astrodart.utils import data_organiser, header_tools

    root = Path(root)
    info = SAMPLES["hatp27b"]
    night = sample_night("hatp27b", root)
    files = sorted(p for p in night.iterdir() if p.is_file())
    flats = [p for p in files if "dome_flat" in p.name and FrameHeader.from_file(p).frame_type != "flat"]
    if flats:
        header_tools(flats, {"IMAGETYP": "Flat Field"}).update_header_values()
    science = [p for p in files if "science" in p.name and FrameHeader.from_file(p).object is None]
    if science:
        header_tools(science, {"OBJECT": info.target}).append_header_key()
    org = data_organiser(root / "uncal_data", root / "reduced_data", info.date, info.target)
    org.run()
    return org.get_directory(), info.date


def run_guides(root, names=None) -> int:
    """Execute the guided notebooks headless on the data tree under ``root``.

    Parameters
    ----------
    root : str or pathlib.Path
        Folder holding ``uncal_data/`` and ``reduced_data/``.
    names : sequence of str, optional
        Notebooks to run (default: all of :data:`astrodart.ui.notebooks.NOTEBOOKS`, in order).

    Returns
    -------
    int
        0 when every notebook ran to the end, 1 otherwise (the failing cell is printed and
        the executed copy is kept for reading).
    """
    from astrodart.ui.notebooks import NOTEBOOKS, run_notebook

    status = 0
    for name in names or NOTEBOOKS:
        try:
            run = run_notebook(name, root)
        except Exception as exc:  # report, keep going: the other notebooks are independent
            print(f"notebook {name}: FAILED\n{exc}", file=sys.stderr)
            status = 1
            continue
        print(f"notebook {name}: ran in {run.seconds:.0f} s -> {run.executed} "
              f"({len(run.figures)} figures in {run.executed.parent / (name + '_figures')})")
    return status


def demo(root, notebooks=True, simulated=False, keep_intermediate=False) -> int:
    """Run the main job under ``root``; return an exit code.

    With the real sample night available: copy the RAW night and run the guided notebooks
    on it (they repair its headers and organise it themselves), then print the science
    results of their summaries and the disk used against the raw size. Without it (a
    fresh machine with no copy of the sample data and no way to download it), or with
    ``simulated``: reduce the simulated night end to end and compare with its truth.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder that receives ``uncal_data/`` and ``reduced_data/``.
    notebooks : bool
        Run the guided notebooks after organising the real night.
    simulated : bool
        Use the simulated night even if the real sample can be had.
    keep_intermediate : bool
        Keep every intermediate file. By default, after the notebooks, what no product
        needs is deleted (:func:`remove_intermediate`: aligned frames once stacked, the
        organised raw copies once calibrated, the detector lab's frame folders) and the
        demo says what went and how to get it back.

    Returns
    -------
    int
        0 on success; 1 if a notebook failed or a truth check of the simulated night failed.
    """
    from astrodart.datasets.samples import SampleDataNotFound, sample_night

    t0 = time.time()
    if simulated:
        print("using the SIMULATED night (requested with --simulated)")
        return demo_simulated(root, keep_intermediate)
    try:
        if not notebooks:
            data_dir, _ = prepare_sample_night(root)
            print(f"using the REAL sample night (HAT-P-27b, 2018-04-23); organised in "
                  f"{time.time() - t0:.1f} s: {data_dir}")
            return 0
        # the RAW night: the notebooks repair its headers and organise it themselves
        night = sample_night("hatp27b", root)
    except SampleDataNotFound as exc:
        print(f"real sample night not available ({exc})\nusing the SIMULATED night instead")
        return demo_simulated(root, keep_intermediate)
    print(f"using the REAL sample night (HAT-P-27b, 2018-04-23), raw frames in {night}")
    status = run_guides(root)
    from astrodart.ui.notebooks import science_results_table

    print("\n" + science_results_table(root))
    _tidy(root, keep_intermediate)
    return status


def _tidy(root, keep_intermediate: bool) -> None:
    """Remove the intermediates (unless kept), saying what went, how to get it back, and
    the disk used against the raw nights the demo laid out in ``uncal_data/``."""
    from astrodart.pipeline.tidy import disk_usage, remove_intermediate

    if keep_intermediate:
        print("\nintermediates kept (--keep-intermediate)")
    else:
        print("\n" + "\n".join(remove_intermediate(root).lines() or ["no intermediates to remove"]))
    raw, products = disk_usage(root, Path(root) / "uncal_data")
    print(f"disk: raw nights (uncal_data/) {raw / 1e6:.0f} MB; uncal_data/ + reduced_data/ "
          f"{products / 1e6:.0f} MB ({products / max(raw, 1):.1f} x the raw size)")


def demo_simulated(root, keep_intermediate: bool = False) -> int:
    """Simulate a night under ``root`` (unless one is there), reduce it in plain Python and
    print truth vs measured, then remove the intermediates unless ``keep_intermediate``;
    the exit code is 1 if a check of the table failed."""
    from astrodart.pipeline.night import NIGHT_STEPS
    from astrodart.pipeline.simulated import simulated_night_report
    from astrodart.ui.lightcurve_plot import LIGHTCURVE_FIGURE

    report = simulated_night_report(root, steps=NIGHT_STEPS + (LIGHTCURVE_FIGURE,))
    print(report)
    _tidy(root, keep_intermediate)
    return 0 if _all_passed(report) else 1


def _all_passed(report: str) -> bool:
    """Whether the report's 'N of M checks passed' line has N == M."""
    for line in report.splitlines():
        if line.endswith("checks passed"):
            n_ok, _, n = line.split()[:3]
            return n_ok == n
    return False


def _reduce_parser(sub) -> None:
    """``astrodart reduce``: its options are the fields of ReduceOptions (one list)."""
    import dataclasses

    from astrodart.pipeline.reduce_options import REDUCE_STEPS, ReduceOptions

    p = sub.add_parser("reduce", help="reduce your own night: NIGHT folder -> OUT (data tree "
                                      "and results/)", argument_default=argparse.SUPPRESS)
    p.add_argument("night", nargs="?", help="the raw night folder (never written)")
    p.add_argument("--out", "-o", help="output folder: the data tree and results/")
    p.add_argument("--config", help="TOML settings file (the command line overrides it)")
    p.add_argument("--write-config", metavar="FILE",
                   help="write this run's full settings as TOML to FILE (and run)")
    for f in dataclasses.fields(ReduceOptions):
        if f.name in ("night", "out"):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"]
        if f.type in ("bool", bool):
            action = "store_false" if flag.startswith("--no-") else "store_true"
            p.add_argument(flag, dest=f.name, action=action, help=help_)
        elif f.type in ("list",):
            p.add_argument(flag, dest=f.name, action="append", help=help_ + " (repeatable)")
        elif f.name in ("start", "stop", "only"):
            p.add_argument(flag, dest=f.name, choices=REDUCE_STEPS, help=help_)
        else:
            kind = {"float | None": float, "int | None": int}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=kind, help=help_,
                           metavar=f.metadata.get("metavar"))
    p.add_argument("-v", "--verbose", action="store_true", default=False)


def _reduce_command(args) -> int:
    """Run ``astrodart reduce`` from parsed arguments; the exit status."""
    from astrodart.pipeline.reduce import reduce
    from astrodart.pipeline.reduce_options import ReduceOptions, UsageError

    given = {k: v for k, v in vars(args).items()
             if k not in ("command", "config", "write_config", "verbose")}
    try:
        options = (ReduceOptions.from_config(args.config, **given) if "config" in args
                   else ReduceOptions(**given))
        if "write_config" in args:
            Path(args.write_config).write_text(options.to_toml())
            print(f"settings written to {args.write_config}")
        run = reduce(options)
    except UsageError as exc:
        print(f"astrodart reduce: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the run failed: say where, exit 1
        log.debug("reduce failed", exc_info=True)
        print(f"astrodart reduce: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if options.dry_run:
        return 0
    ok = _diagnostics(run) if options.png else True
    return 0 if _all_products(run) and ok else 1


def _diagnostics(run) -> bool:
    """``--png``: the night's diagnostics into ``OUT/results/diagnostics/`` with their
    captions in ``summary.json`` (:mod:`astrodart.ui.night_diagnostics`); False if they
    failed on calibrated frames."""
    from astrodart.ui.night_diagnostics import night_diagnostics, record_diagnostics

    result = run.result
    if not any(result.calibrated.values()):
        print("diagnostics (--png): none, no calibrated frames in this run")
        return True
    results = Path(result.root) / "results"
    try:
        dx = night_diagnostics(result.data_dir, results / "diagnostics")
        run.summary = record_diagnostics(results / "summary.json", dx)
    except Exception as exc:  # the reduction stands; say what is missing
        log.debug("diagnostics failed", exc_info=True)
        print(f"astrodart reduce: no diagnostics: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    run.products.update({f"diagnostics_{k}": Path(v["file"]) for k, v in dx.figures.items()
                         if v.get("file")})
    print(f"diagnostics (--png): {len(dx.figures)} figures in {dx.folder} (captions in "
          "summary.json)")
    if dx.noise is not None:
        print(f"  noise: measured / CCD equation {dx.noise.median_ratio:.3f} (median of "
              f"{dx.noise.ratio.size} stars over {dx.noise.n_frames} frames)")
    return True


def _all_products(run) -> bool:
    """Whether every product the chosen steps make was written."""
    names = set(run.options.steps())
    want = {"stack": [f"stack_{f}" for f in run.result.filters] if run.options.stack else [],
            "quality": ["quality"], "lightcurve": ["lightcurve"], "transit": ["transit"]}
    has_target = run.result.target_coord is not None or run.options.target_xy is not None
    missing = [p for step, products in want.items() if step in names
               and (has_target or step not in ("lightcurve", "transit"))
               for p in products if p not in run.products]
    if missing:
        print(f"astrodart reduce: products not made: {', '.join(missing)}", file=sys.stderr)
    return not missing


def _clear_command(args) -> int:
    from astrodart.pipeline.reduce import clear_output

    try:
        removed, kept = clear_output(args.out)
    except FileNotFoundError as exc:
        print(f"astrodart clear: error: {exc}", file=sys.stderr)
        return 2
    print(f"removed {len(removed)} files astrodart wrote in {args.out}")
    if kept:
        print(f"kept {len(kept)} other files: " + ", ".join(str(p) for p in kept[:10]))
    return 0


def main(argv=None) -> int:
    """Entry point of the ``astrodart`` command.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success.
    """
    parser = argparse.ArgumentParser(prog="astrodart", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="reduce the real sample night (HAT-P-27b) end to end")
    p.add_argument("--root", default=".", help="project folder holding uncal_data/ and reduced_data/")
    p.add_argument("--no-notebooks", action="store_true",
                   help="only lay out and organise the night; do not run the guided notebooks")
    p.add_argument("--simulated", action="store_true",
                   help="reduce a simulated night with known truth (printed against the "
                        "measurements) even if the real sample night is available")
    p.add_argument("--keep-intermediate", action="store_true",
                   help="keep the aligned frames, the organised copies of raw frames and the "
                        "detector lab's frame folders (by default deleted after the notebooks "
                        "once what replaces them exists; calibrated frames, masters, stacks "
                        "and figures always stay)")
    p.add_argument("--remove-intermediate", action="store_true",
                   help=argparse.SUPPRESS)  # the default now; accepted for older scripts
    p.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("notebooks", help="run guided notebooks headless on an existing data tree")
    q.add_argument("names", nargs="*", help="notebooks to run (default: all, in order)")
    q.add_argument("--root", default=".", help="project folder holding uncal_data/ and reduced_data/")
    q.add_argument("-v", "--verbose", action="store_true")
    _reduce_parser(sub)
    c = sub.add_parser("clear", help="remove what astrodart reduce wrote in OUT (only that)")
    c.add_argument("out", help="an output folder of astrodart reduce")
    c.add_argument("-v", "--verbose", action="store_true")
    add_stage_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import astropy  # noqa: F401  (its logger class must exist before we look it up)

    for name in ("astropy", "astroquery"):  # they print their own warnings: not twice
        logging.getLogger(name).propagate = False
    if args.command == "demo":
        return demo(args.root, notebooks=not args.no_notebooks, simulated=args.simulated,
                    keep_intermediate=args.keep_intermediate)
    if args.command == "notebooks":
        return run_guides(args.root, args.names or None)
    if args.command == "reduce":
        return _reduce_command(args)
    if args.command == "clear":
        return _clear_command(args)
    return run_stage_command(args)


if __name__ == "__main__":
    sys.exit(main())
