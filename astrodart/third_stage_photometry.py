"""Stage 3, photometry: targets and comparison stars, aperture photometry with honest
errors, BJD_TDB time stamps and differential light curves (AstroDART-compatible).

The classes keep AstroDART's names and signatures (an AstroDART notebook keeps working
after ``AstroDART`` becomes ``astrodart``); the science is in
:mod:`astrodart.photometry.measure` and :mod:`astrodart.photometry.timing`.

Typical use (a night without WCS, pixel positions tracked through the night)::

    from astrodart.third_stage_photometry import *
    check_image(files[0][0], threshold=5).run()          # numbered stars, brightest = 0
    target, comps = coordinates(files=files[0], reference_frame=0, target_index=8,
                                comparison_stars_indeces=[0, 1, 2, 3]).from_index()
    target_px, comps_px = track_stars(files, target, comps)
    step = photometry('pixel', 'fwhm', files, filters, obs_location='Mt Stony Brook',
                      target_coord=target_px, comparison_coord=comps_px,
                      target_skycoord=SkyCoord('14h51m04.2s +05d56m50s'))
    res = step.run_multi_coord()
    fit = step.fit_transit(t0=2458231.678, duration=0.07)
    step.plot(fit=fit, path='lightcurve.png')

Result layout of :meth:`photometry.run_multi_coord` (``f`` is a filter name, ``n`` the
number of frames of that filter, ``m`` the number of comparison stars)::

    res['target']['coords']                 {'ra': {'value', 'unit'}, 'dec': {...}}; x/y in pixels
    res['target']['filter'][f]              dict of arrays of shape (n,):
        timestamps   BJD_TDB at mid-exposure (JD, days), toward the target
        flux, flux_err        sky-subtracted flux and 1-sigma error (data units, ADU or e-)
        mag_ins, mag_err      zmag - 2.5 log10(flux / exptime) and its error
        airmass               Hardie (1962) airmass of the target
        flags                 PhotFlag bits (0 = good); saturated, bad_pixels: bool views
        x, y                  0-based aperture centres; fwhm, r_ap, r_in, r_out (pixels)
        sky, sky_std          sky level and scatter per pixel; exptime (s); mid_exposure_utc (JD)
    res['comparison_stars']['comparison_N']  same structure, N = 1 .. m (the target's time stamps)
    res['differential']['filter'][f]        timestamps, rel_flux, rel_flux_err, airmass, valid (n,);
                                            weights, comparison_rms, comparison_expected_rms,
                                            comparison_excess, comparison_chi2_red,
                                            comparison_variable, comparison_used (m,);
                                            comparison_curves (m, n)
    res['files'][f]                         file names (n,)
    res['meta']                             method, apertures, site, versions, units
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.table import Table
from astropy.time import Time

from astrodart import __version__
from astrodart.photometry import measure as cph
from astrodart.photometry import timing
from astrodart.photometry.measure import EnsembleResult, PhotFlag, TransitFit
from astrodart.frames.io import FrameError, atomic_output, read_frame
from astrodart.frames.header import FrameHeader
from astrodart.ui.lightcurve_plot import _figure as _new_figure
from astrodart.ui.lightcurve_plot import plot_light_curve
from astrodart.photometry.sites import location_from_lat_lon, site_location
from astrodart.pipeline.step import check_kwargs, find_log_path, log_event, parse_overwrite

__all__ = [
    "get_site_coordinates",
    "check_image",
    "coordinates",
    "photometry",
    "track_positions",
    "track_stars",
    "plot_light_curve",
    "PhotFlag",
    "PhotometryWarning",
    "InteractiveUnavailableError",
    "StarSelection",
    "results_table",
    "write_results_hdf5",
]

log = logging.getLogger("astrodart")

#: Aperture radius, annulus inner and outer radius in units of the FWHM ('fwhm' apertures).
FWHM_FACTORS = (2.5, 3.5, 4.5)


class PhotometryWarning(UserWarning):
    """Something in the photometry the user should know about (a skipped frame, a missing
    gain, ...); the message names the file and what was done."""


class InteractiveUnavailableError(RuntimeError):
    """An interactive picker was asked for where none can run (no notebook or no widgets)."""


# ----------------------------------------------------------------------------- sites
class get_site_coordinates:  # noqa: N801  (AstroDART's public name)
    """The observatory as an :class:`~astropy.coordinates.EarthLocation`.

    Parameters
    ----------
    coordinates : sequence of float, optional
        ``[lat_deg, lon_deg, height_m]``, longitude east-positive (west negative).
    observatory_location : str, optional
        Name of an observatory: a built-in one (``'OT'`` for Observatorio del Teide,
        ``'Roque de los Muchachos'``, ``'Calar Alto'``, ``'La Silla'``, ``'Paranal'``,
        ``'Mauna Kea'``, ``'Kitt Peak'``, ``'Lick'``, ``'McDonald'``, ``'Palomar'``,
        ``'Whipple'``, ``'Siding Spring'``, ``'Mt Stony Brook'`` ... see
        :data:`astrodart.photometry.sites.SITES`), else astropy's site registry (needs a network).

    Examples
    --------
    >>> get_site_coordinates(observatory_location='OT').from_name()  # doctest: +SKIP
    >>> get_site_coordinates(coordinates=[40.91, -73.12, 40]).from_lat_lon()  # doctest: +SKIP
    """

    def __init__(
        self, coordinates: Sequence[float] | None = None, observatory_location: str | None = None
    ):
        self.coordinates = coordinates
        self.observatory_location = observatory_location

    def from_lat_lon(self) -> EarthLocation:
        """Location from ``coordinates``.

        Raises
        ------
        ValueError
            ``coordinates`` missing or malformed (see
            :func:`astrodart.photometry.sites.location_from_lat_lon`).
        """
        if self.coordinates is None:
            raise ValueError("from_lat_lon() needs coordinates=[lat_deg, lon_deg, height_m]")
        return location_from_lat_lon(self.coordinates)

    def from_name(self) -> EarthLocation:
        """Location of ``observatory_location``.

        Raises
        ------
        ValueError
            No name given.
        astrodart.photometry.sites.UnknownSiteError
            Unknown name (the message lists the built-in sites).
        """
        if not self.observatory_location:
            raise ValueError("from_name() needs observatory_location='OT' (or another site name)")
        return site_location(self.observatory_location)


def _resolve_location(obs_location, header: FrameHeader | None = None) -> EarthLocation:
    if isinstance(obs_location, EarthLocation):
        return obs_location
    if isinstance(obs_location, str):
        return site_location(obs_location)
    if obs_location is not None:
        return location_from_lat_lon(obs_location)
    if header is not None:
        loc = header.location
        if loc is not None:
            log.info("observatory location taken from the header of %s", header.path)
            return loc
    raise ValueError(
        "the observatory location is unknown: pass obs_location= (a site name such "
        "as 'OT', [lat_deg, lon_deg, height_m], or an EarthLocation); the frames "
        "carry no site keywords"
    )


# --------------------------------------------------------------------- frame helpers
def _frame_wcs(header):
    """The celestial WCS of a header, or None when it has none."""
    if not any(k in header for k in ("CTYPE1", "CD1_1", "PC1_1")):
        return None
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header, naxis=2)
        except Exception:  # malformed WCS keywords: treat as no WCS
            return None
    return w.celestial if w.has_celestial else None


def _pixel_scale_arcsec(wcs) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


# ------------------------------------------------------------------------ check_image
class check_image:  # noqa: N801  (AstroDART's public name)
    """Find and number the stars of a reference frame, brightest first.

    Parameters
    ----------
    reference_image : str or pathlib.Path
        FITS frame (calibrated).
    threshold : float
        Detection threshold in sigma of the matched-filtered background (see
        :func:`astrodart.sources.stars.find_stars`).
    plot : bool
        Draw the frame (zscale) with each star circled and numbered.

    Attributes
    ----------
    sources : astropy.table.Table
        After :meth:`run`: the detections, brightest first, with an ``id`` column (the
        number shown on the plot, 1-based) and ``x``, ``y`` (0-based pixels), ``flux``.
    fwhm : float
        FWHM of the frame, pixels.
    figure : matplotlib.figure.Figure or None
        The plot, when drawn.
    """

    def __init__(self, reference_image, threshold: float, plot: bool = True):
        self.reference_image = str(reference_image)
        self.threshold = float(threshold)
        self.plot = bool(plot)
        self.sources: Table | None = None
        self.fwhm: float = float("nan")
        self.figure = None

    def run(self) -> np.ndarray:
        """Detect, number and (optionally) plot the stars.

        Returns
        -------
        numpy.ndarray, shape (n, 2)
            0-based ``(x, y)`` of the stars, brightest first: row ``i`` is the star
            labelled ``i`` on the plot and in the star picker, and ``target_index=i`` of
            :class:`coordinates` (AstroDART labelled its plot from 1 but indexed from 0;
            here the label is the index).

        Raises
        ------
        astrodart.frames.io.FrameError
            Unreadable frame.
        ValueError
            No star found.
        """
        path = Path(self.reference_image)
        if not path.exists():
            raise FrameError(path, "file does not exist")
        stat = path.stat()
        stars, fwhm = _detect_stars(str(path), stat.st_mtime_ns, stat.st_size, self.threshold)
        self.fwhm = fwhm
        self.sources = stars.copy()
        positions = np.column_stack([np.asarray(stars["x"], float), np.asarray(stars["y"], float)])
        log.info("%s: %d stars, FWHM %.2f px", self.reference_image, len(stars), self.fwhm)
        if self.plot:
            ccd = read_frame(self.reference_image)
            self.figure = self._draw(
                np.asarray(ccd.data, dtype=float), positions, _frame_wcs(ccd.meta)
            )
        return positions

    def _draw(self, data, positions, wcs, max_labels: int = 60):
        from astropy.visualization import ZScaleInterval

        fig = _new_figure((8, 8))
        ax = fig.add_subplot(111, projection=wcs) if wcs is not None else fig.add_subplot(111)
        lo, hi = ZScaleInterval().get_limits(data[np.isfinite(data)])
        ax.imshow(data, origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        r = max(6.0, 2.5 * self.fwhm)
        for i, (x, y) in enumerate(positions[:max_labels]):
            ax.add_patch(_circle((x, y), r))
            ax.text(x + r + 2, y + r + 2, str(i), color="yellow", fontsize=9)
        name = Path(self.reference_image).name
        name = name if len(name) <= 60 else "..." + name[-57:]
        ax.set_title(
            f"{name}\n{len(positions)} stars (FWHM {self.fwhm:.2f} px); 0 = brightest "
            f"(the number is target_index / comparison_stars_indeces)",
            fontsize=9,
        )
        if wcs is None:
            ax.set_xlabel("x (pixel, 0-based)")
            ax.set_ylabel("y (pixel, 0-based)")
        else:
            ax.set_xlabel("Right ascension")
            ax.set_ylabel("Declination")
        return fig


@functools.lru_cache(maxsize=8)
def _detect_stars(path: str, mtime_ns: int, size: int, threshold: float) -> tuple[Table, float]:
    """Stars of a frame, brightest first, and its FWHM; cached per file version, so that
    check_image, from_index and from_image on the same frame detect only once."""
    from astrodart.sources.stars import find_stars, measure_fwhm

    ccd = read_frame(path)
    data = np.asarray(ccd.data, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoStarsWarning: handled below
        fw = measure_fwhm(data, mask=ccd.mask).fwhm
    if not np.isfinite(fw):
        fw = 3.0
        log.info("%s: FWHM not measurable, detecting with 3 px", path)
    stars = find_stars(data, fwhm=float(fw), threshold=threshold, mask=ccd.mask)
    if len(stars) == 0:
        raise ValueError(f"{path}: no star above {threshold} sigma; lower threshold=")
    stars = stars.copy()
    stars.add_column(np.arange(len(stars)), name="id", index=0)
    return stars, float(fw)


def _circle(xy, r):
    from matplotlib.patches import Circle

    return Circle(xy, r, fill=False, color="cyan", lw=1.0)


# ------------------------------------------------------------------------ coordinates
def _xy_pairs(obj, what: str) -> tuple[np.ndarray, bool]:
    """(n, 2) array from an (x, y) pair or a list of pairs; and whether it was a single pair."""
    arr = np.asarray(obj, dtype=float)
    if arr.shape == (2,):
        return arr[None, :], True
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr, False
    raise ValueError(
        f"{what} must be an (x, y) pair or a list of (x, y) pairs; got shape {arr.shape}"
    )


class coordinates:  # noqa: N801  (AstroDART's public name)
    """Pick targets and comparison stars, and convert positions between pixels and sky.

    Parameters
    ----------
    files : list of str, optional
        Frames of one filter.
    pixel_coordinates : list, optional
        For :meth:`px_to_world`: one entry per file, each an ``(x, y)`` pair or a list
        of pairs (0-based pixels). For :meth:`track_px`: the position(s) on the
        reference frame.
    world_coordinates : SkyCoord or list of SkyCoord, optional
        For :meth:`world_to_px`.
    check_reference_image : bool
        For :meth:`from_image`: show the numbered reference frame.
    reference_frame : int, optional
        Index in ``files`` of the reference frame (default 0).
    target_index : int, optional
        For :meth:`from_index`: index of the target in :meth:`check_image.run`'s list,
        i.e. the number shown on its plot (0 = brightest; 0-based as in AstroDART).
    comparison_stars_indeces : list of int, optional
        Same for the comparison stars.
    """

    def __init__(
        self,
        files: Sequence | None = None,
        pixel_coordinates=None,
        world_coordinates=None,
        check_reference_image: bool = True,
        reference_frame: int | None = None,
        target_index: int | None = None,
        comparison_stars_indeces: Sequence[int] | None = None,
    ):
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f) for f in files] if files is not None else None
        self.pixel_coordinates = pixel_coordinates
        self.world_coordinates = world_coordinates
        self.check_reference_image = check_reference_image
        self.reference_frame = 0 if reference_frame is None else int(reference_frame)
        self.target_index = target_index
        self.comparison_stars_indeces = comparison_stars_indeces

    def _need_files(self, method: str) -> list[str]:
        if not self.files:
            raise ValueError(f"coordinates.{method}() needs files=[...]")
        return self.files

    def _reference(self) -> str:
        files = self._need_files("from_index")
        if not -len(files) <= self.reference_frame < len(files):
            raise IndexError(
                f"reference_frame={self.reference_frame} but there are {len(files)} files"
            )
        return files[self.reference_frame]

    def _select(self, positions: np.ndarray, ref: str, target_index, comparison_indices):
        n = len(positions)

        def check(i, what):
            if not isinstance(i, (int, np.integer)) or not -n <= i < n:
                raise IndexError(
                    f"{what}={i!r} but check_image found {n} stars on {ref} "
                    f"(valid 0..{n - 1}, the numbers on its plot)"
                )
            return int(i)

        t = check(target_index, "target_index")
        comps = [check(i, "comparison_stars_indeces entry") for i in comparison_indices]
        if t in comps:
            raise ValueError(f"star {t} is both the target and a comparison")
        ccd_header = read_frame(ref).meta
        wcs = _frame_wcs(ccd_header)
        if wcs is None:
            log.info("%s has no WCS: target and comparisons are returned as pixel positions", ref)
            return (tuple(positions[t]), [tuple(positions[i]) for i in comps])
        world = wcs.pixel_to_world(positions[:, 0], positions[:, 1])
        return world[t], [world[i] for i in comps]

    def from_index(self):
        """Target and comparisons from their indices in the reference frame's star list.

        Returns
        -------
        target : SkyCoord or tuple of float
            The target: a SkyCoord when the reference frame has a WCS, else its 0-based
            ``(x, y)`` on the reference frame.
        comparisons : list of SkyCoord or list of tuple
            The comparison stars, likewise.

        Raises
        ------
        ValueError
            Indices missing, or a star chosen as both target and comparison.
        IndexError
            An index beyond the stars found.
        """
        if self.target_index is None or self.comparison_stars_indeces is None:
            raise ValueError("from_index() needs target_index= and comparison_stars_indeces=[...]")
        ref = self._reference()
        positions = check_image(ref, threshold=5, plot=False).run()
        return self._select(positions, ref, self.target_index, list(self.comparison_stars_indeces))

    def from_image(self) -> "StarSelection":
        """Pick target and comparisons by clicking on the numbered reference frame.

        In a Jupyter notebook this shows astrodart's star picker
        (:func:`astrodart.ui.widgets.star_picker`) on the reference frame; a cell's code
        runs before anyone can click, so read the choice in the *next* cell::

            selection = coordinates(files=files[0], reference_frame=0).from_image()
            selection                                   # click target, then comparisons
            # next cell
            target, comparisons = selection.result()

        Returns
        -------
        StarSelection
            Shows the picker; ``.result()`` returns ``(target, comparisons)`` as
            :meth:`from_index` does.

        Raises
        ------
        InteractiveUnavailableError
            Outside a notebook (a script, pytest) or without ipywidgets; the message says
            how to do the same with :class:`check_image` and :meth:`from_index`.
        """
        hint = (
            "run check_image(reference_frame_path, threshold=5).run() to see the numbered "
            "stars, then coordinates(files=..., reference_frame=..., target_index=N, "
            "comparison_stars_indeces=[...]).from_index() with the numbers shown"
        )
        try:
            from astrodart.ui import widgets
        except ImportError as exc:
            raise InteractiveUnavailableError(
                f"the star picker needs ipywidgets ({exc}); {hint}"
            ) from exc
        if not widgets.frontend_available():
            raise InteractiveUnavailableError(
                f"from_image() is interactive and needs a Jupyter notebook; here {hint}"
            )
        ref = self._reference()
        positions = check_image(ref, threshold=5, plot=False).run()
        picker = widgets.star_picker(ref, stars=positions)
        return StarSelection(self, ref, positions, picker)

    def px_to_world(self) -> list:
        """Sky positions of pixel positions, file by file.

        Returns
        -------
        list
            One entry per file: a SkyCoord (scalar for an ``(x, y)`` pair, an array for a
            list of pairs) from ``pixel_coordinates[i]`` through file ``i``'s WCS.

        Raises
        ------
        ValueError
            A file without WCS, or ``pixel_coordinates`` not one entry per file.
        """
        files = self._need_files("px_to_world")
        pc = self.pixel_coordinates
        if pc is None or len(pc) != len(files):
            raise ValueError(
                f"px_to_world() needs pixel_coordinates with one (x, y) entry per "
                f"file ({len(files)} files)"
            )
        out = []
        for f, p in zip(files, pc):
            wcs = _frame_wcs(read_frame(f).meta)
            if wcs is None:
                raise ValueError(
                    f"{f}: no WCS in the header (plate-solve it first); pixel "
                    "positions cannot be converted to the sky"
                )
            xy, single = _xy_pairs(p, "pixel_coordinates entry")
            sky = wcs.pixel_to_world(xy[:, 0], xy[:, 1])
            out.append(sky[0] if single else sky)
        return out

    def world_to_px(self) -> list:
        """Pixel positions of ``world_coordinates`` in every file.

        Returns
        -------
        list
            One entry per file: an ``(x, y)`` tuple (0-based) for a scalar SkyCoord, or a
            list of tuples for a list / array of them.

        Raises
        ------
        ValueError
            A file without WCS, or no ``world_coordinates``.
        """
        files = self._need_files("world_to_px")
        wc = self.world_coordinates
        if wc is None:
            raise ValueError(
                "world_to_px() needs world_coordinates= (a SkyCoord or a list of them)"
            )
        single = isinstance(wc, SkyCoord) and wc.isscalar
        sky = wc if isinstance(wc, SkyCoord) else SkyCoord(list(wc))
        out = []
        for f in files:
            wcs = _frame_wcs(read_frame(f).meta)
            if wcs is None:
                raise ValueError(
                    f"{f}: no WCS in the header (plate-solve it first, or use pixel "
                    "positions with phot_method='pixel')"
                )
            x, y = wcs.world_to_pixel(sky)
            x, y = np.atleast_1d(x), np.atleast_1d(y)
            pairs = [(float(a), float(b)) for a, b in zip(x, y)]
            out.append(pairs[0] if single else pairs)
        return out

    def track_px(self) -> list[np.ndarray]:
        """Follow pixel positions given on the reference frame through every file.

        Returns
        -------
        list of numpy.ndarray, shape (n, 2)
            The positions in each file (see :func:`track_positions`).
        """
        files = self._need_files("track_px")
        if self.pixel_coordinates is None:
            raise ValueError(
                "track_px() needs pixel_coordinates= (positions on the reference frame)"
            )
        return track_positions(files, self.pixel_coordinates, reference=self._reference())


class StarSelection:
    """The choice made on :meth:`coordinates.from_image`'s star picker.

    Displaying it (as a cell's last expression) shows the picker; :meth:`result` reads
    the choice. Unpacking it directly (``target, comps = ...from_image()``, as in
    AstroDART) raises an error explaining the two-cell use, because the choice cannot
    exist before the cell that shows the picker has finished.
    """

    def __init__(self, coords: "coordinates", reference: str, positions: np.ndarray, picker):
        self._coords = coords
        self.reference = reference
        self.positions = positions
        self.picker = picker

    def _repr_mimebundle_(self, **kwargs):
        return self.picker._repr_mimebundle_(**kwargs)

    def __iter__(self):
        raise InteractiveUnavailableError(
            "from_image() shows a star picker: end the cell with `selection = coordinates(...)"
            ".from_image(); selection`, click the target and comparisons, then in the next cell "
            "`target, comparisons = selection.result()`"
        )

    def result(self):
        """``(target, comparisons)`` as :meth:`coordinates.from_index` returns them.

        Raises
        ------
        ValueError
            No target or no comparison chosen yet.
        """
        t = self.picker.target_index
        comps = list(self.picker.comparison_indices)
        if t is None or not comps:
            raise ValueError("choose a target and at least one comparison star on the picker first")
        return self._coords._select(self.positions, self.reference, t, comps)


# -------------------------------------------------------------------------- tracking
def track_positions(
    files: Sequence,
    positions,
    reference=None,
    *,
    fwhm: float | None = None,
    n_stars: int = 40,
    bin_factor: int = 2,
) -> list[np.ndarray]:
    """Follow star positions from a reference frame through other frames of the field.

    Parameters
    ----------
    files : list of str
        Frames to follow the stars through.
    positions : (x, y) pair or array_like, shape (n, 2)
        0-based positions on the reference frame.
    reference : str, optional
        Reference frame path (default ``files[0]``).
    fwhm : float, optional
        FWHM in pixels for star detection (default: measured on the reference frame).
    n_stars : int
        Bright stars used to match each frame with the reference.
    bin_factor : int
        Stars are detected on frames block-averaged by this factor (faster), then
        re-centred at full resolution.

    Returns
    -------
    list of numpy.ndarray, shape (n, 2)
        Positions in each file (not yet re-centred: :class:`photometry` re-centres them).

    Notes
    -----
    For each frame a similarity transform (shift, rotation, scale) between its brightest
    stars and the reference's is found from star-triangle patterns (astroalign); when too
    few stars match, the translation from phase correlation of the images is used (a
    :class:`PhotometryWarning` says so).
    """
    files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    xy0, _ = _xy_pairs(positions, "positions")
    ref_path = str(reference) if reference is not None else files[0]
    ref = np.asarray(read_frame(ref_path).data, dtype=float)
    if fwhm is None:
        stars = cph.bright_star_positions(ref, fwhm=3.0, n=n_stars)
        fwhm = cph.frame_fwhm(ref, stars[:15]) if len(stars) else float("nan")
        fwhm = fwhm if np.isfinite(fwhm) else 3.0
    ref_xy = cph.bright_star_positions(ref, fwhm=fwhm, n=n_stars, bin_factor=bin_factor)
    out = []
    for f in files:
        if f == ref_path:
            out.append(xy0.copy())
            continue
        data = np.asarray(read_frame(f).data, dtype=float)
        try:
            xy = cph.bright_star_positions(data, fwhm=fwhm, n=n_stars, bin_factor=bin_factor)
            m = cph.frame_transform(ref_xy, xy)
        except ValueError as exc:
            dx, dy = cph.image_offset(ref, data)
            warnings.warn(
                PhotometryWarning(
                    f"{f}: {exc}; using the phase-correlation shift ({dx:.1f}, {dy:.1f}) px"
                ),
                stacklevel=2,
            )
            m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        out.append(cph.apply_transform(m, xy0))
    return out


def track_stars(files, target, comparisons, reference=None):
    """Pixel positions of a target and comparisons in every frame, in :class:`photometry`'s
    ``'pixel'`` layout.

    Parameters
    ----------
    files : list of list of str (or a list of str for one filter)
        Frames per filter.
    target : (x, y) pair
        Target position on the reference frame (0-based pixels).
    comparisons : list of (x, y) pairs
        Comparison positions on the reference frame.
    reference : str, optional
        Reference frame (default the first frame of the first filter).

    Returns
    -------
    target_coord : list
        ``target_coord[filter][file] = (x, y)``.
    comparison_coord : list
        ``comparison_coord[star][filter][file] = (x, y)``.
    """
    per_filter = _as_file_lists(files)
    ref = str(reference) if reference is not None else per_filter[0][0]
    comps, _ = (
        _xy_pairs(comparisons, "comparisons") if len(comparisons) else (np.zeros((0, 2)), False)
    )
    allxy = np.vstack([_xy_pairs(target, "target")[0], comps])
    tracked = [track_positions(fl, allxy, reference=ref) for fl in per_filter]
    target_coord = [[tuple(p[0]) for p in tr] for tr in tracked]
    comparison_coord = [
        [[tuple(p[k + 1]) for p in tr] for tr in tracked] for k in range(len(comps))
    ]
    return target_coord, comparison_coord


def _as_file_lists(files) -> list[list[str]]:
    if files is None or len(files) == 0:
        raise ValueError("files must be a list of frames per filter (or one list of frames)")
    if isinstance(files, (str, Path)):
        return [[str(files)]]
    if all(isinstance(f, (str, Path)) for f in files):
        return [[str(f) for f in files]]
    return [[str(f) for f in fl] for fl in files]


# ------------------------------------------------------------------------ photometry
def _radius_px(value, name: str, wcs, method: str) -> float:
    """A radius in pixels from a number (pixels for 'pixel', arcsec for 'sky') or a Quantity."""
    if isinstance(value, u.Quantity):
        if value.unit == u.pix:
            return float(value.value)
        if value.unit.physical_type == "angle":
            if wcs is None:
                raise ValueError(f"{name} is an angle but the frame has no WCS to convert it")
            return float(value.to_value(u.arcsec) / _pixel_scale_arcsec(wcs))
        raise ValueError(f"{name} must be in pixels or an angle, got unit {value.unit}")
    if method == "sky":
        return float(value) / _pixel_scale_arcsec(wcs)
    return float(value)


class photometry:  # noqa: N801  (AstroDART's public name)
    """Aperture photometry of a target, comparison stars or a single object in every frame.

    Parameters
    ----------
    phot_method : {'sky', 'pixel'}
        ``'sky'``: positions are SkyCoord, placed through each frame's WCS. ``'pixel'``:
        positions are 0-based ``(x, y)`` per filter per file, re-centred in each frame.
    aperture_type : {'fwhm', 'custom'}
        ``'fwhm'``: radius, annulus inner and outer radius = 2.5, 3.5, 4.5 x the FWHM of
        each frame. ``'custom'``: ``radius_phot``, ``radius_annulus``,
        ``radius_dannulus`` in pixels for ``'pixel'`` and arcsec for ``'sky'`` (an astropy
        Quantity in ``u.pix`` or an angle unit is taken as given).
    files : list of list of str
        Frames per filter (``files[filter][file]``); a flat list means one filter.
    filters : list of str, optional
        Filter names, one per list of ``files`` (default: from the headers).
    obs_location : str, sequence or EarthLocation, optional
        Observatory: a name (``'OT'``), ``[lat_deg, lon_deg, height_m]`` or an
        EarthLocation; default from the frames' site keywords.
    target_coord : SkyCoord or nested list, optional
        ``'sky'``: the target's SkyCoord. ``'pixel'``: ``target_coord[filter][file] =
        (x, y)``.
    comparison_coord : list, optional
        ``'sky'``: list of SkyCoord. ``'pixel'``: ``comparison_coord[star][filter][file]
        = (x, y)``. (``multi_coord=`` is accepted as in AstroDART's demo.)
    single_coord : SkyCoord or nested list, optional
        The object of :meth:`run_single_coord`, as ``target_coord``.
    radius_phot, radius_annulus, radius_dannulus : float or Quantity, optional
        Aperture radius and annulus inner / outer radius for ``'custom'``.
    zmag : float
        Magnitude zero point (magnitude of 1 data unit per second).
    save_results : bool
        Write the results to HDF5 and ECSV in ``save_data_dir``.
    save_data_dir : str or pathlib.Path, optional
        Where to write them (created).
    **kwargs
        Options (any other name raises TypeError):

        * ``fwhm_factors`` : (float, float, float) — aperture, annulus inner and outer
          radius in FWHM for ``'fwhm'``; default ``(2.5, 3.5, 4.5)`` as AstroDART. For
          faint, sky-limited targets ~1 FWHM gives a much better signal-to-noise
          (Howell 1989, PASP 101, 616).
        * ``sigma`` : float — sky sigma-clipping threshold (default 3).
        * ``target_skycoord`` : SkyCoord — the target's position for BJD_TDB and airmass
          when the frames have neither a WCS nor RA/DEC keywords.
        * ``gain`` : float — e-/ADU (default from ``GAIN``/``EGAIN``; data in electrons
          use 1).
        * ``read_noise`` : float — electrons (default from ``RDNOISE``/``RON``; when
          unknown, the measured scatter of the sky annulus is used).
        * ``saturation`` : float — data units (default the header's level, see
          :attr:`astrodart.frames.header.FrameHeader.saturation`, which refers to raw data: for
          calibrated frames give the level after bias subtraction and flat division).
        * ``recenter`` : bool — re-centre each star (default True for ``'pixel'``,
          False for ``'sky'``); ``search_radius`` : float — how far, pixels.
        * ``variable_threshold`` : float — ensemble variability cut (default 3).
        * ``progress`` : bool — a progress bar.
        * AstroDART's ``multi_coord`` (= ``comparison_coord``), ``date`` and
          ``target_name`` (recorded in the results), ``overwrite`` (``'no'`` refuses to
          replace saved results; default replaces them) and ``reference_file`` (accepted,
          unused: apertures are sized per frame).

    Raises
    ------
    TypeError
        Unknown keyword argument.
    ValueError
        Invalid method, aperture type, radii, or positions that do not match the files.
    """

    _KWARGS = (
        "fwhm_factors",
        "sigma",
        "target_skycoord",
        "gain",
        "read_noise",
        "saturation",
        "recenter",
        "search_radius",
        "variable_threshold",
        "progress",
        "multi_coord",
        "reference_file",
        "date",
        "target_name",
        "overwrite",
    )

    def __init__(
        self,
        phot_method: str,
        aperture_type: str,
        files,
        filters=None,
        obs_location=None,
        target_coord=None,
        comparison_coord=None,
        single_coord=None,
        radius_phot=None,
        radius_annulus=None,
        radius_dannulus=None,
        zmag: float = 25,
        save_results: bool = False,
        save_data_dir=None,
        **kwargs,
    ):
        check_kwargs("photometry", kwargs, self._KWARGS)
        if phot_method not in ("sky", "pixel"):
            raise ValueError(f"phot_method={phot_method!r}; use 'sky' or 'pixel'")
        if aperture_type not in ("fwhm", "custom"):
            raise ValueError(f"aperture_type={aperture_type!r}; use 'fwhm' or 'custom'")
        self.phot_method = phot_method
        self.aperture_type = aperture_type
        self.files = _as_file_lists(files)
        if filters is None:
            filters = [
                str(FrameHeader.from_file(fl[0]).filter or f"filter{i + 1}")
                for i, fl in enumerate(self.files)
            ]
        if isinstance(filters, str):
            filters = [filters]
        self.filters = [str(f) for f in filters]
        if len(self.filters) != len(self.files):
            raise ValueError(f"{len(self.filters)} filters for {len(self.files)} lists of files")
        if len(set(self.filters)) != len(self.filters):
            raise ValueError(f"filter names must be distinct, got {self.filters}")
        self.obs_location = obs_location
        # a misspelt site must fail now, not after the first frame
        self.location = _resolve_location(obs_location) if obs_location is not None else None
        if comparison_coord is not None and kwargs.get("multi_coord") is not None:
            raise ValueError("give comparison_coord= or multi_coord=, not both")
        self.target_coord = target_coord
        self.comparison_coord = (
            comparison_coord if comparison_coord is not None else kwargs.get("multi_coord")
        )
        self.single_coord = single_coord
        if aperture_type == "custom":
            radii = (radius_phot, radius_annulus, radius_dannulus)
            if any(r is None for r in radii):
                raise ValueError(
                    "aperture_type='custom' needs radius_phot, radius_annulus and radius_dannulus"
                )
            vals = [r.value if isinstance(r, u.Quantity) else float(r) for r in radii]
            if not (0 < vals[0] <= vals[1] < vals[2]):
                raise ValueError(
                    f"need 0 < radius_phot <= radius_annulus < radius_dannulus, got {vals}"
                )
        self.radius_phot, self.radius_annulus, self.radius_dannulus = (
            radius_phot,
            radius_annulus,
            radius_dannulus,
        )
        self.zmag = float(zmag)
        self.save_results = bool(save_results)
        self.save_data_dir = Path(save_data_dir) if save_data_dir is not None else None
        if self.save_results and self.save_data_dir is None:
            raise ValueError("save_results=True needs save_data_dir=")
        factors = tuple(float(v) for v in kwargs.get("fwhm_factors", FWHM_FACTORS))
        if len(factors) != 3 or not (0 < factors[0] <= factors[1] < factors[2]):
            raise ValueError(
                f"fwhm_factors must be 3 numbers 0 < aperture <= inner < outer, got {factors}"
            )
        self.fwhm_factors = factors
        self.sigma = float(kwargs.get("sigma", 3.0))
        self.target_skycoord = kwargs.get("target_skycoord")
        if self.target_skycoord is not None and not isinstance(self.target_skycoord, SkyCoord):
            raise ValueError("target_skycoord must be an astropy SkyCoord")
        self.gain = kwargs.get("gain")
        self.read_noise = kwargs.get("read_noise")
        self.saturation = kwargs.get("saturation")
        rc = kwargs.get("recenter")
        self.recenter = (phot_method == "pixel") if rc is None else bool(rc)
        self.search_radius = kwargs.get("search_radius")
        self.variable_threshold = float(kwargs.get("variable_threshold", 3.0))
        self.progress = bool(kwargs.get("progress", False))
        self.reference_file = kwargs.get("reference_file")
        self.date = kwargs.get("date")
        self.target_name = kwargs.get("target_name")
        ow = kwargs.get("overwrite")
        self.overwrite = True if ow is None else parse_overwrite(ow)
        self.results: dict | None = None
        self.ensembles: dict[str, EnsembleResult] = {}

    # -- positions ---------------------------------------------------------------------
    def _positions_for(self, coord, what: str) -> list:
        """Per filter, per file: an (x, y) array ('pixel') or the SkyCoord ('sky')."""
        if coord is None:
            raise ValueError(f"{what} is required for this run")
        if self.phot_method == "sky":
            if isinstance(coord, (list, tuple)) and len(coord) == 1:
                coord = coord[0]
            if not isinstance(coord, SkyCoord) or not coord.isscalar:
                raise ValueError(
                    f"phot_method='sky' needs {what} as one SkyCoord, got {type(coord).__name__}"
                )
            return [[coord] * len(fl) for fl in self.files]
        if len(coord) != len(self.files):
            raise ValueError(
                f"{what} must hold one list per filter ({len(self.files)}), got {len(coord)}"
            )
        out = []
        for k, (fl, pf) in enumerate(zip(self.files, coord)):
            if len(pf) != len(fl):
                raise ValueError(
                    f"{what}[{k}] has {len(pf)} positions for {len(fl)} files of filter "
                    f"{self.filters[k]!r}"
                )
            row = []
            for p in pf:
                xy, single = _xy_pairs(p, f"{what} entry")
                if not single and len(xy) != 1:
                    raise ValueError(
                        f"{what} entries must be one (x, y) pair per file, got {len(xy)}"
                    )
                row.append(xy[0])
            out.append(row)
        return out

    # -- one frame ---------------------------------------------------------------------
    def _measure_frame(self, path: str, stars: list, fwhm_prev: float | None) -> dict:
        ccd = read_frame(path)
        header = FrameHeader(ccd.meta, path)
        data = np.asarray(ccd.data, dtype=float)
        wcs = _frame_wcs(ccd.meta)
        if self.phot_method == "sky":
            if wcs is None:
                raise FrameError(
                    path, "no WCS in the header; plate-solve it or use phot_method='pixel'"
                )
            sky = SkyCoord(stars)
            x, y = wcs.world_to_pixel(sky)
            xy = np.column_stack([np.atleast_1d(x), np.atleast_1d(y)]).astype(float)
        else:
            xy = np.vstack(stars).astype(float)
        unit = ccd.unit.to_string() if ccd.unit is not None else "adu"
        in_electrons = ccd.unit is not None and ccd.unit.is_equivalent(u.electron)
        if in_electrons:
            gain = 1.0
        else:
            gain = self.gain if self.gain is not None else header.gain
            if gain is None:
                warnings.warn(
                    PhotometryWarning(
                        f"{path}: no gain (GAIN/EGAIN) in the header and none "
                        "given; assuming 1 e-/ADU (errors may be wrong)"
                    ),
                    stacklevel=3,
                )
                gain = 1.0
        rn = self.read_noise if self.read_noise is not None else header.read_noise
        saturation = self.saturation if self.saturation is not None else header.saturation
        uncertainty = ccd.uncertainty.array if ccd.uncertainty is not None else None
        mask = ccd.mask
        guess = fwhm_prev if fwhm_prev and np.isfinite(fwhm_prev) else 3.0
        fwhm = cph.frame_fwhm(data, xy, fwhm_guess=guess, mask=mask)
        if not np.isfinite(fwhm):
            if fwhm_prev and np.isfinite(fwhm_prev):
                fwhm = float(fwhm_prev)
                log.info(
                    "%s: FWHM not measurable on the chosen stars; using the previous frame's", path
                )
            else:
                raise FrameError(
                    path, "FWHM not measurable on the chosen stars (are the positions right?)"
                )
        flags = np.zeros(len(xy), dtype=np.int64)
        if self.recenter:
            new, ok = cph.recentre(data, xy, fwhm, search_radius=self.search_radius, mask=mask)
            flags[~ok] |= PhotFlag.CENTROID
            xy = new
        if self.aperture_type == "fwhm":
            radii = [f * fwhm for f in self.fwhm_factors]
        else:
            angular = self.phot_method == "sky" or any(
                isinstance(r, u.Quantity) and r.unit != u.pix
                for r in (self.radius_phot, self.radius_annulus, self.radius_dannulus)
            )
            if angular and wcs is None:
                raise FrameError(path, "radii in arcsec need a WCS to convert them to pixels")
            radii = [
                _radius_px(r, n, wcs, self.phot_method)
                for r, n in (
                    (self.radius_phot, "radius_phot"),
                    (self.radius_annulus, "radius_annulus"),
                    (self.radius_dannulus, "radius_dannulus"),
                )
            ]
        ap = cph.aperture_photometry_ccd(
            data,
            xy,
            *radii,
            gain=gain,
            read_noise=rn,
            uncertainty=uncertainty,
            mask=mask,
            saturation=saturation,
            sigma=self.sigma,
        )
        target_sky = None
        if wcs is not None:
            target_sky = wcs.pixel_to_world(xy[0, 0], xy[0, 1])
        return {
            "ap": ap,
            "flags": ap.flags | flags,
            "fwhm": fwhm,
            "exptime": header.exptime,
            "mid": header.mid_exposure,
            "header": header,
            "target_sky": target_sky,
            "unit": unit,
            "gain": gain,
            "read_noise": rn,
        }

    # -- the loop ----------------------------------------------------------------------
    def _run(self, coords: list, names: list[str]) -> dict:
        """Measure stars ``coords`` (each per filter per file) named ``names``."""
        n_star = len(coords)
        out = {name: {"filter": {}} for name in names}
        files_out: dict[str, np.ndarray] = {}
        location = self.location
        sky_dir = self.target_skycoord
        if sky_dir is None and self.phot_method == "sky":
            sky_dir = coords[0][0][0]
        meta_units = set()
        for k, filt in enumerate(self.filters):
            fl = self.files[k]
            n = len(fl)
            arr = {
                key: np.full((n_star, n), np.nan)
                for key in ("flux", "flux_err", "x", "y", "sky", "sky_std", "area", "n_sky")
            }
            flags = np.full((n_star, n), int(PhotFlag.FAILED), dtype=np.int64)
            per_frame = {
                key: np.full(n, np.nan)
                for key in ("fwhm", "r_ap", "r_in", "r_out", "exptime", "mid_utc")
            }
            mids: list[Time | None] = [None] * n
            fwhm_prev = None
            first_error = None
            iterator = range(n)
            if self.progress:
                from tqdm.auto import tqdm

                iterator = tqdm(iterator, desc=f"photometry {filt}")
            for j in iterator:
                path = fl[j]
                stars = [coords[s][k][j] for s in range(n_star)]
                try:
                    r = self._measure_frame(path, stars, fwhm_prev)
                except Exception as exc:  # one bad frame must not kill the night
                    first_error = first_error or exc
                    warnings.warn(
                        PhotometryWarning(
                            f"{path}: {type(exc).__name__}: {exc}; frame skipped (NaN, flag FAILED)"
                        ),
                        stacklevel=2,
                    )
                    try:
                        mids[j] = FrameHeader.from_file(path).mid_exposure
                    except Exception:
                        mids[j] = None
                    continue
                ap = r["ap"]
                for key, values in arr.items():
                    values[:, j] = getattr(ap, key)
                flags[:, j] = r["flags"]
                per_frame["fwhm"][j] = r["fwhm"]
                per_frame["r_ap"][j], per_frame["r_in"][j], per_frame["r_out"][j] = (
                    ap.r_ap,
                    ap.r_in,
                    ap.r_out,
                )
                per_frame["exptime"][j] = r["exptime"]
                mids[j] = r["mid"]
                fwhm_prev = r["fwhm"]
                meta_units.add(r["unit"])
                if location is None:
                    location = _resolve_location(self.obs_location, r["header"])
                if sky_dir is None:
                    if r["target_sky"] is not None:
                        sky_dir = r["target_sky"]
                    elif r["header"].coord is not None:
                        sky_dir = r["header"].coord
                        log.info("BJD: target direction from the pointing RA/DEC of %s", path)
            if np.all(flags & PhotFlag.FAILED):
                raise RuntimeError(
                    f"no frame of filter {filt!r} could be measured; first error: "
                    f"{type(first_error).__name__}: {first_error}"
                ) from first_error
            if sky_dir is None:
                raise ValueError(
                    "BJD_TDB needs the target's sky position: the frames have no WCS and "
                    "no RA/DEC; pass target_skycoord=SkyCoord(...) to photometry()"
                )
            have = np.array([m is not None for m in mids])
            bjd = np.full(n, np.nan)
            am = np.full(n, np.nan)
            if have.any():
                t = Time([m for m in mids if m is not None])
                per_frame["mid_utc"][have] = t.utc.jd
                bjd[have] = timing.bjd_tdb(t, sky_dir, location).jd
                am[have] = timing.airmass(t, sky_dir, location)
            mag, mag_err = cph.instrumental_magnitude(
                arr["flux"], arr["flux_err"], per_frame["exptime"], self.zmag
            )
            for s, name in enumerate(names):
                out[name]["filter"][filt] = {
                    "timestamps": bjd.copy(),
                    "flux": arr["flux"][s],
                    "flux_err": arr["flux_err"][s],
                    "mag_ins": mag[s],
                    "mag_err": mag_err[s],
                    "airmass": am.copy(),
                    "flags": flags[s],
                    "saturated": (flags[s] & PhotFlag.SATURATED) > 0,
                    "bad_pixels": (flags[s] & PhotFlag.BAD_PIXEL) > 0,
                    "x": arr["x"][s],
                    "y": arr["y"][s],
                    "sky": arr["sky"][s],
                    "sky_std": arr["sky_std"][s],
                    "area": arr["area"][s],
                    "n_sky": arr["n_sky"][s],
                    "fwhm": per_frame["fwhm"].copy(),
                    "r_ap": per_frame["r_ap"].copy(),
                    "r_in": per_frame["r_in"].copy(),
                    "r_out": per_frame["r_out"].copy(),
                    "exptime": per_frame["exptime"].copy(),
                    "mid_exposure_utc": per_frame["mid_utc"].copy(),
                }
            files_out[filt] = np.array([Path(f).name for f in fl])
        for s, name in enumerate(names):
            out[name]["coords"] = self._coords_record(
                coords[s], out[name], sky_dir if s == 0 else None
            )
        geo = location.to_geodetic()
        out["files"] = files_out
        out["meta"] = {
            "astrodart_version": __version__,
            "phot_method": self.phot_method,
            "aperture_type": self.aperture_type,
            "fwhm_factors": np.array(self.fwhm_factors)
            if self.aperture_type == "fwhm"
            else np.array([]),
            "zmag": self.zmag,
            "sky_sigma_clip": self.sigma,
            "flux_unit": ",".join(sorted(meta_units)),
            "time_scale": "BJD_TDB (JD days) at mid-exposure, barycentric toward the target",
            "target_ra_deg": float(sky_dir.icrs.ra.deg),
            "target_dec_deg": float(sky_dir.icrs.dec.deg),
            "site_lat_deg": float(geo.lat.deg),
            "site_lon_deg": float(geo.lon.deg),
            "site_height_m": float(geo.height.to_value(u.m)),
            "error_model": "CCD equation (Merline & Howell 1995) or uncertainty plane; median sky",
            "flag_bits": ", ".join(f"{f.name}={int(f.value)}" for f in PhotFlag if f.value),
            "date": str(self.date or ""),
            "target_name": str(self.target_name or ""),
        }
        return out

    def _coords_record(self, coord, star_res: dict, sky_dir) -> dict:
        if self.phot_method == "sky":
            c = coord[0][0]
            return {
                "ra": {"value": float(c.icrs.ra.deg), "unit": "degree"},
                "dec": {"value": float(c.icrs.dec.deg), "unit": "degree"},
            }
        first = next(iter(star_res["filter"].values()))
        rec = {
            "x": {"value": float(first["x"][0]), "unit": "pixel"},
            "y": {"value": float(first["y"][0]), "unit": "pixel"},
        }
        if sky_dir is not None:
            rec["ra"] = {"value": float(sky_dir.icrs.ra.deg), "unit": "degree"}
            rec["dec"] = {"value": float(sky_dir.icrs.dec.deg), "unit": "degree"}
        return rec

    # -- public runs -------------------------------------------------------------------
    def run_single_coord(self) -> dict:
        """Photometry of ``single_coord`` in every frame.

        Returns
        -------
        dict
            ``res['object']['filter'][f]`` and ``res['object']['coords']`` (layout in the
            module docstring), plus ``res['files']`` and ``res['meta']``.
        """
        coords = [self._positions_for(self.single_coord, "single_coord")]
        res = self._run(coords, ["object"])
        self.results = res
        self._log("run_single_coord", 1)
        if self.save_results:
            self.save("photometry_results_single_object", res)
        return res

    def run_multi_coord(self) -> dict:
        """Photometry of the target and the comparison stars, and the differential
        light curve against their weighted ensemble.

        Returns
        -------
        dict
            ``res['target']``, ``res['comparison_stars']['comparison_N']``,
            ``res['differential']['filter'][f]``, ``res['files']``, ``res['meta']`` (layout
            in the module docstring). The :class:`EnsembleResult` of each filter is kept in
            ``self.ensembles``.
        """
        comps = self.comparison_coord
        if comps is None or len(comps) == 0:
            raise ValueError(
                "run_multi_coord() needs comparison_coord (one entry per comparison star)"
            )
        if self.phot_method == "sky" and isinstance(comps, SkyCoord):
            comps = list(comps) if not comps.isscalar else [comps]
        coords = [self._positions_for(self.target_coord, "target_coord")]
        coords += [self._positions_for(c, f"comparison_coord[{i}]") for i, c in enumerate(comps)]
        names = ["target"] + [f"comparison_{i + 1}" for i in range(len(comps))]
        flat = self._run(coords, names)
        res = {
            "target": flat["target"],
            "comparison_stars": {n: flat[n] for n in names[1:]},
            "differential": {"filter": {}},
            "files": flat["files"],
            "meta": flat["meta"],
        }
        for filt in self.filters:
            ens = self.differential(filt, res)
            self.ensembles[filt] = ens
            tgt = res["target"]["filter"][filt]
            d = ens.diagnostics
            res["differential"]["filter"][filt] = {
                "timestamps": tgt["timestamps"],
                "airmass": tgt["airmass"],
                "rel_flux": ens.rel_flux,
                "rel_flux_err": ens.rel_flux_err,
                "valid": ens.valid,
                "reference": ens.reference,
                "reference_err": ens.reference_err,
                "weights": ens.weights,
                "comparison_rms": np.asarray(d["rms"]),
                "comparison_expected_rms": np.asarray(d["expected_rms"]),
                "comparison_excess": np.asarray(d["excess"]),
                "comparison_chi2_red": np.asarray(d["chi2_red"]),
                "comparison_variable": np.asarray(d["variable"]),
                "comparison_used": np.asarray(d["used"]),
                "comparison_curves": ens.comparison_curves,
            }
        self.results = res
        self._log("run_multi_coord", len(comps))
        if self.save_results:
            self.save("photometry_results_target_and_comparison", res)
        return res

    def differential(
        self, filter_name: str | None = None, results: dict | None = None, norm_mask=None
    ) -> EnsembleResult:
        """The ensemble differential light curve of one filter (see
        :func:`astrodart.photometry.measure.ensemble_light_curve`).

        Parameters
        ----------
        filter_name : str, optional
            Default the first filter.
        results : dict, optional
            A :meth:`run_multi_coord` result (default the last one).
        norm_mask : array_like of bool, shape (n,), optional
            Points that define the normalisation (e.g. out of transit).

        Returns
        -------
        EnsembleResult
        """
        res = results if results is not None else self.results
        if res is None or "comparison_stars" not in res:
            raise ValueError("run run_multi_coord() first")
        filt = filter_name or self.filters[0]
        tgt = res["target"]["filter"][filt]
        comps = [c["filter"][filt] for c in res["comparison_stars"].values()]
        severe = int(cph.SEVERE_FLAGS)
        valid = np.vstack(
            [(tgt["flags"] & severe) == 0] + [(c["flags"] & severe) == 0 for c in comps]
        )
        return cph.ensemble_light_curve(
            tgt["flux"],
            tgt["flux_err"],
            np.vstack([c["flux"] for c in comps]),
            np.vstack([c["flux_err"] for c in comps]),
            valid=valid,
            norm_mask=norm_mask,
            variable_threshold=self.variable_threshold,
        )

    def fit_transit(
        self,
        filter_name: str | None = None,
        *,
        t0: float | None = None,
        duration: float | None = None,
        baseline_degree: int = 1,
        use_airmass: bool = False,
        t0_window: float | None = None,
    ) -> TransitFit:
        """Fit a trapezoidal transit to the differential light curve of one filter.

        Parameters
        ----------
        filter_name : str, optional
            Default the first filter.
        t0 : float, optional
            Predicted mid-time, BJD_TDB (e.g. from the ephemeris).
        duration : float, optional
            Predicted total duration, days.
        baseline_degree : int
            Polynomial baseline degree in time.
        use_airmass : bool
            Add a baseline term linear in airmass.
        t0_window : float, optional
            Allowed distance of t0 from the prediction, days.

        Returns
        -------
        TransitFit
            See :func:`astrodart.photometry.measure.fit_transit`.
        """
        filt = filter_name or self.filters[0]
        if self.results is None or filt not in self.results.get("differential", {}).get(
            "filter", {}
        ):
            raise ValueError("run run_multi_coord() first")
        d = self.results["differential"]["filter"][filt]
        return cph.fit_transit(
            d["timestamps"],
            d["rel_flux"],
            d["rel_flux_err"],
            t0=t0,
            duration=duration,
            baseline_degree=baseline_degree,
            airmass=d["airmass"] if use_airmass else None,
            t0_window=t0_window,
        )

    def plot(
        self,
        filter_name: str | None = None,
        *,
        fit: TransitFit | None = None,
        bin_minutes: float = 10.0,
        path=None,
        title: str | None = None,
    ):
        """Plot the differential light curve of one filter (see :func:`plot_light_curve`).

        Returns
        -------
        matplotlib.figure.Figure
        """
        filt = filter_name or self.filters[0]
        if self.results is None or filt not in self.results.get("differential", {}).get(
            "filter", {}
        ):
            raise ValueError("run run_multi_coord() first")
        d = self.results["differential"]["filter"][filt]
        return plot_light_curve(
            d["timestamps"],
            d["rel_flux"],
            d["rel_flux_err"],
            comparison_curves=d["comparison_curves"],
            comparison_weights=d["weights"],
            fit=fit,
            airmass=d["airmass"],
            bin_minutes=bin_minutes,
            path=path,
            title=title or f"{self.target_name or 'target'} — filter {filt}",
        )

    # -- output ------------------------------------------------------------------------
    def _log(self, what: str, n_comp: int) -> None:
        where = self.save_data_dir or Path(self.files[0][0]).parent
        try:
            log_event(
                find_log_path(where),
                step=f"photometry.{what}",
                phot_method=self.phot_method,
                aperture_type=self.aperture_type,
                filters=self.filters,
                n_files=[len(f) for f in self.files],
                n_comparisons=n_comp,
            )
        except OSError as exc:  # a read-only data folder must not stop the science
            log.info("run log not written: %s", exc)

    def save(self, stem: str, results: dict | None = None) -> list[Path]:
        """Write results to ``save_data_dir/<stem>.h5`` and one ECSV table per filter.

        Parameters
        ----------
        stem : str
            File name without extension.
        results : dict, optional
            Default the last run's.

        Returns
        -------
        list of pathlib.Path
            The files written (atomically: temporary file, then rename).

        Raises
        ------
        FileExistsError
            A file exists and ``overwrite`` was explicitly 'no'.
        """
        res = results if results is not None else self.results
        if res is None or self.save_data_dir is None:
            raise ValueError("nothing to save, or no save_data_dir")
        self.save_data_dir.mkdir(parents=True, exist_ok=True)
        written = [write_results_hdf5(res, self.save_data_dir / f"{stem}.h5", self.overwrite)]
        for filt in self.filters:
            table = results_table(res, filt)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in filt)
            written.append(
                _write_ecsv(table, self.save_data_dir / f"{stem}_{safe}.ecsv", self.overwrite)
            )
        log.info("photometry results written: %s", ", ".join(str(p) for p in written))
        return written


# ---------------------------------------------------------------------------- saving
def _h5_value(v):
    if isinstance(v, (str, np.str_)):
        return str(v)
    a = np.asarray(v)
    if a.dtype.kind in "US":
        import h5py

        return a.astype(object).astype(h5py.string_dtype())
    return a


def _h5_write(group, d: dict) -> None:
    for key, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            _h5_write(group.create_group(str(key)), v)
        elif isinstance(v, Table):
            sub = group.create_group(str(key))
            for col in v.colnames:
                sub.create_dataset(col, data=_h5_value(v[col]))
        else:
            group.create_dataset(str(key), data=_h5_value(v))


def write_results_hdf5(results: dict, path, overwrite: bool = True) -> Path:
    """Write a nested results dict to HDF5 (groups for dicts, datasets for arrays).

    Parameters
    ----------
    results : dict
        As returned by :meth:`photometry.run_multi_coord` / ``run_single_coord``.
    path : str or pathlib.Path
        Destination ``.h5``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
    """
    import h5py

    path = Path(path)
    with atomic_output(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["astrodart_version"] = __version__
            _h5_write(h5, results)
    return path


def results_table(results: dict, filter_name: str) -> Table:
    """One filter's results as a flat table (one row per frame).

    Parameters
    ----------
    results : dict
        As returned by :meth:`photometry.run_multi_coord` or ``run_single_coord``.
    filter_name : str
        The filter to tabulate.

    Returns
    -------
    astropy.table.Table
        Columns ``file``, ``bjd_tdb``, ``mid_exposure_utc``, ``airmass``, ``exptime``,
        ``fwhm``, then ``<star>_flux``, ``_flux_err``, ``_mag_ins``, ``_mag_err``,
        ``_flags``, ``_x``, ``_y``, ``_sky`` for ``target`` (or ``object``) and ``comp1``
        ...; and ``rel_flux``, ``rel_flux_err`` when a differential light curve exists.
        ``meta`` holds ``results['meta']`` and the filter.

    Raises
    ------
    ValueError
        The results hold no star.
    """
    stars = []
    if "object" in results:
        stars.append(("object", results["object"]))
    if "target" in results:
        stars.append(("target", results["target"]))
    for name, c in results.get("comparison_stars", {}).items():
        stars.append((name.replace("comparison_", "comp"), c))
    if not stars:
        raise ValueError("results hold no star")
    first = stars[0][1]["filter"][filter_name]
    t = Table()
    t["file"] = results["files"][filter_name]
    t["bjd_tdb"] = first["timestamps"]
    t["mid_exposure_utc"] = first["mid_exposure_utc"]
    t["airmass"] = first["airmass"]
    t["exptime"] = first["exptime"]
    t["fwhm"] = first["fwhm"]
    for prefix, star in stars:
        s = star["filter"][filter_name]
        for key in ("flux", "flux_err", "mag_ins", "mag_err", "flags", "x", "y", "sky"):
            t[f"{prefix}_{key}"] = s[key]
    diff = results.get("differential", {}).get("filter", {}).get(filter_name)
    if diff is not None:
        t["rel_flux"] = diff["rel_flux"]
        t["rel_flux_err"] = diff["rel_flux_err"]
    t.meta.update(
        {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in results.get("meta", {}).items()
        }
    )
    t.meta["filter"] = filter_name
    return t


def _write_ecsv(table: Table, path: Path, overwrite: bool) -> Path:
    with atomic_output(path, overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path
