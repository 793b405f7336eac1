"""Command line: the one-command reduction of the sample night, for scripts and observatories.

``python -m astrodart.cli demo`` (or ``astrodart demo``) lays the real HAT-P-27b sample
night out under ``uncal_data/180423/``, fixes the two header problems of that night
(the dome flats are labelled 'Light Frame'; the science frames have no OBJECT), sorts
the night into ``reduced_data/180423/HAT-P-27/`` and runs the guided notebooks on it
(executed copies and their figures land in ``reduced_data/notebooks/``). Without the real
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


def demo(root, notebooks=True, simulated=False) -> int:
    """Run the main job under ``root``; return an exit code.

    With the real sample night available: lay it out, fix its headers, organise it and run
    the guided notebooks on it. Without it (a fresh machine with no copy of the sample
    data and no way to download it), or with ``simulated``: reduce the simulated night end
    to end and compare with its truth.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder that receives ``uncal_data/`` and ``reduced_data/``.
    notebooks : bool
        Run the guided notebooks after organising the real night.
    simulated : bool
        Use the simulated night even if the real sample can be had.

    Returns
    -------
    int
        0 on success; 1 if a notebook failed or a truth check of the simulated night failed.
    """
    from astrodart.datasets.samples import SampleDataNotFound

    t0 = time.time()
    if simulated:
        print("using the SIMULATED night (requested with --simulated)")
        return demo_simulated(root)
    try:
        data_dir, _ = prepare_sample_night(root)
    except SampleDataNotFound as exc:
        print(f"real sample night not available ({exc})\nusing the SIMULATED night instead")
        return demo_simulated(root)
    print(f"using the REAL sample night (HAT-P-27b, 2018-04-23); organised in "
          f"{time.time() - t0:.1f} s: {data_dir}")
    if not notebooks:
        return 0
    return run_guides(root)


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
    p.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("notebooks", help="run guided notebooks headless on an existing data tree")
    q.add_argument("names", nargs="*", help="notebooks to run (default: all, in order)")
    q.add_argument("--root", default=".", help="project folder holding uncal_data/ and reduced_data/")
    q.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return demo(args.root, notebooks=not args.no_notebooks, simulated=args.simulated)
    if args.command == "notebooks":
        return run_guides(args.root, args.names or None)
    return 2


if __name__ == "__main__":
    sys.exit(main())
