"""Layer 1: one place that absorbs the variety of FITS headers.

Stages never read raw keywords; they ask a :class:`FrameHeader` for
``exptime``, ``gain``, ``date_obs`` ... and get a value in stated units, ``None``
when the quantity is optional and absent, or a :class:`MissingKeywordError`
naming the file and the keywords tried when it is required.

Variants absorbed (all seen in real data, see ``../shared/data``):

* exposure: ``EXPTIME`` / ``EXPOSURE`` / ``EXP_TIME`` / ``ITIME``
* gain (e-/ADU): ``EGAIN`` / ``E-GAIN`` first, then ``GAIN`` / ``CCDGAIN`` unless that is a CMOS
  camera's gain *setting* (N.I.N.A., SharpCap, ASIAIR: see :attr:`FrameHeader.gain`); ``OFFSET``;
  read noise (e-): ``RON`` / ``RDNOISE`` / ``READNOIS``
* start time: ``DATE-OBS`` with or without a time-zone offset (MicroObservatory writes
  local time with ``-0700``), ``DATE-OBS`` + ``TIME-OBS``/``UT``, ``UT-OBS``, ``MJD-OBS``
* frame type: ``IMAGETYP`` / ``FRAMETYP`` / ``OBSTYPE`` spellings ('Bias Frame', 'BIAS', 'zero',
  'Dark Frame', 'Flat Field', 'FLAT', 'Light Frame', 'object', 'flatdark', ...)
* filter: ``FILTER`` / ``INSFILTE`` / ``FILTNAME`` / ``FILTER1``
* pointing: ``RA``/``DEC`` or ``OBJCTRA``/``OBJCTDEC`` in degrees or sexagesimal (RA hours)
* site: ``SITELAT``/``SITELONG``, ``LATITUDE``/``LONGITUD``, ``OBSLAT``/``OBSLONG``, ``LAT-OBS``/``LONG-OBS``,
  in degrees or sexagesimal; MicroObservatory's unsigned ``LONGITUD`` is degrees WEST
* binning ``XBINNING``/``YBINNING`` (or ``CCDXBIN``/``BINNING``), CCD temperature ``CCD-TEMP``/``CCDTEMP``/``CAMTEMP`` (K -> C)
* pixel scale (arcsec/px): ``SCALE``/``PIXSCALE``/``IM_SCALE``/``SECPIX``, or ``XPIXSZ`` (um) with ``FOCALLEN`` (mm)
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from astropy import units as u
from astropy.io import fits

from astrodart.exceptions import warn
from astrodart.frames.checks import SATURATION_KEYS, raw_saturation
from astrodart.frames.cmos import GainSettingWarning, gain_setting_reason
from astrodart.frames.io import read_header

if TYPE_CHECKING:  # astropy.coordinates (~0.3 s with astropy.table) loads in coord/location
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

__all__ = [
    "FRAME_TYPES",
    "MissingKeywordError",
    "HeaderValueError",
    "FrameHeader",
    "normalise_frame_type",
    "normalise_name",
]

#: Normalised frame types. ``flatdark`` (darks taken for the flats) is its own type:
#: such frames are NOT also flats or darks.
FRAME_TYPES = ("bias", "dark", "flat", "flatdark", "object")

_TYPE_SPELLINGS = {
    "bias": ("bias", "bias frame", "zero", "zero frame", "offset", "biasframe"),
    "dark": ("dark", "dark frame", "darkframe", "dark current"),
    "flat": ("flat", "flat field", "flatfield", "flat frame", "dome flat", "sky flat", "twilight flat",
             "domeflat", "skyflat", "flat-field", "lamp flat", "twiflat", "twilight"),
    "flatdark": ("flatdark", "flat dark", "dark flat", "darkflat", "flat-dark", "dark for flat",
                 "flat_dark", "dark_flat"),
    "object": ("object", "light", "light frame", "science", "lightframe", "obj", "target",
               "tricolor image", "standard"),
}
_TYPE_LOOKUP = {sp: t for t, sps in _TYPE_SPELLINGS.items() for sp in sps}


class MissingKeywordError(KeyError):
    """A required header quantity is absent; the message names the file and keywords tried.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    quantity : str
        What is missing, e.g. ``"exposure time"``.
    keywords : sequence of str
        The keywords looked for; the first is suggested in the fix.
    """

    def __init__(self, path, quantity: str, keywords):
        self.path = str(path)
        self.quantity = quantity
        self.keywords = tuple(keywords)
        msg = (f"{self.path}: no {quantity} in the header (looked for {', '.join(self.keywords)}); "
               f"add one with header_tools(files, {{'{self.keywords[0]}': value}}).append_header_key()")
        super().__init__(msg)

    def __str__(self):  # KeyError quotes its message otherwise
        return self.args[0]


class HeaderValueError(ValueError):
    """A header keyword is present but its value cannot be understood.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    keyword : str
        The keyword.
    value : object
        Its value.
    expected : str
        What was expected, e.g. ``"a number"``.
    """

    def __init__(self, path, keyword: str, value, expected: str):
        self.path = str(path)
        super().__init__(f"{self.path}: keyword {keyword}={value!r} is not {expected}")


def normalise_frame_type(value) -> str | None:
    """Map an ``IMAGETYP`` spelling to one of :data:`FRAME_TYPES`.

    Parameters
    ----------
    value : str or None
        The header value, e.g. ``'Light Frame'``, ``'FLAT'``, ``'Dark_Frame'``.

    Returns
    -------
    str or None
        ``'bias'``, ``'dark'``, ``'flat'``, ``'flatdark'`` or ``'object'``; None if unknown.
    """
    if value is None:
        return None
    key = re.sub(r"[\s_]+", " ", str(value).strip().lower())
    if key in _TYPE_LOOKUP:
        return _TYPE_LOOKUP[key]
    compact = key.replace(" ", "").replace("-", "")
    for sp, t in _TYPE_LOOKUP.items():
        if sp.replace(" ", "").replace("-", "") == compact:
            return t
    return None


def normalise_name(value) -> str:
    """Canonical form of a target name for matching.

    Parameters
    ----------
    value : str
        A target name.

    Returns
    -------
    str
        Lower case without spaces, '-' or '_' (so 'hat-p-27', 'HAT P 27' and 'HAT_P_27'
        are all 'hatp27').
    """
    return re.sub(r"[\s\-_]+", "", str(value)).lower()


def _clean(value):
    if isinstance(value, str):
        value = value.strip()
        return value if value else None
    return value


class FrameHeader:
    """Normalised view of one frame's header.

    Parameters
    ----------
    header : astropy.io.fits.Header or dict
        The raw header.
    path : str or pathlib.Path, optional
        File the header came from, used in error messages.

    Notes
    -----
    Construct from a file with :meth:`from_file`. Every property returns a value in
    stated units; optional quantities are ``None`` when absent.
    """

    EXPTIME_KEYS = ("EXPTIME", "EXPOSURE", "EXP_TIME", "ITIME", "EXPOSED")
    #: Gain keywords: the first two may be a CMOS gain setting, the rest are e-/ADU.
    GAIN_KEYS = ("GAIN", "CCDGAIN", "EGAIN", "E-GAIN", "GAIN_E")
    RON_KEYS = ("RON", "RDNOISE", "READNOIS", "READNOISE", "RN")
    FILTER_KEYS = ("FILTER", "INSFILTE", "FILTNAME", "FILTER1", "FILT")
    TYPE_KEYS = ("IMAGETYP", "FRAMETYP", "OBSTYPE", "IMGTYPE", "FRAME")
    OBJECT_KEYS = ("OBJECT", "OBJNAME", "TARGET")
    RA_KEYS = ("RA", "OBJCTRA", "RA_OBJ", "TELRA", "CRVAL1_HINT")
    DEC_KEYS = ("DEC", "OBJCTDEC", "DEC_OBJ", "TELDEC")
    LAT_KEYS = ("SITELAT", "LATITUDE", "OBSLAT", "LAT-OBS", "OBS-LAT", "GEOLAT")
    LON_KEYS = ("SITELONG", "LONGITUD", "OBSLONG", "LONG-OBS", "OBS-LONG", "GEOLON", "LONGITUDE")
    HEIGHT_KEYS = ("SITEELEV", "ALTITUDE", "OBSALT", "ALT-OBS", "ELEVATIO", "HEIGHT")
    SCALE_KEYS = ("SCALE", "PIXSCALE", "IM_SCALE", "SECPIX", "PIXSCAL1", "PLTSCALE")

    def __init__(self, header, path=None):
        self.header = header if isinstance(header, fits.Header) else fits.Header(header)
        self.path = str(path) if path is not None else "<header>"

    @classmethod
    def from_file(cls, path) -> "FrameHeader":
        """Read the image header of ``path`` (see :func:`astrodart.frames.io.read_header`)."""
        return cls(read_header(path), path)

    # -- helpers -------------------------------------------------------------------
    def _first(self, keys):
        for k in keys:
            if k in self.header:
                v = _clean(self.header[k])
                if v is not None:
                    return k, v
        return None, None

    def _float(self, keys, quantity, required):
        k, v = self._first(keys)
        if k is None:
            if required:
                raise MissingKeywordError(self.path, quantity, keys)
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            raise HeaderValueError(self.path, k, v, f"a number ({quantity})") from None

    # -- exposure and detector ---------------------------------------------------------
    @property
    def exptime(self) -> float:
        """Exposure time in seconds (required: raises :class:`MissingKeywordError`;
        a negative or non-finite value raises :class:`HeaderValueError`)."""
        return self._exptime(True)

    @property
    def exptime_or_none(self) -> float | None:
        """Exposure time in seconds, or None if absent (a negative value raises)."""
        return self._exptime(False)

    def _exptime(self, required: bool) -> float | None:
        t = self._float(self.EXPTIME_KEYS, "exposure time", required)
        if t is not None and not (t >= 0 and math.isfinite(t)):
            raise HeaderValueError(self.path, self._first(self.EXPTIME_KEYS)[0], t,
                                   "a usable exposure time (a finite number of seconds >= 0)")
        return t

    @property
    def gain(self) -> float | None:
        """Detector gain in e-/ADU, or None if absent or only a camera's gain setting.

        ``EGAIN``/``E-GAIN``/``GAIN_E`` (always e-/ADU: N.I.N.A., SharpCap, MaxIm DL, SBIG
        CCDOPS) win. A ``GAIN``/``CCDGAIN`` alone is e-/ADU (MaxIm DL, IRAF) unless it is
        clearly a CMOS gain setting (:func:`astrodart.frames.cmos.gain_setting_reason`: a
        CMOS camera, an ``OFFSET`` beside it, or above 20); then None, said once per frame
        in a :class:`~astrodart.frames.cmos.GainSettingWarning`.
        """
        return self._gain_reading()[0]

    @property
    def gain_keyword(self) -> str | None:
        """The keyword :attr:`gain` was read from, or None."""
        return self._gain_reading()[1]

    @property
    def gain_setting(self) -> float | None:
        """The camera's gain setting (unitless, e.g. 120 on a ZWO ASI), or None: ``GAIN``
        when it is not e-/ADU (see :attr:`gain`)."""
        return self._gain_reading()[2]

    @property
    def offset(self) -> float | None:
        """The camera's offset setting (``OFFSET``, unitless; CMOS capture programs), or None."""
        return self._float(("OFFSET",), "offset", False)

    def _gain_reading(self) -> tuple:
        """``(gain e-/ADU or None, its keyword, the gain setting or None)``."""
        ek, egain = self._first(self.GAIN_KEYS[2:])
        sk, setting = self._first(self.GAIN_KEYS[:2])
        if ek is not None:
            egain = self._float((ek,), "gain", True)
            setting = self._float((sk,), "gain", True) if sk else None
            return egain, ek, setting if setting != egain else None
        if sk is None:
            return None, None, None
        value = self._float((sk,), "gain", True)
        reason = gain_setting_reason(value, self.camera, "OFFSET" in self.header)
        if reason is None:
            return value, sk, None
        if not getattr(self, "_gain_warned", False):
            self._gain_warned = True
            warn(f"{sk} is the camera's gain setting, not e-/ADU ({reason}): the gain is measured "
                 "from bias/flat pairs or assumed; add EGAIN (e-/ADU) with header_tools",
                 GainSettingWarning, item=f"{self.path.rsplit('/', 1)[-1]} ({sk}={value:g})")
        return None, None, value

    @property
    def read_noise(self) -> float | None:
        """Read noise in electrons, or None if absent."""
        return self._float(self.RON_KEYS, "read noise", False)

    @property
    def binning(self) -> tuple[int, int]:
        """``(xbin, ybin)``; ``(1, 1)`` when not recorded."""
        x = self.header.get("XBINNING", self.header.get("CCDXBIN"))
        y = self.header.get("YBINNING", self.header.get("CCDYBIN"))
        if x is None and "BINNING" in self.header:
            parts = re.split(r"[\sx,]+", str(self.header["BINNING"]).strip())
            if len(parts) >= 2:
                x, y = parts[:2]
            else:
                x = y = parts[0]
        x = int(x) if x is not None else 1
        y = int(y) if y is not None else x
        return x, y

    @property
    def ccd_temperature(self) -> float | None:
        """CCD temperature in degrees Celsius (Kelvin values > 150 are converted), or None."""
        v = self._float(("CCD-TEMP", "CCDTEMP", "CCD_TEMP", "TEMPERAT", "CAMTEMP", "DET-TEMP"),
                        "CCD temperature", False)
        if v is not None and v > 150:  # MicroObservatory's CAMTEMP is in Kelvin
            v -= 273.15
        return v

    @property
    def sensor_temperature(self) -> float | None:
        """Sensor temperature in deg C: :attr:`ccd_temperature`, else the set point
        (``SET-TEMP``/``SETTEMP``, MaxIm DL, N.I.N.A.), or None."""
        v = self.ccd_temperature
        return v if v is not None else self._float(("SET-TEMP", "SETTEMP"), "set temperature", False)

    @property
    def camera(self) -> str | None:
        """Camera name as written (``INSTRUME``/``DETECTOR``/``CAMERA``), or None."""
        v = self._first(("INSTRUME", "DETECTOR", "CAMERA"))[1]
        return str(v) if v is not None else None

    @property
    def camera_id(self) -> str | None:
        """One camera of a multi-camera night: ``INSTRUME``, ``DETECTOR`` and ``CCD-ID``
        as written, joined by ' / ' (opticam's three cameras share ``INSTRUME``), or None."""
        parts = [str(v) for v in (_clean(self.header.get(k)) for k in ("INSTRUME", "DETECTOR", "CCD-ID"))
                 if v is not None]
        return " / ".join(dict.fromkeys(parts)) or self.camera

    @property
    def bayer_pattern(self) -> str | None:
        """CFA pattern as written (``BAYERPAT``, else a pattern-like ``COLORTYP``), upper
        case; None for a monochrome frame (interpreted by :mod:`astrodart.color.bayer`)."""
        v = _clean(self.header.get("BAYERPAT"))
        if v is None:  # COLORTYP may also hold 'MONO' or 0 (MaxIm DL / SBIG)
            c = _clean(self.header.get("COLORTYP"))
            v = c if isinstance(c, str) and re.fullmatch(r"[RGBCMYW]{4}", c.upper()) else None
        return None if v is None else str(v).upper()

    @property
    def bayer_offsets(self) -> tuple[int, int]:
        """``(XBAYROFF, YBAYROFF)`` (or ``BAYOFFX``/``BAYOFFY``); ``(0, 0)`` when absent."""
        x = self._float(("XBAYROFF", "BAYOFFX"), "Bayer x offset", False) or 0
        y = self._float(("YBAYROFF", "BAYOFFY"), "Bayer y offset", False) or 0
        return int(x), int(y)

    @property
    def row_order(self) -> str | None:
        """``ROWORDER``: 'TOP-DOWN' or 'BOTTOM-UP' (Siril/CCDciel's keyword), or None."""
        v = _clean(self.header.get("ROWORDER"))
        if v is None:
            return None
        v = str(v).upper().replace("_", "-").replace(" ", "-")
        if v not in ("TOP-DOWN", "BOTTOM-UP"):
            raise HeaderValueError(self.path, "ROWORDER", v, "'TOP-DOWN' or 'BOTTOM-UP'")
        return v

    @property
    def saturation(self) -> float | None:
        """Saturation level of the raw data in ADU (``SATURATE``/``DATAMAX``/``MAXLIN``), or None."""
        v = self._float(SATURATION_KEYS, "saturation level", False)
        return v if v and v > 0 else None

    @property
    def raw_saturation(self) -> float | None:
        """Level at and above which raw integer pixels are saturated (see
        :func:`astrodart.frames.checks.raw_saturation`); None for floating-point data."""
        return raw_saturation(self.header)

    @property
    def pixel_scale(self) -> float | None:
        """Pixel scale in arcsec/px from a scale keyword, or from ``XPIXSZ`` (um, binned) and
        ``FOCALLEN`` (mm); None if neither is known."""
        v = self._float(self.SCALE_KEYS, "pixel scale", False)
        if v:
            return abs(v)
        pix = self._float(("XPIXSZ", "PIXSIZE1", "PIXSIZE"), "pixel size", False)
        focal = self._float(("FOCALLEN", "FOCAL"), "focal length", False)
        if pix and focal:
            return 206.264806 * pix / focal
        return None

    # -- classification --------------------------------------------------------------
    @property
    def raw_frame_type(self):
        """The frame-type keyword's raw value, or None."""
        return self._first(self.TYPE_KEYS)[1]

    @property
    def frame_type(self) -> str | None:
        """One of :data:`FRAME_TYPES`, or None when no frame-type keyword is understood."""
        return normalise_frame_type(self.raw_frame_type)

    @property
    def filter(self) -> str | None:
        """Filter name as written (stripped), or None."""
        return self._first(self.FILTER_KEYS)[1]

    @property
    def object(self) -> str | None:
        """Target name as written (stripped), or None."""
        v = self._first(self.OBJECT_KEYS)[1]
        return str(v) if v is not None else None

    # -- time ------------------------------------------------------------------------
    @property
    def date_obs(self) -> Time:
        """Exposure start as an astropy ``Time`` in the UTC scale.

        ``DATE-OBS`` with a time-zone offset (``2017-12-19T19:00:12.957-0700``) is
        converted to UTC; ``UT-OBS``, ``DATE-OBS`` + ``TIME-OBS``/``UT`` and ``MJD-OBS``
        are used when needed.

        Raises
        ------
        MissingKeywordError
            No usable start-time keyword.
        """
        for key in ("DATE-OBS", "UT-OBS", "DATE_OBS", "DATE-BEG"):
            v = _clean(self.header.get(key))
            if v is None:
                continue
            t = self._parse_datetime(str(v), key)
            if t is not None:
                return t
        from astropy.time import Time  # loaded on first use (25-70 ms of every process)

        mjd = self._float(("MJD-OBS", "MJD_OBS"), "start time", False)
        if mjd is not None:
            return Time(mjd, format="mjd", scale="utc")
        jd = self._float(("JD", "JD-OBS"), "start time", False)
        if jd is not None:
            return Time(jd, format="jd", scale="utc")
        raise MissingKeywordError(self.path, "exposure start time", ("DATE-OBS", "UT-OBS", "MJD-OBS"))

    def _parse_datetime(self, value: str, key: str):
        m = re.match(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?))?\s*(Z|[+-]\d{2}:?\d{2})?$",
                     value)
        if not m:
            # old style DD/MM/YY dates cannot be trusted for a time; let the next key try
            return None
        date, clock, tz = m.groups()
        if clock is None:
            clock = _clean(self.header.get("TIME-OBS", self.header.get("UT", self.header.get("UTSTART"))))
            if clock is None:
                return None
        from astropy.time import Time, TimeDelta

        try:
            t = Time(f"{date}T{clock}", format="isot", scale="utc")
        except ValueError:
            raise HeaderValueError(self.path, key, value, "an ISO date and time") from None
        if tz and tz != "Z":
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
            t = t - TimeDelta(offset, format="sec")  # local = UTC + offset
        return t

    @property
    def mid_exposure(self) -> Time:
        """Mid-exposure time (UTC): start + exptime / 2."""
        from astropy.time import TimeDelta

        return self.date_obs + TimeDelta((self.exptime_or_none or 0.0) / 2, format="sec")

    # -- pointing and site -------------------------------------------------------------
    @property
    def coord(self) -> SkyCoord | None:
        """Telescope pointing as an ICRS ``SkyCoord``, or None. Sexagesimal RA is in hours,
        decimal RA in degrees (the convention of the cameras seen)."""
        from astropy.coordinates import Angle, SkyCoord

        for rk, dk in zip(self.RA_KEYS, self.DEC_KEYS):
            ra, dec = _clean(self.header.get(rk)), _clean(self.header.get(dk))
            if ra is None or dec is None:
                continue
            try:
                if isinstance(ra, str) and re.search(r"[\s:hms]", ra.strip()):
                    ra_a = Angle(ra, unit=u.hourangle)
                else:
                    ra_a = Angle(float(ra), unit=u.deg)
                if isinstance(dec, str) and re.search(r"[\s:dms]", dec.strip().lstrip("+-")):
                    dec_a = Angle(dec, unit=u.deg)
                else:
                    dec_a = Angle(float(dec), unit=u.deg)
                return SkyCoord(ra_a, dec_a, frame="icrs")
            except (ValueError, TypeError):
                raise HeaderValueError(self.path, rk, f"{ra} / {dec}", "a right ascension/declination") from None
        return None

    def _west_positive(self, key) -> bool:
        comment = str(self.header.comments[key]).lower() if key in self.header else ""
        creator = " ".join(str(self.header.get(k, "")) for k in ("CREATOR", "ORIGIN", "REFERENC")).lower()
        return ("west" in comment and "east" not in comment) or "microobservatory" in creator

    @property
    def location(self) -> EarthLocation | None:
        """Observatory location (east-positive longitude), or None.

        Unsigned west longitudes are recognised from the keyword comment ('West') or the
        writing software (MicroObservatory's ``LONGITUD=110.88`` is 110.88 deg W).
        """
        from astropy.coordinates import Angle, EarthLocation

        lk, lat = self._first(self.LAT_KEYS)
        ok, lon = self._first(self.LON_KEYS)
        if lat is None or lon is None:
            return None
        try:
            lat_a = Angle(lat, unit=u.deg) if isinstance(lat, str) else Angle(float(lat), unit=u.deg)
            lon_s = str(lon).strip()
            west = lon_s[-1:].upper() == "W"
            lon_s = lon_s.rstrip("EWew").strip()
            lon_a = Angle(lon_s, unit=u.deg) if not _is_number(lon_s) else Angle(float(lon_s), unit=u.deg)
        except (ValueError, TypeError):
            raise HeaderValueError(self.path, lk, f"{lat} / {lon}", "a latitude/longitude") from None
        if west or (lon_a.deg > 0 and self._west_positive(ok)):
            lon_a = -lon_a
        height = self._float(self.HEIGHT_KEYS, "site height", False) or 0.0
        return EarthLocation.from_geodetic(lon=lon_a.wrap_at(180 * u.deg), lat=lat_a, height=height * u.m)

    def summary(self) -> dict:
        """The normalised quantities, for tables and logs.

        Returns
        -------
        dict
            ``{quantity: value}`` (frame type, filter, object, exposure in s, gain in e-/ADU,
            read noise in e-, binning, CCD temperature in deg C, pixel scale in arcsec/px);
            None where absent or not understood.
        """
        out = {}
        for name in ("frame_type", "filter", "object", "exptime_or_none", "gain", "read_noise",
                     "binning", "ccd_temperature", "pixel_scale"):
            try:
                out[name] = getattr(self, name)
            except (MissingKeywordError, HeaderValueError):
                out[name] = None
        try:
            out["date_obs"] = self.date_obs.isot
        except (MissingKeywordError, HeaderValueError):
            out["date_obs"] = None
        return out


def _is_number(s) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def shape_of(path) -> tuple[int, int]:
    """The image shape of a file, read from its header only.

    Parameters
    ----------
    path : str or pathlib.Path
        A FITS file.

    Returns
    -------
    tuple of int
        ``(ny, nx)``.

    Raises
    ------
    FrameError
        Missing, empty, unreadable or image-less file.
    """
    h = read_header(path)
    return int(h["NAXIS2"]), int(h["NAXIS1"])


__all__.append("shape_of")

