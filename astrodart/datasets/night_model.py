"""The model of a simulated night: the camera, the observing conditions, and the physics
of each frame (:class:`_Night`), assembled from the pixel-level pieces of
:mod:`astrodart.datasets.simulate`.

:func:`astrodart.datasets.simulated_night.simulate_night` builds a :class:`_Night` and
writes its frames; everything random comes from generators seeded by ``seed``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.time import Time, TimeDelta
from astropy.wcs import WCS

from astrodart.datasets import detector
from astrodart.datasets import simulate as sim

from astrodart.photometry.sites import Site
from astrodart.photometry import timing

__all__ = [
    "Camera",
    "ObservingConditions",
    "MSBO_SIMULATED",
]

log = logging.getLogger("astrodart")


#: Effective wavelengths (nm) of the filters, for the wavelength dependence of seeing.
_WAVELENGTH = {"B": 440.0, "V": 550.0, "R": 650.0}


@dataclass(frozen=True)
class Camera:
    """Telescope and camera of the simulated night (defaults: a 100 mm f/3.1 astrograph
    with a 9 um-pixel CCD without anti-blooming gates).

    Parameters
    ----------
    instrument, telescope : str
        Written to ``INSTRUME`` and ``TELESCOP``.
    aperture : float
        Aperture diameter (m); sets the scintillation noise.
    pixel_size : float
        Pixel pitch (um); with the pixel scale it gives ``FOCALLEN``.
    gain : float
        e-/ADU (``GAIN``).
    read_noise : float
        e- (``RON``).
    bias_level : float
        Mean bias (ADU).
    bias_column_sigma : float
        Column-to-column bias structure (ADU, standard deviation).
    bias_drift : float
        Frame-to-frame scatter of the bias level (ADU).
    full_well : float
        Pixel capacity (e-); charge above it bleeds along columns.
    dark_current : float
        Mean dark current of ordinary pixels (e-/s) at ``ccd_temperature``.
    hot_pixel_fraction : float
        Fraction of hot pixels (2 to 50 e-/s).
    amp_glow : float
        Extra dark current at the amplifier corner (e-/s).
    ccd_temperature : float
        Set point (deg C).
    readout_time : float
        Seconds between the end of one exposure and the start of the next.
    optics_fwhm : float
        Image blur of the optics and focus (arcsec FWHM), added in quadrature to seeing.
    psf : {'moffat', 'gaussian'}
        Star profile.
    beta : float
        Moffat index.
    vignetting : float
        Relative light loss at half the image diagonal.
    prnu : float
        Pixel-to-pixel response scatter.
    n_window_donuts, n_filter_donuts : int
        Dust donuts common to all filters (on the CCD window) and particular to each filter.
    zero_points : dict
        Per filter, the magnitude that yields 1 e-/s above the atmosphere.
    """

    instrument: str = "astrodart SimCam 9um (simulated CCD)"
    telescope: str = "100 mm f/3.1 astrograph (simulated)"
    aperture: float = 0.10
    pixel_size: float = 9.0
    gain: float = 1.4
    read_noise: float = 9.0
    bias_level: float = 1000.0
    bias_column_sigma: float = 1.5
    bias_drift: float = 0.8
    full_well: float = 80000.0
    dark_current: float = 0.1
    hot_pixel_fraction: float = 2e-4
    amp_glow: float = 0.5
    ccd_temperature: float = -10.0
    readout_time: float = 20.0
    optics_fwhm: float = 10.0
    psf: str = "moffat"
    beta: float = 3.0
    vignetting: float = 0.15
    prnu: float = 0.005
    n_window_donuts: int = 5
    n_filter_donuts: int = 2
    zero_points: Mapping[str, float] = field(
        default_factory=lambda: {"B": 17.7, "V": 18.3, "R": 18.4})


#: The observatory of the simulated night: Mt. Stony Brook Observatory, the site of the
#: real HAT-P-27b sample night (geodetic, east-positive longitude).
MSBO_SIMULATED = Site("MSBO", "Mt. Stony Brook Observatory", 40.9145, -73.1236, 40.0)


@dataclass(frozen=True)
class ObservingConditions:
    """Observatory and sky of the simulated night (defaults: Mt. Stony Brook Observatory
    under suburban skies).

    Parameters
    ----------
    site : astrodart.photometry.sites.Site
        The observatory (``OBSERVAT``, ``SITELAT``, ``SITELONG``, ``SITEELEV``); latitude
        and east-positive longitude in degrees, height in metres.
    seeing : float
        Atmospheric seeing at the zenith in V (arcsec FWHM); it scales as
        ``airmass^0.6 * wavelength^-0.2`` and wanders by about +-30 % during the night.
    extinction : dict
        Per filter, the extinction coefficient (mag per airmass).
    sky_brightness : dict
        Per filter, the zenith sky surface brightness (mag/arcsec^2).
    cosmic_ray_rate : float
        Cosmic-ray events per cm^2 of detector per minute (generous, so frames exercise
        cosmic-ray rejection).
    """

    site: Site = MSBO_SIMULATED
    seeing: float = 6.0
    extinction: Mapping[str, float] = field(
        default_factory=lambda: {"B": 0.35, "V": 0.22, "R": 0.16})
    sky_brightness: Mapping[str, float] = field(
        default_factory=lambda: {"B": 19.9, "V": 19.0, "R": 18.5})
    cosmic_ray_rate: float = 10.0

    def record(self) -> dict:
        """The conditions as plain JSON values (``truth['site']``).

        Returns
        -------
        dict
            ``name``, ``latitude``, ``longitude`` (deg, east positive), ``height`` (m),
            ``seeing``, ``extinction``, ``sky_brightness``, ``cosmic_ray_rate``.
        """
        return {"name": self.site.name, "latitude": self.site.lat,
                "longitude": self.site.lon, "height": self.site.height,
                "seeing": self.seeing, "extinction": dict(self.extinction),
                "sky_brightness": dict(self.sky_brightness),
                "cosmic_ray_rate": self.cosmic_ray_rate}

@dataclass
class _Spec:
    """One frame to make."""

    index: int
    kind: str               # bias, dark, flat, object
    name: str
    start: Time
    exptime: float
    filter: str | None = None


def _sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    ra_s = Angle(ra, u.deg).to_string(unit=u.hourangle, sep=" ", precision=2, pad=True)
    dec_s = Angle(dec, u.deg).to_string(unit=u.deg, sep=" ", precision=1, pad=True, alwayssign=True)
    return ra_s, dec_s


def _plain(d: dict) -> dict:
    """A dataclass's dict with its mappings as plain dicts (for JSON)."""
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()}


def _r(x, nd: int = 6):
    """Round floats (and lists of them) for a compact, stable truth.json."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_r(v, nd) for v in x]
    return round(float(x), nd)


class _Night:
    """Everything fixed for one simulated night; :meth:`frame` makes one frame."""

    def __init__(self, *, seed, shape, pixel_scale, camera: Camera,
                 conditions: ObservingConditions, target, centre,
                 stars: dict, dither, drift, rotation, series_start: Time, series_end: Time,
                 transit: dict | None, flat_level: float):
        self.seed, self.shape, self.scale = seed, shape, pixel_scale
        self.camera, self.conditions, self.target, self.centre = camera, conditions, target, centre
        self._airmass: dict[float, float] = {}
        self.stars, self.transit, self.flat_level = stars, transit, flat_level
        self.series_start, self.series_end = series_start, series_end
        ny, nx = shape
        cam = np.random.default_rng([seed, 0])             # the camera's fixed signatures
        self.bias = detector.bias_pattern(shape, camera.bias_level, cam, camera.bias_column_sigma)
        self.dark, self.hot_y, self.hot_x = detector.dark_current_map(
            shape, camera.dark_current, cam, hot_fraction=camera.hot_pixel_fraction,
            glow=camera.amp_glow)
        donut_scale = min(shape) / 512.0
        self.optical_centre = ((nx - 1) / 2 + cam.normal(0, 0.03 * nx),
                               (ny - 1) / 2 + cam.normal(0, 0.03 * ny))
        self.window_donuts = detector.random_donuts(shape, camera.n_window_donuts, cam,
                                               radius=(6 * donut_scale, 16 * donut_scale))
        prnu = camera.prnu * cam.standard_normal(shape)
        self.filter_donuts, self.flat = {}, {}
        for f in sorted(camera.zero_points):
            self.filter_donuts[f] = detector.random_donuts(shape, camera.n_filter_donuts, cam,
                                                      radius=(12 * donut_scale, 24 * donut_scale))
            self.flat[f] = detector.flat_response(
                shape, vignetting=camera.vignetting, optical_centre=self.optical_centre,
                donuts=self.window_donuts + self.filter_donuts[f], prnu=prnu)
        cond = np.random.default_rng([seed, 1])            # the night's weather and mount
        self.pointing_error = cond.normal(0.0, 60.0, 2)    # arcsec east, north
        self.seeing_terms = [(cond.uniform(0.4, 2.5), cond.uniform(0, 2 * np.pi)) for _ in range(3)]
        span = max((series_end - series_start).to_value(u.h), 0.5)
        self.dips = [(cond.uniform(0.02, 0.08), cond.uniform(0, span), cond.uniform(0.1, 0.3))
                     for _ in range(2)]
        self.sky_angle = cond.uniform(0, 2 * np.pi)
        self.sky_slope = cond.uniform(0.03, 0.08)          # fractional change across the width
        self.dither, self.drift, self.rotation = dither, drift, rotation

    # -- the conditions as functions of time -------------------------------------------------
    def hours(self, t: Time) -> float:
        return float((t - self.series_start).to_value(u.h))

    def seeing_factor(self, h: float) -> float:
        s = sum(math.sin(2 * math.pi * h / p + ph) for p, ph in self.seeing_terms) / math.sqrt(3)
        return math.exp(0.3 * s)

    def transparency(self, h: float) -> float:
        return 1.0 - sum(d * math.exp(-0.5 * ((h - c) / w) ** 2) for d, c, w in self.dips)

    def plan_airmass(self, specs) -> None:
        """Airmass of the field at the start and mid-exposure of every science frame, in
        one call of :func:`astrodart.photometry.timing.airmass` (one per frame is slow)."""
        times = []
        for spec in specs:
            if spec.kind == "object":
                times += [spec.start, spec.start + TimeDelta(spec.exptime / 2, format="sec")]
        if not times:
            return
        t = Time(times)
        site = self.conditions.site
        values = timing.airmass(t, SkyCoord(*self.centre, unit="deg"), site.location)
        # below the horizon no light comes through
        values = np.where(np.isnan(values), np.inf, values)
        self._airmass.update(zip((x.jd for x in times), (float(v) for v in values)))

    def airmass(self, t: Time) -> float:
        if t.jd not in self._airmass:
            self.plan_airmass([_Spec(0, "object", "", t, 0.0)])
        return self._airmass[t.jd]

    # -- frames --------------------------------------------------------------------------
    def frame(self, spec: _Spec) -> tuple[np.ndarray, fits.Header, dict]:
        rng = np.random.default_rng([self.seed, 2, spec.index])
        cam = self.camera
        bias = self.bias + rng.normal(0.0, cam.bias_drift)
        area_cm2 = self.shape[0] * self.shape[1] * (cam.pixel_size * 1e-4) ** 2
        minutes = (spec.exptime + cam.readout_time) / 60.0
        n_cr = int(rng.poisson(self.conditions.cosmic_ray_rate * area_cm2 * minutes))
        common = {"rng": rng, "exptime": spec.exptime, "gain": cam.gain, "bias": bias,
                  "read_noise": cam.read_noise, "n_cosmic_rays": n_cr, "full_well": cam.full_well}
        info = {"type": spec.kind, "exptime": spec.exptime, "date_obs": spec.start.isot,
                "bias_offset_adu": _r(float(bias.mean()) - cam.bias_level, 4),
                "n_cosmic_rays": n_cr}
        if spec.kind == "bias":
            fr = sim.simulate_frame(self.shape, **common)
        elif spec.kind == "dark":
            fr = sim.simulate_frame(self.shape, dark_rate=self.dark, **common)
        elif spec.kind == "flat":
            level = self.flat_level * rng.uniform(0.95, 1.05)
            fr = sim.simulate_frame(self.shape, sky=level, flat=self.flat[spec.filter],
                                    dark_rate=self.dark, **common)
            info.update(filter=spec.filter, illumination_e=_r(level, 2))
        else:
            kw, more = self.science(spec, rng)
            fr = sim.simulate_frame(self.shape, dark_rate=self.dark, flat=self.flat[spec.filter],
                                    psf=cam.psf, beta=cam.beta, **kw, **common)
            info.update(more)
        info["n_saturated_pixels"] = fr.info["n_saturated"]
        return fr.data, self.header(spec, info), info

    def science(self, spec: _Spec, rng: np.random.Generator) -> tuple[dict, dict]:
        """Arguments of :func:`simulate_frame` and truth of one science frame."""
        cam, site, f = self.camera, self.conditions, spec.filter
        mid = spec.start + TimeDelta(spec.exptime / 2, format="sec")
        h = self.hours(mid)
        x_air = self.airmass(mid)
        colour = (_WAVELENGTH.get(f, 550.0) / 550.0) ** -0.2
        seeing = site.seeing * x_air ** 0.6 * colour * self.seeing_factor(h)
        fwhm = math.hypot(cam.optics_fwhm, seeing) / self.scale
        transp = self.transparency(h)
        atm = 10 ** (-0.4 * site.extinction[f] * x_air) * transp
        dither = rng.uniform(-self.dither, self.dither, 2)
        east, north = self.pointing_error + dither + np.asarray(self.drift) * h
        dec_c = self.centre[1] + north / 3600.0
        ra_c = self.centre[0] + east / 3600.0 / math.cos(math.radians(dec_c))
        rot = self.rotation[0] + self.rotation[1] * h
        wcs = sim.tan_wcs(self.shape, ra_c, dec_c, self.scale, rot)
        st = self.stars
        x, y = wcs.all_world2pix(st["ra"], st["dec"], 0)
        scint = sim.scintillation_sigma(cam.aperture, x_air, spec.exptime, site.site.height)
        flux = st["rate"][f] * spec.exptime * atm * (1.0 + scint * rng.standard_normal(x.size))
        transit_factor = 1.0
        if self.transit is not None:
            tr = self.transit
            transit_factor = float(sim.transit_model(mid.jd, tr["t0_jd"], tr["duration_h"] / 24.0,
                                                     tr["depth"], tr["impact_parameter"]))
            flux[self.transit["index"]] *= transit_factor
        ny, nx = self.shape
        inside = (x > -50) & (x < nx + 50) & (y > -50) & (y < ny + 50)
        mu = site.sky_brightness[f] - 0.3 * (x_air - 1.0)      # brighter toward the horizon
        sky = float(sim.magnitude_to_rate(mu, cam.zero_points[f])) * self.scale ** 2 * spec.exptime
        grad = sky * self.sky_slope / nx
        gradient = (grad * math.cos(self.sky_angle), grad * math.sin(self.sky_angle))
        kw = {"x": x[inside], "y": y[inside], "flux": flux[inside], "fwhm": fwhm,
              "sky": sim.sky_plane(self.shape, sky, gradient)}
        truth = {"filter": f, "jd_mid_utc": _r(mid.jd, 8), "airmass": _r(x_air, 5),
                 "fwhm_px": _r(fwhm, 4), "seeing_arcsec": _r(seeing, 3),
                 "transparency": _r(transp, 5),
                 "atmospheric_transmission": _r(atm, 6), "scintillation_sigma": _r(scint, 6),
                 "sky_e_per_px": _r(sky, 3), "sky_gradient_e_per_px_per_px": _r(gradient, 6),
                 "centre_radec": _r([ra_c, dec_c], 8), "rotation_deg": _r(rot, 5),
                 "dither_arcsec": _r(dither, 3), "transit_factor": _r(transit_factor, 7),
                 "wcs": _wcs_dict(wcs)}
        if self.transit is not None:
            i = self.transit["index"]
            truth["transit_star_xy"] = _r([x[i], y[i]], 4)
            truth["transit_star_flux_e"] = _r(flux[i], 2)
        return kw, truth

    def header(self, spec: _Spec, info: dict) -> fits.Header:
        """The header a camera-control program would write (no WCS)."""
        cam, site = self.camera, self.conditions.site
        h = fits.Header()
        h["DATE-OBS"] = (spec.start.isot, "[UTC] start of exposure")
        h["TIMESYS"] = ("UTC", "time system of DATE-OBS")
        h["JD"] = (round(spec.start.jd, 6), "Julian date at start of exposure (UTC)")
        h["EXPTIME"] = (spec.exptime, "[s] duration of exposure")
        h["EXPOSURE"] = (spec.exptime, "[s] duration of exposure")
        h["IMAGETYP"] = ({"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
                          "object": "Light Frame"}[spec.kind], "type of image")
        if spec.filter is not None:
            h["FILTER"] = (spec.filter, "filter name")
        h["SET-TEMP"] = (cam.ccd_temperature, "[C] CCD temperature set point")
        h["CCD-TEMP"] = (round(cam.ccd_temperature + 0.05 * math.sin(spec.index), 3),
                         "[C] CCD temperature")
        h["XBINNING"], h["YBINNING"] = 1, 1
        h["XPIXSZ"] = (cam.pixel_size, "[um] pixel width")
        h["YPIXSZ"] = (cam.pixel_size, "[um] pixel height")
        h["FOCALLEN"] = (round(206.264806 * cam.pixel_size / self.scale, 1), "[mm] focal length")
        h["APTDIA"] = (cam.aperture * 1000.0, "[mm] aperture diameter")
        h["GAIN"] = (cam.gain, "[e-/ADU] detector gain")
        h["RON"] = (cam.read_noise, "[e-] read noise")
        h["INSTRUME"] = cam.instrument
        h["TELESCOP"] = cam.telescope
        h["OBSERVAT"] = site.name
        lat, lon = Angle(site.lat, u.deg), Angle(site.lon, u.deg)
        h["SITELAT"] = (lat.to_string(sep=" ", precision=0, alwayssign=True),
                        "[deg, N positive] site latitude")
        h["SITELONG"] = (lon.to_string(sep=" ", precision=0, alwayssign=True),
                         "[deg, E positive] site longitude")
        h["SITEELEV"] = (site.height, "[m] site elevation")
        if spec.kind == "object":
            h["OBJECT"] = (self.target, "target name")
            ra_s, dec_s = _sexagesimal(*self.centre)
            h["OBJCTRA"] = (ra_s, "[hms J2000] target right ascension")
            h["OBJCTDEC"] = (dec_s, "[dms J2000] target declination")
            # the mount reports where it was sent (target + commanded dither), not the
            # true centre: pointing error and drift are left for the plate solver
            dd = np.asarray(info["dither_arcsec"]) / 3600.0
            cos_dec = math.cos(math.radians(self.centre[1]))
            ra_m, dec_m = _sexagesimal(self.centre[0] + dd[0] / cos_dec, self.centre[1] + dd[1])
            h["RA"] = (ra_m, "[hms J2000] telescope right ascension")
            h["DEC"] = (dec_m, "[dms J2000] telescope declination")
            h["AIRMASS"] = (round(self.airmass(spec.start), 4), "airmass at start of exposure")
        h["SWCREATE"] = ("astrodart.datasets.simulated_night.simulate_night", "software")
        h["COMMENT"] = "Simulated frame with known truth: see uncal_data/truth.json."
        return h


def _wcs_dict(w: WCS) -> dict:
    """The true WCS as FITS keywords (CD-matrix convention), full precision."""
    cd = w.wcs.cd
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
            "RADESYS": "ICRS", "CRPIX1": float(w.wcs.crpix[0]), "CRPIX2": float(w.wcs.crpix[1]),
            "CRVAL1": float(w.wcs.crval[0]), "CRVAL2": float(w.wcs.crval[1]),
            "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]), "CD2_1": float(cd[1, 0]),
            "CD2_2": float(cd[1, 1])}
