"""Command line: the one-command reduction of the sample night, for scripts and observatories.

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

__all__ = ["main", "prepare_sample_night", "demo", "run_guides", "remove_intermediate",
           "disk_usage"]

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


def demo(root, notebooks=True, simulated=False, remove_intermediates=False) -> int:
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
    remove_intermediates : bool
        After the notebooks, delete what later steps do not need
        (:func:`remove_intermediate`).

    Returns
    -------
    int
        0 on success; 1 if a notebook failed or a truth check of the simulated night failed.
    """
    from astrodart.datasets.samples import SampleDataNotFound, sample_night

    t0 = time.time()
    if simulated:
        print("using the SIMULATED night (requested with --simulated)")
        return demo_simulated(root)
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
        return demo_simulated(root)
    print(f"using the REAL sample night (HAT-P-27b, 2018-04-23), raw frames in {night}")
    status = run_guides(root)
    from astrodart.ui.notebooks import science_results_table

    print("\n" + science_results_table(root))
    if remove_intermediates:
        removed = remove_intermediate(root)
        print(f"\nremoved {len(removed[0])} intermediate files ({removed[1] / 1e6:.0f} MB)")
    raw, products = disk_usage(root, night)
    print(f"disk: raw night {raw / 1e6:.0f} MB; uncal_data/ + reduced_data/ "
          f"{products / 1e6:.0f} MB ({products / raw:.1f} x the raw size)")
    return status


def disk_usage(root, night) -> tuple[int, int]:
    """Disk used by a demo run, against the raw night it started from.

    Parameters
    ----------
    root : str or pathlib.Path
        The project folder holding ``uncal_data/`` and ``reduced_data/``.
    night : str or pathlib.Path
        The raw night folder (``uncal_data/YYMMDD/``).

    Returns
    -------
    raw_bytes : int
        Bytes of the files in ``night``.
    total_bytes : int
        Bytes of the files in ``root/uncal_data`` and ``root/reduced_data`` together.
    """
    def size(folder):
        return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    root = Path(root)
    return size(night), size(root / "uncal_data") + size(root / "reduced_data")


def remove_intermediate(root) -> tuple[list, int]:
    """Delete the products of a demo run that no later step needs; only files astrodart wrote.

    Removed, each only when what replaces it exists: the aligned frames
    (``<night>/aligned/``) once a stack is in ``<night>/stacks/``; the organised copies of
    the raw frames (``<night>/{bias,dark,flat,object}/``, byte-for-byte the files of
    ``uncal_data/<date>/``, so a new ``data_organiser`` run restores them) once the
    calibrated frames and the masters are in ``<night>/<filter>/`` and
    ``<night>/calibration/``; the detector lab's bias-subtracted and calibrated frame
    folders (its masters and bad-pixel maps stay). Calibrated frames, masters, stacks,
    tables, figures and notebooks are kept.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder holding ``uncal_data/`` and ``reduced_data/``.

    Returns
    -------
    removed : list of pathlib.Path
        The files deleted.
    nbytes : int
        Their total size.
    """
    from astrodart.pipeline.organise import get_directory

    root = Path(root)
    doomed = []
    for night in sorted(p for p in (root / "reduced_data").glob("[0-9]" * 6 + "/*") if p.is_dir()):
        if any((night / "stacks").glob("*.fit*")):
            doomed += (night / "aligned").rglob("aligned_*.fit*")
        tree = get_directory(str(night) + "/")
        _, final, _ = tree.science_final()
        raw_dir = root / "uncal_data" / night.parent.name
        if final and all(final) and tree.calibration():
            for kind in ("bias", "dark", "flat", "object"):
                doomed += [p for p in (night / kind).rglob("*") if p.is_file()
                           and (raw_dir / p.name).is_file()
                           and p.stat().st_size == (raw_dir / p.name).stat().st_size]
    lab = root / "reduced_data" / "detector_lab"
    for sub in ("dark", "flat", "science_bias_dark", "science_calibrated"):
        doomed += (p for p in lab.glob(f"*/{sub}/*.fit*") if p.is_file())
    nbytes = 0
    for p in doomed:
        nbytes += p.stat().st_size
        p.unlink()
    return doomed, nbytes


def demo_simulated(root) -> int:
    """Simulate a night under ``root`` (unless one is there), reduce it in plain Python and
    print truth vs measured; the exit code is 1 if a check of the table failed."""
    from astrodart.pipeline.night import NIGHT_STEPS
    from astrodart.pipeline.simulated import simulated_night_report
    from astrodart.ui.lightcurve_plot import LIGHTCURVE_FIGURE

    report = simulated_night_report(root, steps=NIGHT_STEPS + (LIGHTCURVE_FIGURE,))
    print(report)
    return 0 if _all_passed(report) else 1


def _all_passed(report: str) -> bool:
    """Whether the report's 'N of M checks passed' line has N == M."""
    for line in report.splitlines():
        if line.endswith("checks passed"):
            n_ok, _, n = line.split()[:3]
            return n_ok == n
    return False


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
    p.add_argument("--remove-intermediate", action="store_true",
                   help="after the notebooks, delete aligned frames (once stacked), the organised "
                        "copies of raw frames (once calibrated) and the detector lab's frame "
                        "folders; calibrated frames, masters, stacks and figures stay")
    p.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("notebooks", help="run guided notebooks headless on an existing data tree")
    q.add_argument("names", nargs="*", help="notebooks to run (default: all, in order)")
    q.add_argument("--root", default=".", help="project folder holding uncal_data/ and reduced_data/")
    q.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return demo(args.root, notebooks=not args.no_notebooks, simulated=args.simulated,
                    remove_intermediates=args.remove_intermediate)
    if args.command == "notebooks":
        return run_guides(args.root, args.names or None)
    return 2


if __name__ == "__main__":
    sys.exit(main())
