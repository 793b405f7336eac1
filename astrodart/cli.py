"""Command line: the one-command reduction of the sample night, for scripts and observatories.

``python -m astrodart.cli demo`` (or ``astrodart demo``) lays the real HAT-P-27b sample
night out under ``uncal_data/180423/``, fixes the two header problems of that night
(the dome flats are labelled 'Light Frame'; the science frames have no OBJECT), sorts
the night into ``reduced_data/180423/HAT-P-27/`` and runs the reduction stages.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main", "prepare_sample_night"]

log = logging.getLogger("astrodart")


def prepare_sample_night(root) -> tuple[str, str]:
    """Lay out the HAT-P-27b sample night under ``root`` and organise it.

    The camera labelled the dome flats 'Light Frame' (only their file names say
    'dome_flat') and wrote no OBJECT; both are fixed with explicit, logged header
    edits on the copies in ``root/uncal_data`` (the shared originals are untouched).

    Returns
    -------
    data_dir : str
        ``root/reduced_data/180423/HAT-P-27/``.
    date : str
        The night folder name.
    """
    from .datasets import SAMPLES, sample_night
    from .headers import FrameHeader
    from .utils import data_organiser, header_tools

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


def demo(root) -> int:
    """Run the main job on the sample night under ``root``; return an exit code."""
    t0 = time.time()
    data_dir, _ = prepare_sample_night(root)
    print(f"organised in {time.time() - t0:.1f} s: {data_dir}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``astrodart`` command."""
    parser = argparse.ArgumentParser(prog="astrodart", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="reduce the real sample night (HAT-P-27b) end to end")
    p.add_argument("--root", default=".", help="project folder holding uncal_data/ and reduced_data/")
    p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return demo(args.root)
    return 2


if __name__ == "__main__":
    sys.exit(main())
