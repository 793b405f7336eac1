"""Stage 3, photometry: targets and comparison stars, aperture photometry with honest
errors, BJD_TDB time stamps and differential light curves (AstroDART-compatible).

The classes keep AstroDART's names and signatures (an AstroDART notebook keeps working
after ``AstroDART`` becomes ``astrodart``). This module is a facade: the science is in
the photometry room (:mod:`astrodart.photometry`: apertures, ensemble, transit, timing,
sites, light-curve tables), the work on files in :mod:`astrodart.pipeline.photometry`
(:class:`~astrodart.pipeline.photometry.PhotometryRun`, whose results layout it
documents) and :mod:`astrodart.pipeline.photometry_frames` (star lists, tracking, one
frame), the plots in :mod:`astrodart.ui.lightcurve_plot`.

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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.coordinates import EarthLocation
from astropy.table import Table

from astrodart.frames.checks import check_number, check_path
from astrodart.frames.io import read_frame
from astrodart.photometry.apertures import PhotFlag
from astrodart.photometry.lightcurve import results_table
from astrodart.photometry.sites import location_from_lat_lon, site_location
from astrodart.photometry.transit import TransitFit
from astrodart.pipeline.photometry import PhotometryRun
from astrodart.pipeline.photometry_results import write_results_hdf5
from astrodart.pipeline.photometry_setup import FWHM_FACTORS  # noqa: F401  (AstroDART name)
from astrodart.pipeline.star_positions import (
    PhotometryWarning,
    numbered_stars,
    frame_wcs,
    pixels_to_world,
    select_stars,
    track_positions,
    track_stars,
    world_to_pixels,
)
from astrodart.ui.lightcurve_plot import _figure as _new_figure
from astrodart.ui.lightcurve_plot import plot_differential, plot_light_curve

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


class InteractiveUnavailableError(RuntimeError):
    """An interactive picker was asked for where none can run (no notebook or no widgets)."""


# ----------------------------------------------------------------------------- sites
class get_site_coordinates:  # noqa: N801  (AstroDART's public name)
    """The observatory as an :class:`~astropy.coordinates.EarthLocation`.

    Parameters
    ----------
    coordinates : sequence of float or str, optional
        ``[lat_deg, lon_deg, height_m]``, longitude east-positive (west negative); a
        string is taken as ``observatory_location``
        (``get_site_coordinates('Whipple Observatory').from_name()``).
    observatory_location : str, optional
        Name of an observatory, offline: a built-in one (``'OT'`` for Observatorio del
        Teide, ``'Roque de los Muchachos'``, ``'Calar Alto'``, ``'La Silla'``,
        ``'Paranal'``, ``'Mauna Kea'``, ``'Kitt Peak'``, ``'Lick'``, ``'McDonald'``,
        ``'Palomar'``, ``'Whipple Observatory'``, ``'Siding Spring'``, ``'Mt Stony
        Brook'``, ``'Feder Observatory'`` ... under astropy's names too, e.g.
        ``'flwo'``; see :data:`astrodart.photometry.sites.SITES`), else astropy's site
        registry (its cached copy, or the network). Case and punctuation are ignored; an
        unknown name raises an error listing the 5 closest names.

    Examples
    --------
    >>> get_site_coordinates(observatory_location='OT').from_name()  # doctest: +SKIP
    >>> get_site_coordinates(coordinates=[40.91, -73.12, 40]).from_lat_lon()  # doctest: +SKIP
    """

    def __init__(
        self, coordinates: Sequence[float] | None = None, observatory_location: str | None = None
    ):
        if isinstance(coordinates, str) and observatory_location is None:
            coordinates, observatory_location = None, coordinates  # a name given first
        self.coordinates = coordinates
        self.observatory_location = observatory_location

    def from_lat_lon(self) -> EarthLocation:
        """Location from ``coordinates``.

        Returns
        -------
        astropy.coordinates.EarthLocation

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

        Returns
        -------
        astropy.coordinates.EarthLocation

        Raises
        ------
        ValueError
            No name given.
        astrodart.photometry.sites.UnknownSiteError
            Unknown name (the message lists the 5 closest known names).
        """
        if not self.observatory_location:
            raise ValueError("from_name() needs observatory_location='OT' (or another site name)")
        return site_location(self.observatory_location)


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
        self.reference_image = str(check_path("reference_image", reference_image,
                                              owner="check_image"))
        self.threshold = check_number("threshold", threshold, minimum=0, exclusive=True,
                                      owner="check_image", unit="sigma")
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
        stars, self.fwhm = numbered_stars(self.reference_image, self.threshold)
        self.sources = stars
        positions = np.column_stack([np.asarray(stars["x"], float), np.asarray(stars["y"], float)])
        log.info("%s: %d stars, FWHM %.2f px", self.reference_image, len(stars), self.fwhm)
        if self.plot:
            ccd = read_frame(self.reference_image)
            self.figure = self._draw(
                np.asarray(ccd.data, dtype=float), positions, frame_wcs(ccd.meta)
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


def _circle(xy, r):
    from matplotlib.patches import Circle

    return Circle(xy, r, fill=False, color="cyan", lw=1.0)


# ------------------------------------------------------------------------ coordinates
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
        return select_stars(positions, ref, target_index, comparison_indices)

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
        return pixels_to_world(self._need_files("px_to_world"), self.pixel_coordinates)

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
        return world_to_pixels(self._need_files("world_to_px"), self.world_coordinates)

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

    Parameters
    ----------
    coords : coordinates
        The :class:`coordinates` that made the picker.
    reference : str
        The reference frame shown.
    positions : numpy.ndarray, shape (n, 2)
        Its numbered stars (0-based pixels).
    picker : astrodart.ui.widgets.StarPicker
        The widget.
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
        """The target and comparisons chosen on the picker.

        Returns
        -------
        tuple
            ``(target, comparisons)`` as :meth:`coordinates.from_index` returns them.

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


# ------------------------------------------------------------------------ photometry
class photometry(PhotometryRun):  # noqa: N801  (AstroDART's public name)
    __doc__ = PhotometryRun.__doc__

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

        Parameters
        ----------
        filter_name : str, optional
            Default the first filter.
        fit : TransitFit, optional
            A fit (:meth:`fit_transit`) to draw over the points.
        bin_minutes : float
            Width of the binned points, minutes.
        path : str or pathlib.Path, optional
            Save the figure there (PNG).
        title : str, optional
            Default the target name and the filter.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        ValueError
            No :meth:`run_multi_coord` result for the filter.
        """
        filt, d = self._light_curve(filter_name)
        return plot_differential(
            d, fit=fit, bin_minutes=bin_minutes, path=path,
            title=title or f"{self.target_name or 'target'} — filter {filt}",
        )
