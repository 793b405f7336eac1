"""Layer 3: the rules that decide a raw frame's type (used by :mod:`astrodart.pipeline.survey`).

Three kinds of evidence, in the order the issue sets:

* what the user says (``--frame-type GLOB=TYPE``);
* the header: ``EXPTIME == 0`` is a bias wherever it sits; ``IMAGETYP`` (read through
  :class:`astrodart.frames.header.FrameHeader`) when it is believable;
* the file name and folders (:func:`name_evidence`: ``bias``/``zero``, ``dark``,
  ``flat``/``dome``/``sky``/``twilight``, ``light``/``science``/``object`` and astro_reduce's
  ``DARK/ FLAT/ ORIGINAL/`` folders), checked against cheap image statistics
  (:func:`image_stats`: a flat is bright, smooth and starless; a light has stars; a dark
  or bias is faint and starless).

Statistics are computed only where the header and the names disagree or say nothing.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from astrodart.calibration.noise import robust_std
from astrodart.frames.header import FrameHeader, HeaderValueError
from astrodart.frames.io import FrameError, image_hdu_index, read_header, strip_fits_suffix
from astrodart.sources.stars import find_stars

__all__ = [
    "ASTRO_REDUCE_DIRS",
    "SURVEY_TYPES",
    "FrameEvidence",
    "ImageStats",
    "StatsOnDemand",
    "agrees",
    "decide_type",
    "folder_filter",
    "image_stats",
    "is_calibrated",
    "name_evidence",
    "read_evidence",
    "stats_type",
]

#: Frame types a survey decides ('light' is astrodart's 'object').
SURVEY_TYPES = ("bias", "dark", "flat", "flatdark", "light")

# whole alphabetic tokens (file name and folder parts are split on anything not a letter)
_TOKENS = {
    "bias": "bias", "biases": "bias", "zero": "bias", "zeros": "bias",
    "dark": "dark", "darks": "dark",
    "flat": "flat", "flats": "flat", "flatfield": "flat", "flatfields": "flat",
    "domeflat": "flat", "skyflat": "flat", "skyflats": "flat", "twiflat": "flat",
    "twilightflat": "flat", "domeflats": "flat",
    "flatdark": "flatdark", "darkflat": "flatdark", "flatdarks": "flatdark", "darkflats": "flatdark",
    "light": "light", "lights": "light", "science": "light", "sci": "light", "object": "light",
    "objects": "light", "obj": "light",
}
#: Tokens that say "flat" only weakly (a dome or the sky is also in other frames): they
#: are believed only when the image statistics agree.
_WEAK = {"dome": "flat", "sky": "flat", "twilight": "flat", "twilights": "flat"}
# prefixes of longer tokens ('biastest', 'darktest', 'flattest'): the longest wins
_PREFIXES = ("flatdark", "darkflat", "flat", "dark", "bias", "zero", "light", "science")
#: astro_reduce's layout: the folder names and what they hold.
ASTRO_REDUCE_DIRS = {"dark": "dark", "flat": "flat", "original": "light"}

_STAR_MIN = 8            # detections on the binned cut-out that make a star field
_BRIGHT_FRACTION = 0.05  # of the converter range above the bias level
_SMOOTH = 0.05           # robust relative scatter after removing the large-scale gradient


def _token_type(tok: str):
    """(type, weak) of one lower-case alphabetic token, or (None, False)."""
    if tok in _TOKENS:
        return _TOKENS[tok], False
    if tok in _WEAK:
        return _WEAK[tok], True
    for p in _PREFIXES:
        if len(tok) > len(p) and tok.startswith(p):
            return _TOKENS.get(p, "light"), False
    return None, False


def _name_phrase(text: str):
    """The type words of one name or folder: (type, phrase as written, weak) or None."""
    found = []  # (start, end, type, weak)
    for m in re.finditer(r"[a-z]+", text.lower()):
        t, weak = _token_type(m.group())
        if t is not None:
            found.append([m.start(), m.end(), t, weak])
    if not found:
        return None
    types = {f[2] for f in found}
    if {"dark", "flat"} <= types:
        types = (types - {"dark", "flat"}) | {"flatdark"}
    strong = {f[2] for f in found if not f[3]} or types
    if "flat" in strong and "light" in strong:      # 'twilight_flat', 'light_flat'
        strong = strong - {"light"}
    if "flatdark" in types:
        strong = {"flatdark"}
    if len(strong) != 1:
        return None                                   # contradicting words: no evidence
    kind = strong.pop()
    first = next(f for f in found if f[2] == kind or kind == "flatdark")
    start, end = first[0], first[1]
    for f in found[found.index(first) + 1:]:     # adjacent words: 'dome_flat', 'twilight flat'
        if f[0] - end > 1 or re.search(r"\d", text[end:f[0]]):
            break
        end = f[1]
    phrase = text[start:end]
    weak = all(f[3] for f in found)
    return kind, phrase, weak


def name_evidence(relpath: str, layout_dirs: dict | None = None):
    """What a frame's file name, then its folders (nearest first), say its type is.

    Parameters
    ----------
    relpath : str
        Path of the frame relative to the night folder (or its name).
    layout_dirs : dict, optional
        Folder names (lower case) with a fixed meaning in this layout, e.g. astro_reduce's
        ``{'dark': 'dark', 'flat': 'flat', 'original': 'light'}``.

    Returns
    -------
    tuple or None
        ``(type, text, weak)``: the type, the words that say it as they are written
        (``'name says dome_flat'``, ``'folder FLAT/ says flat'``) and whether the words
        are weak evidence (``dome``, ``sky``, ``twilight``); None when they say nothing.
    """
    parts = re.split(r"[\\/]", relpath)
    got = _name_phrase(strip_fits_suffix(parts[-1]))
    if got is not None:
        return got[0], f"name says {got[1]}", got[2]
    for folder in reversed(parts[:-1]):
        if layout_dirs and folder.lower() in layout_dirs:
            return layout_dirs[folder.lower()], f"folder {folder}/ says {layout_dirs[folder.lower()]}", False
        got = _name_phrase(folder)
        if got is not None:
            return got[0], f"folder {folder}/ says {got[0]}", got[2]
    return None


@dataclass
class ImageStats:
    """Cheap statistics of one frame, enough to tell a flat, a light and a dark apart.

    Parameters
    ----------
    median : float
        Median of the binned centre cut-out (ADU).
    level : float
        The bias level it is compared with (ADU).
    full_range : float
        The converter's range (saturation or the data type's maximum, ADU).
    scatter : float
        Robust relative scatter of the cut-out after removing its large-scale gradient.
    photon_limited : bool
        Whether the pixel-to-pixel noise is large enough for the level above bias to be
        light (photon noise) rather than an electronic offset.
    stars : int
        Point sources found by :func:`astrodart.sources.stars.find_stars` on the cut-out.
    """

    median: float
    level: float
    full_range: float
    scatter: float
    photon_limited: bool
    stars: int

    @property
    def bright(self) -> bool:
        """Well above the bias level: a large fraction of the range, with photon noise."""
        return (self.median - self.level) > _BRIGHT_FRACTION * self.full_range and self.photon_limited

    def describe(self) -> str:
        """Short text for messages, e.g. ``'median 18200 ADU, no stars'``.

        Returns
        -------
        str
            The median, the stars found and (for a bright, structured frame) the scatter.
        """
        stars = "no stars" if self.stars < _STAR_MIN else f"{self.stars} stars"
        text = f"median {self.median:.0f} ADU, {stars}"
        if self.bright and self.scatter >= _SMOOTH and self.stars < _STAR_MIN:
            text += f", not smooth ({100 * self.scatter:.0f} % scatter)"
        elif not self.bright and self.stars < _STAR_MIN:
            text = f"median {self.median:.0f} ADU (faint: bias level {self.level:.0f}), {stars}"
        return text


def _bin(cut: np.ndarray, b: int) -> np.ndarray:
    ny, nx = (cut.shape[0] // b) * b, (cut.shape[1] // b) * b
    return cut[:ny, :nx].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3))


def _box_median(img: np.ndarray, box: int) -> np.ndarray:
    ny, nx = (img.shape[0] // box) * box, (img.shape[1] // box) * box
    blocks = img[:ny, :nx].reshape(ny // box, box, nx // box, box).swapaxes(1, 2)
    return np.median(blocks.reshape(ny // box, nx // box, -1), axis=2)


def image_stats(data, level: float = 0.0, full_range: float = 65535.0, gain: float = 2.0) -> ImageStats:
    """Statistics of the centre of a frame (half its width and height, binned to <= 256 px).

    Parameters
    ----------
    data : numpy.ndarray, shape (ny, nx)
        The raw image (ADU).
    level : float
        The bias level (ADU): the median of a bias frame of the night when there is one.
    full_range : float
        The converter's range (ADU).
    gain : float
        e-/ADU, for the photon-noise test (a rough value is enough).

    Returns
    -------
    ImageStats
        Median, relative scatter, photon-noise flag and the number of stars.
    """
    ny, nx = data.shape
    cut = np.asarray(data[ny // 4: ny - ny // 4, nx // 4: nx - nx // 4], dtype=np.float32)
    b = max(1, int(np.ceil(max(cut.shape) / 256)))
    small = _bin(cut, b) if b > 1 else cut
    med = float(np.median(small))
    # large-scale gradient: medians of (up to) 8 x 8 boxes, interpolated back
    from scipy import ndimage
    box = max(2, min(small.shape) // 8)
    boxes = _box_median(small, box)
    smooth = ndimage.zoom(boxes, (small.shape[0] / boxes.shape[0], small.shape[1] / boxes.shape[1]),
                          order=1, mode="nearest")
    resid = small[: smooth.shape[0], : smooth.shape[1]] - smooth[: small.shape[0], : small.shape[1]]
    scatter = float(robust_std(resid)) / max(abs(med - level), 1.0)
    pix = np.diff(cut[::8, :], axis=1).ravel()
    noise = float(robust_std(pix)) / np.sqrt(2.0)
    excess = med - level
    photon = excess > 0 and noise ** 2 > 0.05 * excess / max(gain, 0.1)
    stars = find_stars(small, fwhm=2.0, threshold=8.0, reject_sharp=True, max_stars=50)
    return ImageStats(median=med, level=float(level), full_range=float(full_range),
                      scatter=scatter, photon_limited=bool(photon), stars=len(stars))


def stats_type(st: ImageStats) -> str | None:
    """The type the statistics alone give.

    Parameters
    ----------
    st : ImageStats
        The frame's statistics.

    Returns
    -------
    str or None
        'light' (stars), 'flat' (bright, smooth, no stars), 'dark' (faint, no stars), or
        None (bright and structured but starless: nothing to decide with).
    """
    if st.stars >= _STAR_MIN:
        return "light"
    if not st.bright:
        return "dark"
    return "flat" if st.scatter < _SMOOTH else None


def agrees(claimed: str, by_stats: str | None) -> bool:
    """Whether the statistics agree with a claimed type (bias, dark and flat-dark look alike).

    Parameters
    ----------
    claimed : str
        The type the names claim.
    by_stats : str or None
        :func:`stats_type`'s verdict.

    Returns
    -------
    bool
        True when they agree.
    """
    dim = ("bias", "dark", "flatdark")
    return by_stats is not None and (claimed == by_stats or (claimed in dim and by_stats == "dark"))


_CAL_KEYS = {"SUBBIAS": "bias", "SUBDARK": "dark", "FLATCORR": "flat", "ZEROCOR": "bias",
             "DARKCOR": "dark", "FLATCOR": "flat", "ADBIASSB": "bias", "CALSTAT": "calibrated"}
_CAL_STEPS = ("subtract_bias", "subtract_dark", "correct_flatfield", "overscan_correction",
              "calibration_chain")
_CAL_HISTORY = re.compile(r"bias[- ]?(subtract|correct|removed)|dark[- ]?(subtract|correct)|"
                          r"flat[- ]?(field|correct|divid)|(?<!un)calibrated|(sub|removed)[a-z ]*bias|"
                          r"(sub|removed)[a-z ]*dark", re.IGNORECASE)


def is_calibrated(header) -> str | None:
    """Whether a header says the frame was already bias, dark or flat corrected.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The frame's header.

    Returns
    -------
    str or None
        What says so (``"HISTORY 'Auto Dark Subtraction'"``, ``'SUBBIAS'``,
        ``'ADSTEP01=subtract_bias'``), or None.
    """
    for key in _CAL_KEYS:
        if key in header and header[key] not in (False, "", None, 0):
            return f"{key}={str(header[key])[:30]!r}"
    for key in header:
        if key.startswith("ADSTEP") and str(header[key]) in _CAL_STEPS:
            return f"{key}={header[key]}"
    for card in header.get("HISTORY", []):
        if _CAL_HISTORY.search(str(card)):
            return f"HISTORY {str(card).strip()[:40]!r}"
    return None


# ---------------------------------------------------------------------------------------
# one frame: its evidence, and the decision
# ---------------------------------------------------------------------------------------
@dataclass
class FrameEvidence:
    """What the header and the names of one file say (the header is read once).

    Parameters
    ----------
    path : pathlib.Path
        The file.
    rel : str
        Its path relative to the night.
    fh : astrodart.frames.header.FrameHeader
        Its header.
    raw : object
        The raw frame-type keyword value, or None.
    htype : str or None
        The type ``IMAGETYP`` says ('light' for astrodart's 'object'), or None.
    exptime : float or None
        Exposure time (s).
    name : tuple or None
        :func:`name_evidence` of the path.
    """

    path: Path
    rel: str
    fh: FrameHeader
    raw: object
    htype: str | None
    exptime: float | None
    name: tuple | None


def read_evidence(path, rel: str, layout_dirs, unreadable: dict) -> FrameEvidence | None:
    """Read one file's header and names; record why when it is not a 2-D frame.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    rel : str
        Its path relative to the night.
    layout_dirs : dict or None
        Folder meanings of the layout (see :func:`name_evidence`).
    unreadable : dict
        ``path -> reason``, filled for unreadable files and data cubes.

    Returns
    -------
    FrameEvidence or None
        None when the file is not a readable 2-D frame.
    """
    try:
        header = read_header(path)
    except FrameError as exc:
        unreadable[str(path)] = exc.problem
        return None
    naxis = int(header.get("NAXIS", 0))
    axes = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, naxis + 1)]
    if naxis > 2 and any(n > 1 for n in axes[2:]):
        unreadable[str(path)] = (f"a data cube (NAXIS={naxis}, axes {' x '.join(map(str, axes))}), "
                                 "not a 2-D frame")
        return None
    fh = FrameHeader(header, path)
    try:
        exptime = fh.exptime_or_none
    except HeaderValueError:
        exptime = None
    htype = fh.frame_type
    htype = "light" if htype == "object" else htype
    return FrameEvidence(Path(path), rel, fh, fh.raw_frame_type, htype, exptime,
                         name_evidence(rel, layout_dirs))


def _by_header(info: FrameEvidence, stats):
    name, raw, ht = info.name, info.raw, info.htype
    if name is None or name[0] == ht or (name[2] and ht == "flat") or (
            ht == "flatdark" and name[0] in ("dark", "flat")):
        return ht, f"IMAGETYP={raw!r}"
    if stats is None:
        return None
    if agrees(name[0], stats_type(stats)):
        return name[0], f"{name[1]}, {stats.describe()}"
    return ht, f"IMAGETYP={raw!r} ({name[1]}, but {stats.describe()})"


def decide_type(info: FrameEvidence, overrides, stats):
    """The type of one frame and why, by the rules of the issue, in order.

    Parameters
    ----------
    info : FrameEvidence
        The frame's header and names.
    overrides : list of (str, str)
        ``(glob, type)`` pairs from ``--frame-type``.
    stats : ImageStats or None
        The frame's statistics, or None when not computed (yet).

    Returns
    -------
    tuple or None
        ``(type, why)``; the type 'unclassified' means the evidence contradicts itself.
        None when the statistics are needed and ``stats`` is None.
    """
    for glob, ftype in overrides:
        if fnmatch.fnmatch(info.rel, glob) or fnmatch.fnmatch(info.path.name, glob):
            return ftype, f"--frame-type {glob}={ftype}"
    name, raw = info.name, info.raw
    if info.exptime == 0:
        why = "EXPTIME=0" + (f", IMAGETYP={raw!r}" if raw is not None else "")
        if name and name[0] != "bias":
            why += f" ({name[1]}, but a 0-s exposure collects no light)"
        return "bias", why
    if info.htype is not None:
        return _by_header(info, stats)
    if name is not None and not name[2]:
        return name[0], name[1]
    if stats is None:
        return None
    st = stats_type(stats)
    if name is not None:
        if agrees(name[0], st):
            return name[0], f"{name[1]}, {stats.describe()}"
        return "unclassified", (f"{name[1]}, but {stats.describe()}: not a {name[0]}; "
                                "give its type with --frame-type GLOB=TYPE")
    if st is None:
        return "unclassified", (f"{stats.describe()}: bright, not smooth and no stars; "
                                "give its type with --frame-type GLOB=TYPE")
    return st, stats.describe()


def _frame_data(path) -> np.ndarray:
    with fits.open(path) as hdul:
        return np.asarray(hdul[image_hdu_index(hdul, path)].data, dtype=np.float32)


def _centre_median(path) -> float:
    d = _frame_data(path)
    ny, nx = d.shape
    return float(np.median(d[ny // 4: ny - ny // 4, nx // 4: nx - nx // 4]))


class StatsOnDemand:
    """Image statistics of a frame, against the bias level of its camera (read once).

    Parameters
    ----------
    biases : list of FrameEvidence
        The frames decided to be biases (one of the same shape and camera gives the level;
        without one, the header's ``PEDESTAL``, else 0).
    """

    def __init__(self, biases):
        self.biases = biases
        self._levels: dict = {}

    @staticmethod
    def _key(fh: FrameHeader):
        return fh.header.get("NAXIS1"), fh.header.get("NAXIS2"), fh.camera

    def level(self, fh: FrameHeader) -> float:
        """The bias level for a frame.

        Parameters
        ----------
        fh : astrodart.frames.header.FrameHeader
            The frame's header.

        Returns
        -------
        float
            ADU.
        """
        key = self._key(fh)
        if key not in self._levels:
            same = [b for b in self.biases if self._key(b.fh) == key]
            self._levels[key] = _centre_median(same[0].path) if same else None
        if self._levels[key] is not None:
            return self._levels[key]
        pedestal = fh.header.get("PEDESTAL")
        return -float(pedestal) if isinstance(pedestal, (int, float)) and pedestal < 0 else 0.0

    def __call__(self, info: FrameEvidence) -> ImageStats:
        """Statistics of one frame.

        Parameters
        ----------
        info : FrameEvidence
            The frame.

        Returns
        -------
        ImageStats
            Its statistics.
        """
        fh = info.fh
        bitpix = int(fh.header.get("BITPIX", 16))
        full = fh.saturation or {8: 255.0}.get(bitpix, 65535.0)
        return image_stats(_frame_data(info.path), level=self.level(fh), full_range=full,
                           gain=fh.gain or 2.0)


def folder_filter(rel: str) -> str | None:
    """A filter named by a frame's folder, for frames without a FILTER keyword.

    Parameters
    ----------
    rel : str
        Path relative to the night, e.g. ``'lights/R/x.fits'``.

    Returns
    -------
    str or None
        The folder's name ('R') when it is short and says no frame type, else None.
    """
    parts = rel.split("/")
    if len(parts) < 2 or name_evidence(parts[-2] + "/x") is not None:
        return None
    folder = parts[-2]
    return folder if len(folder) <= 12 and not folder.isdigit() else None
