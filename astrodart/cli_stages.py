"""Command line, layer 5: single jobs on files (``astrodart header|solve|quality|stack``).

Each command is one stage call of the guides on the files named, for a user who wants
one job done from the shell:

* ``astrodart header FILES --set KEY=VALUE [--dry-run]``: :class:`header_tools` (an
  explicit, logged edit; the old value goes to HISTORY);
* ``astrodart solve FILES``: offline plate solving (:class:`astrodart.pipeline.solve.astrometry`),
  the WCS written into each solved file;
* ``astrodart quality FILES [-o TABLE.ecsv]``: the per-frame quality table;
* ``astrodart stack FILES -o OUT.fits``: one stack (:class:`image_combination`) of
  frames already aligned.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_stage_parsers", "run_stage_command"]


def add_stage_parsers(sub) -> None:
    """Add the single-job commands to the ``astrodart`` argument parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The parser's sub-commands.
    """
    h = sub.add_parser("header", help="set header keywords in FITS files (logged in HISTORY)")
    h.add_argument("files", nargs="+")
    h.add_argument("--set", dest="cards", action="append", required=True, metavar="KEY=VALUE",
                   help="keyword and value (repeatable); numbers are written as numbers")
    h.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    s = sub.add_parser("solve", help="plate-solve FITS files offline; write the WCS into each")
    s.add_argument("files", nargs="+")
    s.add_argument("--fwhm", type=float, help="star FWHM in pixels (default: measured)")
    s.add_argument("--scale", type=float, help="pixel scale in arcsec/px, when known")
    q = sub.add_parser("quality", help="per-frame quality table (FWHM, sky, stars, flags)")
    q.add_argument("files", nargs="+")
    q.add_argument("-o", "--out", help="write the table as ECSV here")
    k = sub.add_parser("stack", help="stack aligned frames into one FITS file")
    k.add_argument("files", nargs="+")
    k.add_argument("-o", "--out", required=True, help="the stack (FITS)")
    k.add_argument("--method", default="median", choices=("median", "average", "sum"))
    k.add_argument("--clip", default=None, choices=("sigclip", "extrema_clipping", "minmax"))
    for p in (h, s, q, k):
        p.add_argument("-v", "--verbose", action="store_true")


def _value(text: str):
    """A header value from text: int, float, T/F, or the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"T": True, "F": False}.get(text, text)


def _existing(files) -> list[str]:
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing[:5])}")
    return [str(f) for f in files]


def _header(args) -> int:
    from astrodart.pipeline.headers import header_tools

    cards = {}
    for item in args.cards:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            print(f"astrodart header: error: --set {item!r}: use KEY=VALUE", file=sys.stderr)
            return 2
        cards[key.strip().upper()] = _value(value.strip())
    tools = header_tools(_existing(args.files), cards, dry_run=args.dry_run)
    changed = tools.append_header_key()
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {len(changed)} of {len(args.files)} files: "
          + ", ".join(f"{k}={v!r}" for k, v in cards.items()))
    return 0


def _solve(args) -> int:
    from astrodart.pipeline.solve import astrometry

    files = _existing(args.files)
    step = astrometry(None, files, None, args.fwhm, pixel_scale=args.scale)
    failed = step.run()
    for row in step.to_table():
        state = (f"solved {row['pixel_scale']:.3f}\"/px, centre {row['center_ra']:.5f} "
                 f"{row['center_dec']:+.5f}" if row["solved"] else f"not solved: {row['reason']}")
        print(f"{Path(row['file']).name}: {state}")
    return 1 if len(failed) == len(files) else 0


def _quality(args) -> int:
    from astrodart.pipeline.quality import quality_table, save_quality_table

    table = quality_table(_existing(args.files))
    cols = [c for c in ("file", "fwhm", "sky", "n_stars", "flags") if c in table.colnames]
    view = table[cols]
    view["file"] = [Path(f).name for f in view["file"]]
    view.pprint(max_lines=-1, max_width=-1)
    if args.out:
        print(f"written: {save_quality_table(table, args.out)}")
    return 0


def _stack(args) -> int:
    from astrodart.pipeline.image_combination import image_combination

    files = _existing(args.files)
    out = Path(args.out)
    step = image_combination(out.parent if str(out.parent) else ".", files, out.name,
                             combining_method=args.method, clipping_method=args.clip)
    path = step.run()
    print(f"stack of {len(files)} frames: {path}")
    return 0


def run_stage_command(args: argparse.Namespace) -> int:
    """Run a single-job command; the exit status (2 for bad arguments, 1 for a failure).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of one of the commands of :func:`add_stage_parsers`.

    Returns
    -------
    int
        0 on success.
    """
    jobs = {"header": _header, "solve": _solve, "quality": _quality, "stack": _stack}
    try:
        return jobs[args.command](args)
    except FileNotFoundError as exc:
        print(f"astrodart {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the job failed: say why, exit 1
        print(f"astrodart {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
