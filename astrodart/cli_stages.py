"""Command line, layer 5: single jobs on files (``astrodart header|solve|quality|stack|...``).

Each command is one stage call of the guides on the files named, for a user who wants
one job done from the shell:

* ``astrodart header FILES --set KEY=VALUE [--dry-run]``: :class:`header_tools` (an
  explicit, logged edit; the old value goes to HISTORY);
* ``astrodart solve FILES``: offline plate solving (:class:`astrodart.pipeline.solve.astrometry`),
  the WCS written into each solved file;
* ``astrodart quality FILES [-o TABLE.ecsv]``: the per-frame quality table;
* ``astrodart stack FILES -o OUT.fits``: one stack (:class:`image_combination`) of
  frames already aligned;
* ``astrodart imarith A OP B -o C``, ``astrodart resample FILES --reference REF -o DIR``,
  ``astrodart master-sky FILES -o SKY [--subtract DIR] [--no-master-sky]``: image
  products (:mod:`astrodart.pipeline.products`, :mod:`astrodart.pipeline.sky`).
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
    for p in (h, s, q, k, *_add_product_parsers(sub)):
        p.add_argument("-v", "--verbose", action="store_true")


def _add_product_parsers(sub) -> tuple:
    """``imarith``, ``resample`` and ``master-sky``: the image-product commands."""
    a = sub.add_parser("imarith", help="image arithmetic A OP B (B a frame or a number), "
                                       "uncertainties propagated, masks OR-ed")
    a.add_argument("a", help="frame A")
    a.add_argument("op", choices=("+", "-", "*", "/"), help="the operation (quote '*')")
    a.add_argument("b", help="frame B or a number")
    a.add_argument("-o", "--out", required=True, help="the result (FITS)")
    r = sub.add_parser("resample", help="reproject frames onto a reference frame's WCS grid")
    r.add_argument("files", nargs="+")
    r.add_argument("--reference", required=True, help="a frame with a WCS: the output grid")
    r.add_argument("-o", "--out", required=True, help="folder of the resampled frames")
    r.add_argument("--order", default="bicubic",
                   choices=("nearest-neighbor", "bilinear", "bicubic"))
    m = sub.add_parser("master-sky", help="master sky of dithered frames (sources masked); "
                                          "optionally subtract it from each frame")
    m.add_argument("files", nargs="+")
    m.add_argument("-o", "--out", help="the master sky (FITS); needed unless --no-master-sky")
    m.add_argument("--subtract", metavar="DIR", help="write each frame minus the sky here")
    m.add_argument("--no-master-sky", action="store_true",
                   help="make no master: subtract each frame's median sky (needs --subtract)")
    return a, r, m


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


def _imarith(args) -> int:
    from astrodart.pipeline.products import image_arithmetic

    path = image_arithmetic(args.a, args.op, args.b, args.out, overwrite=True,
                            progress=False).run()
    print(f"{Path(args.a).name} {args.op} {args.b}: {path}")
    return 0


def _resample(args) -> int:
    from astrodart.pipeline.products import resample_frames

    files = _existing(args.files)
    step = resample_frames(args.out, files, args.reference, order=args.order, progress=False)
    out = step.run()
    print(f"{len(out)} of {len(files)} frames resampled onto {Path(args.reference).name}: "
          f"{args.out}")
    return 0 if len(out) == len(files) else 1


def _master_sky(args) -> int:
    from astrodart.pipeline.sky import sky_frame, sky_subtraction

    if args.no_master_sky and not args.subtract or not (args.out or args.no_master_sky):
        print("astrodart master-sky: error: give --out FILE (the master sky), or "
              "--no-master-sky with --subtract DIR", file=sys.stderr)
        return 2
    files, sky = _existing(args.files), None
    if not args.no_master_sky:
        out = Path(args.out)
        sky = sky_frame(out.parent, files, out.name, overwrite=True, progress=False).run()
        print(f"master sky of {len(files)} frames: {sky}")
    if args.subtract:
        done = sky_subtraction(args.subtract, files, sky, overwrite=True, progress=False).run()
        what = "the master sky" if sky else "their median sky"
        print(f"{len(done)} of {len(files)} frames minus {what}: {args.subtract}")
        return 0 if len(done) == len(files) else 1
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
    jobs = {"header": _header, "solve": _solve, "quality": _quality, "stack": _stack,
            "imarith": _imarith, "resample": _resample, "master-sky": _master_sky}
    try:
        return jobs[args.command](args)
    except FileNotFoundError as exc:
        print(f"astrodart {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the job failed: say why, exit 1
        print(f"astrodart {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
