"""Layer 2: light curves in the files amateurs report to, and their format checks.

Two formats of the AAVSO (American Association of Variable Star Observers), each written
and checked against its published specification:

* the **AAVSO Extended File Format** (version 1.2, https://www.aavso.org/aavso-extended-file-format):
  variable-star magnitudes for WebObs. Six parameters (``#TYPE=EXTENDED``,
  ``#OBSCODE``, ``#SOFTWARE``, ``#DELIM``, ``#DATE`` = JD, HJD or EXCEL, ``#OBSTYPE``),
  then one observation per line in 15 fields: STARID, DATE, MAGNITUDE, MAGERR, FILTER,
  TRANS, MTYPE, CNAME, CMAG, KNAME, KMAG, AIRMASS, GROUP, CHART, NOTES, with ``na``
  for a field without data. Not case sensitive.
* the **AAVSO Exoplanet Database** report (Exoplanet Watch / EXOTIC and AstroImageJ
  write it; https://apps.aavso.org/exosite/doc): one transit per file,
  ``#TYPE=EXOPLANET``, ``#OBSCODE``, ``#SOFTWARE``, ``#DELIM``, ``#DATE_TYPE``
  (JD_UTC, HJD_UTC, BJD_UTC, BJD_TT or BJD_TDB), ``#OBSTYPE`` (CCD or DSLR),
  ``#STAR_NAME``, ``#EXOPLANET_NAME``, ``#BINNING``, ``#EXPOSURE_TIME`` (s, at most
  600), ``#FILTER``, ``#DETREND_PARAMETERS`` (0 to 4 names), ``#MEASUREMENT_TYPE``
  (Rnflux: relative flux normalised out of transit, or Dmag), optional
  ``#SECONDARY_OBSCODES``, ``#PRIORS``, ``#RESULTS``, ``#NOTES``; then DATE, DIFF, ERR
  and one column per detrend parameter. Case sensitive.

The observer code defaults to ``TST01``, the code of the specifications' own examples:
AAVSO files it under no observer, so a real upload needs the observer's own code.

The writers take arrays and return the file's text; :func:`write_report` writes it
atomically (:func:`astrodart.frames.io.atomic_output`). No network, no printing.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

__all__ = [
    "AAVSO_FILTERS",
    "EXTENDED_FIELDS",
    "PLACEHOLDER_OBSCODE",
    "ReportFormatError",
    "aavso_extended_text",
    "aavso_filter",
    "exoplanet_report_text",
    "validate_aavso_extended",
    "validate_exoplanet_report",
    "write_report",
]

#: The observer code of the AAVSO specifications' examples (not a real observer).
PLACEHOLDER_OBSCODE = "TST01"
#: The 15 data fields of the Extended File Format, in order.
EXTENDED_FIELDS = ("STARID", "DATE", "MAGNITUDE", "MAGERR", "FILTER", "TRANS", "MTYPE",
                   "CNAME", "CMAG", "KNAME", "KMAG", "AIRMASS", "GROUP", "CHART", "NOTES")
#: AAVSO band codes (https://www.aavso.org/filters): Johnson-Cousins, NIR, tri-colour,
#: clear with V or R zero point, clear blue-blocking, Sloan, Stromgren, Wing, PanSTARRS,
#: H-alpha, other.
AAVSO_FILTERS = frozenset({
    "U", "B", "V", "R", "I", "J", "H", "K", "TG", "TB", "TR", "CV", "CR", "CBB", "SZ", "SU",
    "SG", "SR", "SI", "STU", "STV", "STB", "STY", "STHBW", "STHBN", "MA", "MB", "MI", "ZS",
    "Y", "HA", "HAC", "O"})
_EXT_PARAMS = ("TYPE", "OBSCODE", "SOFTWARE", "DELIM", "DATE", "OBSTYPE")
_EXT_DATES = ("JD", "HJD", "EXCEL")
_EXT_OBSTYPES = ("CCD", "DSLR", "PEP", "CMOS", "VISDIG")
_EXO_REQUIRED = ("TYPE", "OBSCODE", "SOFTWARE", "DELIM", "DATE_TYPE", "OBSTYPE",
                 "STAR_NAME", "EXOPLANET_NAME", "BINNING", "EXPOSURE_TIME", "FILTER",
                 "DETREND_PARAMETERS", "MEASUREMENT_TYPE")
_EXO_DATES = ("JD_UTC", "HJD_UTC", "BJD_UTC", "BJD_TT", "BJD_TDB")
_EXO_DELIMS = {",": ",", ";": ";", "|": "|", ":": ":", "!": "!", "/": "/", "?": "?",
               "tab": "\t"}
_EXO_LIMITS = {"SOFTWARE": 255, "STAR_NAME": 100, "EXOPLANET_NAME": 100, "OBSCODE": 5,
               "DETREND_PARAMETERS": 100, "SECONDARY_OBSCODES": 60, "PRIORS": 250,
               "RESULTS": 250}
_NA = ("na", "n/a", "")
#: Common FILTER header values -> AAVSO band code.
_FILTER_ALIASES = {"": "CV", "CLEAR": "CV", "VISIBLE": "CV", "NONE": "CV", "C": "CV",
                   "L": "CV", "LUM": "CV", "LUMINANCE": "CV", "OPEN": "CV", "RC": "R",
                   "IC": "I", "JOHNSON V": "V", "JOHNSON B": "B", "JOHNSON U": "U",
                   "G'": "SG", "R'": "SR", "I'": "SI", "Z'": "SZ", "U'": "SU",
                   "SLOAN G": "SG", "SLOAN R": "SR", "SLOAN I": "SI", "SLOAN Z": "SZ",
                   "EXOPLANET": "CBB", "EXO": "CBB", "HALPHA": "HA", "H-ALPHA": "HA"}


class ReportFormatError(ValueError):
    """A report breaks its format's rules.

    Parameters
    ----------
    problems : list of str
        Every rule broken, one line each (line number first).
    path : str, optional
        The file checked.
    """

    def __init__(self, problems: list[str], path: str | None = None):
        self.problems = list(problems)
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{len(self.problems)} format problem(s):\n  "
                         + "\n  ".join(self.problems))


def aavso_filter(name: str | None) -> str:
    """The AAVSO band code of a filter name as cameras write it.

    Parameters
    ----------
    name : str or None
        A FILTER header value ('V', 'Rc', 'Visible', 'Clear', "r'", ...) or already a
        code. None or '' means unfiltered.

    Returns
    -------
    str
        The code (unfiltered and clear are 'CV', as the AAVSO asks).

    Raises
    ------
    ValueError
        A name with no AAVSO code; the message lists the codes.
    """
    key = " ".join(str(name or "").strip().upper().split())
    if key in AAVSO_FILTERS:
        return key
    if key in _FILTER_ALIASES:
        return _FILTER_ALIASES[key]
    raise ValueError(f"filter {name!r} has no AAVSO band code; give one of "
                     f"{sorted(AAVSO_FILTERS)} (see https://www.aavso.org/filters)")


def _number(value, width: int, decimals: int, *, na: str = "na") -> str:
    """``value`` with a dot and at most ``decimals`` decimals, cut to fit ``width``
    characters; ``na`` when missing."""
    if value is None or not np.isfinite(value):
        return na
    for d in range(decimals, 0, -1):
        text = f"{float(value):.{d}f}"
        if len(text) <= width:
            return text
    raise ValueError(f"{value!r} does not fit in {width} characters")


def _text_field(value, limit: int | None, delim: str, name: str) -> str:
    text = "na" if value is None or str(value).strip() == "" else str(value).strip()
    if delim in text or "\n" in text:
        raise ValueError(f"{name}={text!r} contains the delimiter {delim!r} or a line break")
    if limit is not None and len(text) > limit:
        raise ValueError(f"{name}={text!r} is longer than the {limit} characters allowed")
    return text


def aavso_extended_text(star_id: str, jd, mag, mag_err, *, filter: str,
                        obscode: str = PLACEHOLDER_OBSCODE, software: str | None = None,
                        date_type: str = "JD", obstype: str = "CCD", mtype: str = "DIF",
                        cname: str = "ENSEMBLE", cmag=None, kname: str | None = None,
                        kmag=None, airmass=None, chart: str = "na", notes: str | None = None,
                        trans: bool = False, delim: str = ",") -> str:
    """A light curve in the AAVSO Extended File Format (one observation per point).

    Parameters
    ----------
    star_id : str
        STARID: AAVSO designation, name or AUID of the variable (at most 30 characters).
    jd : array_like, shape (n,)
        DATE: mid-exposure Julian Dates, UTC (``date_type='JD'``) or heliocentric
        (``'HJD'``): the caller converts (e.g. ``Time.utc.jd``).
    mag, mag_err : array_like, shape (n,)
        MAGNITUDE and MAGERR (NaN error -> ``na``). Points with a non-finite magnitude
        are left out.
    filter : str
        An AAVSO band code or a camera's filter name (:func:`aavso_filter`).
    obscode : str
        The observer's AAVSO code (default the specifications' example code).
    software : str, optional
        SOFTWARE parameter (at most 255 characters; default astrodart and its version).
    date_type : {'JD', 'HJD'}
        DATE parameter.
    obstype : {'CCD', 'DSLR', 'PEP', 'CMOS', 'VISDIG'}
        OBSTYPE parameter.
    mtype : {'DIF', 'STD'}
        Differential magnitudes against ``cname`` (the default: an ensemble, whose
        CMAG is ``na``) or standardized ones (``'STD'``: the magnitudes, CMAG and KMAG
        that :func:`astrodart.photometry.catalogue_photometry.comparison_photometry` gives).
    cname, cmag, kname, kmag : optional
        Comparison and check star names (at most 20 characters) and instrumental
        magnitudes (scalars or arrays of shape (n,)).
    airmass : array_like, shape (n,), optional
        AIRMASS per point.
    chart : str
        CHART: the AAVSO sequence ID, or ``na``.
    notes : str, optional
        NOTES for every point (no delimiter in it).
    trans : bool
        TRANS: magnitudes transformed to the standard system.
    delim : str
        One ASCII character other than '#' and space.

    Returns
    -------
    str
        The file's text (ends with a newline).

    Raises
    ------
    ValueError
        An argument that breaks the format (the message names it and what is allowed).
    """
    jd, mag = np.atleast_1d(np.asarray(jd, float)), np.atleast_1d(np.asarray(mag, float))
    n = jd.size
    err = np.broadcast_to(np.asarray(mag_err if mag_err is not None else np.nan, float), (n,))
    cols = {k: np.broadcast_to(np.asarray(v if v is not None else np.nan, float), (n,))
            for k, v in (("cmag", cmag), ("kmag", kmag), ("airmass", airmass))}
    if mag.shape != (n,):
        raise ValueError(f"mag has shape {mag.shape}; jd has {n} points")
    _check_choice("date_type", date_type, ("JD", "HJD"))
    _check_choice("obstype", obstype.upper(), _EXT_OBSTYPES)
    _check_choice("mtype", mtype.upper(), ("DIF", "STD"))
    if len(delim) != 1 or delim in "# " or not 32 <= ord(delim) <= 126:
        raise ValueError(f"delim={delim!r}: one ASCII character (32-126) other than '#' "
                         "and space")
    band = aavso_filter(filter)
    sid = _text_field(star_id, 30, delim, "star_id")
    fixed = [_text_field(cname, 20, delim, "cname"), _text_field(kname, 20, delim, "kname")]
    if mtype.upper() == "DIF" and fixed[0] == "na":
        raise ValueError("mtype='DIF' needs the comparison's name (cname; 'ENSEMBLE' for "
                         "an ensemble)")
    tail = [_text_field(chart, 20, delim, "chart"), _text_field(notes, None, delim, "notes")]
    lines = ["#TYPE=EXTENDED", f"#OBSCODE={obscode}", f"#SOFTWARE={_software(software)}",
             f"#DELIM={delim}", f"#DATE={date_type}", f"#OBSTYPE={obstype.upper()}",
             "#" + delim.join(EXTENDED_FIELDS)]
    for k in np.flatnonzero(np.isfinite(jd) & np.isfinite(mag)):
        row = [sid, _number(jd[k], 16, 6), _number(mag[k], 8, 4), _number(err[k], 6, 4),
               band, "YES" if trans else "NO", mtype.upper(), fixed[0],
               _number(cols["cmag"][k], 8, 4), fixed[1], _number(cols["kmag"][k], 8, 4),
               _number(cols["airmass"][k], 7, 4), "na", *tail]
        lines.append(delim.join(row))
    return "\n".join(lines) + "\n"


def _software(name: str | None) -> str:
    if name:
        return str(name)[:255]
    from astrodart import __version__

    return f"astrodart {__version__}"


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {', '.join(allowed)}")


def exoplanet_report_text(bjd, flux, flux_err, *, star_name: str, planet_name: str,
                          exposure_time: float, filter: str,
                          obscode: str = PLACEHOLDER_OBSCODE, software: str | None = None,
                          binning: str = "1x1", obstype: str = "CCD", detrend=None,
                          priors: dict | None = None, results: dict | None = None,
                          notes: str | None = None, secondary_obscodes: str | None = None,
                          norm_mask=None, date_type: str = "BJD_TDB",
                          delim: str = ",") -> str:
    """A transit light curve as an AAVSO Exoplanet Database (Exoplanet Watch) report.

    Parameters
    ----------
    bjd : array_like, shape (n,)
        Mid-exposure times of ``date_type`` (default BJD_TDB, days).
    flux, flux_err : array_like, shape (n,)
        Relative flux of the target (not detrended) and its error; written as Rnflux,
        divided by its median over ``norm_mask`` (out of transit). Non-finite points
        are left out.
    star_name, planet_name : str
        STAR_NAME (known to MAST, e.g. 'HAT-P-27') and EXOPLANET_NAME ('HAT-P-27 b').
    exposure_time : float
        EXPOSURE_TIME, seconds (at most 600).
    filter : str
        An AAVSO band code or a camera's filter name (:func:`aavso_filter`; clear or
        no filter is CV).
    obscode : str
        The observer's AAVSO code (at most 5 characters; default the example code).
    software : str, optional
        SOFTWARE (at most 255 characters; default astrodart and its version).
    binning : {'1x1', '2x2', '3x3', '4x4'}
        The camera's binning.
    obstype : {'CCD', 'DSLR'}
        OBSTYPE (a CMOS camera reports CCD, per the specification).
    detrend : dict, optional
        Up to 4 detrending series by name (e.g. ``{'AIRMASS': airmass}``), each
        shape (n,); their names go to DETREND_PARAMETERS.
    priors, results : dict, optional
        PRIORS and RESULTS as ``name=value`` pairs (at most 250 characters each).
    notes, secondary_obscodes : str, optional
        NOTES and SECONDARY_OBSCODES (at most 60 characters).
    norm_mask : array_like of bool, shape (n,), optional
        The out-of-transit points (default all).
    date_type : {'JD_UTC', 'HJD_UTC', 'BJD_UTC', 'BJD_TT', 'BJD_TDB'}
        DATE_TYPE.
    delim : {',', ';', '|', ':', '!', '/', '?', 'tab'}
        DELIM.

    Returns
    -------
    str
        The file's text (ends with a newline).

    Raises
    ------
    ValueError
        An argument that breaks the format (the message names it and what is allowed).
    """
    t = np.atleast_1d(np.asarray(bjd, float))
    f = np.asarray(flux, float).ravel()
    e = np.broadcast_to(np.asarray(flux_err if flux_err is not None else np.nan, float), t.shape)
    det = {str(k).upper(): np.broadcast_to(np.asarray(v, float), t.shape)
           for k, v in (detrend or {}).items()}
    _check_exoplanet_args(t, f, det, exposure_time, binning, obstype, date_type, delim,
                          obscode)
    sep = _EXO_DELIMS[delim]
    ok = np.isfinite(t) & np.isfinite(f)
    nm = ok if norm_mask is None else ok & np.asarray(norm_mask, bool)
    norm = float(np.median(f[nm if nm.any() else ok]))
    head = {"TYPE": "EXOPLANET", "OBSCODE": obscode, "SOFTWARE": _software(software),
            "DELIM": delim, "DATE_TYPE": date_type, "OBSTYPE": obstype,
            "STAR_NAME": star_name, "EXOPLANET_NAME": planet_name, "BINNING": binning,
            "EXPOSURE_TIME": f"{float(exposure_time):g}", "FILTER": aavso_filter(filter),
            "DETREND_PARAMETERS": ",".join(det), "MEASUREMENT_TYPE": "Rnflux"}
    optional = {"SECONDARY_OBSCODES": secondary_obscodes, "PRIORS": _pairs(priors),
                "RESULTS": _pairs(results), "NOTES": notes}
    head.update({k: v for k, v in optional.items() if v})
    for key, limit in _EXO_LIMITS.items():
        if key in head and len(str(head[key])) > limit:
            raise ValueError(f"{key}={head[key]!r} is longer than the {limit} characters "
                             "allowed")
    lines = [f"#{k}={v}" for k, v in head.items()]
    lines.append("#" + sep.join(["DATE", "DIFF", "ERR", *[f"DETREND_{i + 1}"
                                                          for i in range(len(det))]]))
    for k in np.flatnonzero(ok):
        row = [f"{t[k]:.8f}", _number(f[k] / norm, 15, 8), _number(e[k] / norm, 12, 6)]
        row += [_number(v[k], 12, 6) for v in det.values()]
        lines.append(sep.join(row))
    return "\n".join(lines) + "\n"


def _pairs(values: dict | None) -> str | None:
    if not values:
        return None
    return ",".join(f"{k}={v:.12g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())


def _check_exoplanet_args(t, f, det, exposure_time, binning, obstype, date_type, delim,
                          obscode) -> None:
    """Refuse, before any text is made, what the exoplanet format does not allow."""
    if f.shape != t.shape:
        raise ValueError(f"flux has shape {f.shape}; the times have {t.shape}")
    if len(det) > 4:
        raise ValueError(f"detrend has {len(det)} series; the format allows 0 to 4")
    if not (isinstance(exposure_time, (int, float)) and 0 < exposure_time <= 600):
        raise ValueError(f"exposure_time={exposure_time!r}: seconds, > 0 and at most 600")
    _check_choice("binning", binning, ("1x1", "2x2", "3x3", "4x4"))
    _check_choice("obstype", obstype, ("CCD", "DSLR"))
    _check_choice("date_type", date_type, _EXO_DATES)
    _check_choice("delim", delim, tuple(_EXO_DELIMS))
    if not 0 < len(str(obscode)) <= 5:
        raise ValueError(f"obscode={obscode!r}: the AAVSO observer code, 1 to 5 characters")


# ------------------------------------------------------------------------------ checks
def _read_lines(source) -> tuple[list[str], str | None]:
    """Lines of a report given as a path or as its text."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and Path(source).is_file()):
        return Path(source).read_text().splitlines(), str(source)
    return str(source).splitlines(), None


def _params(lines, upper: bool) -> tuple[dict, list]:
    """``#KEY=value`` parameters (first line wins) and the data lines with numbers."""
    params, data = {}, []
    for no, line in enumerate(lines, start=1):
        if line.startswith("#"):
            key, eq, value = line[1:].partition("=")
            if eq and re.fullmatch(r"[A-Za-z_\-]+", key.strip()):
                params.setdefault(key.strip().upper() if upper else key.strip(),
                                  (no, value.strip()))
        else:
            data.append((no, line))
    return params, data


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _finish(problems: list[str], path, raise_on_error: bool) -> list[str]:
    if problems and raise_on_error:
        raise ReportFormatError(problems, path)
    return problems


def validate_aavso_extended(source, *, raise_on_error: bool = False) -> list[str]:
    """Check a file against the AAVSO Extended File Format (version 1.2).

    Parameters
    ----------
    source : str or pathlib.Path
        The file, or its text.
    raise_on_error : bool
        Raise :class:`ReportFormatError` listing the problems instead of returning them.

    Returns
    -------
    list of str
        The rules broken, ``'line N: ...'`` each; empty when the file is valid.

    Raises
    ------
    ReportFormatError
        With ``raise_on_error``, when a rule is broken.
    """
    lines, path = _read_lines(source)
    params, data = _params(lines, upper=True)
    problems = [f"missing parameter #{k}=" for k in _EXT_PARAMS if k not in params]
    value = {k: v for k, (_, v) in params.items()}
    for key, allowed in (("TYPE", ("EXTENDED",)), ("DATE", _EXT_DATES),
                         ("OBSTYPE", _EXT_OBSTYPES)):
        if key in value and value[key].upper() not in allowed:
            problems.append(f"line {params[key][0]}: #{key}={value[key]} is not one of "
                            f"{', '.join(allowed)}")
    if "OBSCODE" in value and not value["OBSCODE"]:
        problems.append(f"line {params['OBSCODE'][0]}: #OBSCODE is empty")
    if len(value.get("SOFTWARE", "")) > 255:
        problems.append(f"line {params['SOFTWARE'][0]}: #SOFTWARE over 255 characters")
    delim = {"TAB": "\t", "COMMA": ","}.get(value.get("DELIM", ",").upper(),
                                            value.get("DELIM", ","))
    if len(delim) != 1 or delim in "# ":
        problems.append(f"#DELIM={value.get('DELIM')!r} is not one character other than "
                        "'#' and space (or 'tab')")
        delim = ","
    date_type = value.get("DATE", "JD").upper()
    for no, line in data:
        problems += [f"line {no}: {p}" for p in _extended_row(line, delim, date_type)]
    if not data:
        problems.append("no observations")
    return _finish(problems, path, raise_on_error)


def _extended_row(line: str, delim: str, date_type: str) -> list[str]:
    """The rules one Extended-format observation breaks."""
    if not line.strip():
        return ["blank line (comment it out with '#')"]
    f = [s.strip() for s in line.split(delim)]
    if len(f) != len(EXTENDED_FIELDS):
        return [f"{len(f)} fields; the format has {len(EXTENDED_FIELDS)} ("
                f"{', '.join(EXTENDED_FIELDS)})"]
    v = dict(zip(EXTENDED_FIELDS, f))
    out = []
    limits = {"STARID": 30, "DATE": 16, "MAGNITUDE": 8, "MAGERR": 6, "CNAME": 20,
              "CMAG": 8, "KNAME": 20, "KMAG": 8, "AIRMASS": 7, "GROUP": 5, "CHART": 20}
    out += [f"{k}={v[k]!r} over {n} characters" for k, n in limits.items() if len(v[k]) > n]
    out += [f"{k} is empty (use 'na')" for k in EXTENDED_FIELDS if v[k] == ""]
    if date_type != "EXCEL" and not (_is_number(v["DATE"]) and float(v["DATE"]) > 2e6):
        out.append(f"DATE={v['DATE']!r} is not a Julian Date")
    mag = v["MAGNITUDE"].removeprefix("<")
    if not (_is_number(mag) and "." in mag):
        out.append(f"MAGNITUDE={v['MAGNITUDE']!r} is not a number with a dot")
    for k in ("MAGERR", "CMAG", "KMAG", "AIRMASS"):
        if v[k].lower() != "na" and not _is_number(v[k]):
            out.append(f"{k}={v[k]!r} is neither a number nor 'na'")
    if v["GROUP"].lower() != "na" and not v["GROUP"].isdigit():
        out.append(f"GROUP={v['GROUP']!r} is neither an integer nor 'na'")
    if v["FILTER"].upper() not in AAVSO_FILTERS:
        out.append(f"FILTER={v['FILTER']!r} is not an AAVSO band code")
    if v["TRANS"].upper() not in ("YES", "NO"):
        out.append(f"TRANS={v['TRANS']!r} is not YES or NO")
    if v["MTYPE"].upper() not in ("STD", "DIF", "ABS"):
        out.append(f"MTYPE={v['MTYPE']!r} is not STD, DIF or ABS")
    elif v["MTYPE"].upper() == "DIF" and v["CNAME"].lower() == "na":
        out.append("MTYPE=DIF needs CNAME")
    return out


def validate_exoplanet_report(source, *, raise_on_error: bool = False) -> list[str]:
    """Check a file against the AAVSO Exoplanet Database report format.

    Parameters
    ----------
    source : str or pathlib.Path
        The file, or its text.
    raise_on_error : bool
        Raise :class:`ReportFormatError` listing the problems instead of returning them.

    Returns
    -------
    list of str
        The rules broken, ``'line N: ...'`` each; empty when the file is valid.

    Raises
    ------
    ReportFormatError
        With ``raise_on_error``, when a rule is broken.
    """
    lines, path = _read_lines(source)
    params, data = _params(lines, upper=False)
    value = {k: v for k, (_, v) in params.items()}
    problems = [f"missing parameter #{k}=" for k in _EXO_REQUIRED if k not in params]
    choices = {"TYPE": ("EXOPLANET",), "DATE_TYPE": _EXO_DATES, "OBSTYPE": ("CCD", "DSLR"),
               "BINNING": ("1x1", "2x2", "3x3", "4x4"), "DELIM": tuple(_EXO_DELIMS),
               "MEASUREMENT_TYPE": ("Rnflux", "Dmag")}
    for key, allowed in choices.items():
        if key in value and value[key] not in allowed:
            problems.append(f"line {params[key][0]}: #{key}={value[key]} is not one of "
                            f"{', '.join(allowed)} (case sensitive)")
    for key, limit in _EXO_LIMITS.items():
        if len(value.get(key, "")) > limit:
            problems.append(f"line {params[key][0]}: #{key} over {limit} characters")
    for key in ("OBSCODE", "STAR_NAME", "EXOPLANET_NAME"):
        if key in value and not value[key]:
            problems.append(f"line {params[key][0]}: #{key} is empty")
    exp = value.get("EXPOSURE_TIME", "1")
    if not (_is_number(exp) and 0 < float(exp) <= 600):
        problems.append(f"#EXPOSURE_TIME={exp} is not seconds between 0 and 600")
    if "FILTER" in value and value["FILTER"] not in AAVSO_FILTERS:
        problems.append(f"#FILTER={value['FILTER']} is not an AAVSO band code")
    names = [s for s in value.get("DETREND_PARAMETERS", "").split(",") if s.strip()]
    if len(names) > 4:
        problems.append(f"#DETREND_PARAMETERS names {len(names)} series; at most 4")
    sep = _EXO_DELIMS.get(value.get("DELIM", ","), ",")
    diffs = []
    for no, line in data:
        bad, diff = _exoplanet_row(line, sep, len(names))
        problems += [f"line {no}: {p}" for p in bad]
        diffs += [diff] if diff is not None else []
    problems += _measurement_level(diffs, value.get("MEASUREMENT_TYPE"), bool(data))
    return _finish(problems, path, raise_on_error)


def _exoplanet_row(line: str, sep: str, n_detrend: int) -> tuple[list[str], float | None]:
    """The rules one measurement breaks, and its DIFF value."""
    if not line.strip():
        return ["blank line (comment it out with '#')"], None
    f = [s.strip() for s in line.split(sep)]
    want = 3 + n_detrend
    if len(f) not in (want, 7) or (len(f) == 7 and any(s.lower() not in _NA
                                                      for s in f[want:])):
        return [f"{len(f)} fields; DATE, DIFF, ERR and {n_detrend} detrend value(s) make "
                f"{want} (or 7 with the unused detrend fields 'na')"], None
    out = []
    if not (_is_number(f[0]) and float(f[0]) > 2e6):
        out.append(f"DATE={f[0]!r} is not a Julian Date")
    if not _is_number(f[1]):
        out.append(f"DIFF={f[1]!r} is not a number")
    for name, text in zip(["ERR"] + [f"DETREND_{i}" for i in range(1, 5)], f[2:want]):
        if text.lower() not in _NA and not _is_number(text):
            out.append(f"{name}={text!r} is neither a number nor 'na'")
    return out, (float(f[1]) if not out else None)


def _measurement_level(diffs: list, kind: str | None, any_data: bool) -> list[str]:
    """Rnflux is normalised to 1 out of transit, Dmag to 0."""
    if not any_data:
        return ["no measurements"]
    if not diffs or kind not in ("Rnflux", "Dmag"):
        return []
    level, nominal = float(np.median(diffs)), (1.0 if kind == "Rnflux" else 0.0)
    if abs(level - nominal) > 0.1:
        return [f"the median DIFF is {level:.4g}; {kind} is normalised to {nominal:g} "
                "out of transit"]
    return []


def write_report(path, text: str) -> Path:
    """Write a report's text atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    path : str or pathlib.Path
        The report (folders created). The AAVSO accepts .txt, .csv and .tsv files.
    text : str
        From :func:`aavso_extended_text` or :func:`exoplanet_report_text`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        A suffix the AAVSO does not accept.
    """
    path = Path(path)
    if path.suffix.lower() not in (".txt", ".csv", ".tsv"):
        raise ValueError(f"{path}: the AAVSO accepts .txt, .csv and .tsv files only")
    from astrodart.frames.io import atomic_output

    with atomic_output(path, overwrite=True, fsync=False) as tmp:
        Path(tmp).write_text(text)
    return path
