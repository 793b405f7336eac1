"""Layer 3: the options of a photometry run, checked before any frame is read.

:class:`PhotometrySetup` takes AstroDART's ``photometry`` arguments, rejects unknown or
inconsistent ones at once (a misspelt site fails before the first frame, not after it)
and turns the positions into one entry per filter per file.
:class:`astrodart.pipeline.photometry.PhotometryRun` runs it.
"""

from __future__ import annotations

from pathlib import Path

from astropy import units as u
from astropy.coordinates import SkyCoord

from astrodart.frames.header import FrameHeader
from astrodart.photometry.aperture_choice import AUTO_APERTURE_GRID
from astrodart.photometry.sites import resolve_location
from astrodart.pipeline.star_positions import as_file_lists, xy_pairs
from astrodart.pipeline.step import check_kwargs, parse_overwrite

__all__ = ["APERTURE_TYPES", "FWHM_FACTORS", "PhotometrySetup"]

#: Aperture radius, annulus inner and outer radius in units of the FWHM ('fwhm' apertures).
FWHM_FACTORS = (2.5, 3.5, 4.5)
#: The aperture types of AstroDART's ``photometry`` (and ``'auto'`` and ``'optimal'``).
APERTURE_TYPES = ("fwhm", "custom", "auto", "optimal")


class PhotometrySetup:
    """Aperture photometry of a target, comparison stars or a single object in every frame.

    Parameters
    ----------
    phot_method : {'sky', 'pixel'}
        ``'sky'``: positions are SkyCoord, placed through each frame's WCS. ``'pixel'``:
        positions are 0-based ``(x, y)`` per filter per file, re-centred in each frame.
    aperture_type : {'fwhm', 'custom', 'auto', 'optimal'}
        ``'fwhm'``: radius, annulus inner and outer radius = 2.5, 3.5, 4.5 x the FWHM of
        each frame. ``'auto'``: every radius of ``aperture_grid`` (0.6 to 3.0 x the FWHM)
        is measured in one pass, with the annulus of ``fwhm_factors``, and the radius
        whose differential light curve has the least robust point-to-point scatter is
        kept (:func:`astrodart.photometry.aperture_choice.choose_aperture`; recorded in
        ``results['meta']['aperture_choice']`` and ``self.aperture_choices``).
        ``'custom'``: ``radius_phot``, ``radius_annulus``, ``radius_dannulus`` in pixels
        for ``'pixel'`` and arcsec for ``'sky'`` (an astropy Quantity in ``u.pix`` or an
        angle unit is taken as given). ``'optimal'``: Naylor's (1998) profile-weighted
        extraction (:func:`astrodart.photometry.optimal.optimal_photometry`, a Gaussian
        profile of each frame's FWHM, weights out to the annulus's inner radius), for
        faint targets; the annulus is that of ``fwhm_factors``.
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
          (Howell 1989, PASP 101, 616). With ``'auto'`` only the annulus (the last two)
          is used; it must lie outside the largest radius of the grid.
        * ``aperture_grid`` : sequence of float — the radii ``'auto'`` tries, in FWHM
          (default 0.6, 0.8, ..., 3.0).
        * ``min_valid_fraction`` : float — ``'auto'``: a radius must keep this fraction
          of the points of the best-covered radius to be chosen (default 0.9).
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
        * ``known_variables`` : list — known variables refused as comparisons (names,
          SkyCoords or pixel positions; see
          :func:`astrodart.photometry.ensemble.vet_comparisons`).
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
        "aperture_grid",
        "min_valid_fraction",
        "sigma",
        "target_skycoord",
        "gain",
        "read_noise",
        "saturation",
        "recenter",
        "search_radius",
        "variable_threshold",
        "known_variables",
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
        if aperture_type not in APERTURE_TYPES:
            raise ValueError(f"aperture_type={aperture_type!r}; use one of {APERTURE_TYPES}")
        self.phot_method = phot_method
        self.aperture_type = aperture_type
        self.files = as_file_lists(files)
        self.filters = self._filter_names(filters)
        self.obs_location = obs_location
        # a misspelt site must fail now, not after the first frame
        self.location = resolve_location(obs_location) if obs_location is not None else None
        if comparison_coord is not None and kwargs.get("multi_coord") is not None:
            raise ValueError("give comparison_coord= or multi_coord=, not both")
        self.target_coord = target_coord
        self.comparison_coord = (
            comparison_coord if comparison_coord is not None else kwargs.get("multi_coord")
        )
        self.single_coord = single_coord
        if aperture_type == "custom":
            _check_custom_radii(radius_phot, radius_annulus, radius_dannulus)
        self.radius_phot = radius_phot
        self.radius_annulus = radius_annulus
        self.radius_dannulus = radius_dannulus
        self.zmag = float(zmag)
        self.save_results = bool(save_results)
        self.save_data_dir = Path(save_data_dir) if save_data_dir is not None else None
        if self.save_results and self.save_data_dir is None:
            raise ValueError("save_results=True needs save_data_dir=")
        self._set_options(kwargs)
        self.results: dict | None = None
        self.ensembles: dict = {}
        self.aperture_choices: dict = {}

    def _filter_names(self, filters) -> list[str]:
        if filters is None:
            filters = [
                str(FrameHeader.from_file(fl[0]).filter or f"filter{i + 1}")
                for i, fl in enumerate(self.files)
            ]
        if isinstance(filters, str):
            filters = [filters]
        filters = [str(f) for f in filters]
        if len(filters) != len(self.files):
            raise ValueError(f"{len(filters)} filters for {len(self.files)} lists of files")
        if len(set(filters)) != len(filters):
            raise ValueError(f"filter names must be distinct, got {filters}")
        return filters

    def _set_options(self, kwargs: dict) -> None:
        factors = tuple(float(v) for v in kwargs.get("fwhm_factors", FWHM_FACTORS))
        if len(factors) != 3 or not (0 < factors[0] <= factors[1] < factors[2]):
            raise ValueError(
                f"fwhm_factors must be 3 numbers 0 < aperture <= inner < outer, got {factors}"
            )
        self.fwhm_factors = factors
        self.aperture_grid = _aperture_grid(kwargs.get("aperture_grid"), factors,
                                            self.aperture_type)
        self.min_valid_fraction = float(kwargs.get("min_valid_fraction", 0.9))
        if not 0 < self.min_valid_fraction <= 1:
            raise ValueError(f"min_valid_fraction={self.min_valid_fraction}; give a number "
                             "in (0, 1]")
        self.sigma = float(kwargs.get("sigma", 3.0))
        self.target_skycoord = kwargs.get("target_skycoord")
        if self.target_skycoord is not None and not isinstance(self.target_skycoord, SkyCoord):
            raise ValueError("target_skycoord must be an astropy SkyCoord")
        self.gain = kwargs.get("gain")
        self.read_noise = kwargs.get("read_noise")
        self.saturation = kwargs.get("saturation")
        rc = kwargs.get("recenter")
        self.recenter = (self.phot_method == "pixel") if rc is None else bool(rc)
        self.search_radius = kwargs.get("search_radius")
        self.variable_threshold = float(kwargs.get("variable_threshold", 3.0))
        self.known_variables = kwargs.get("known_variables")
        self.progress = bool(kwargs.get("progress", False))
        self.reference_file = kwargs.get("reference_file")
        self.date = kwargs.get("date")
        self.target_name = kwargs.get("target_name")
        ow = kwargs.get("overwrite")
        self.overwrite = True if ow is None else parse_overwrite(ow)

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
                xy, single = xy_pairs(p, f"{what} entry")
                if not single and len(xy) != 1:
                    raise ValueError(
                        f"{what} entries must be one (x, y) pair per file, got {len(xy)}"
                    )
                row.append(xy[0])
            out.append(row)
        return out


def _check_custom_radii(radius_phot, radius_annulus, radius_dannulus) -> None:
    radii = (radius_phot, radius_annulus, radius_dannulus)
    if any(r is None for r in radii):
        raise ValueError(
            "aperture_type='custom' needs radius_phot, radius_annulus and radius_dannulus"
        )
    vals = [r.value if isinstance(r, u.Quantity) else float(r) for r in radii]
    if not (0 < vals[0] <= vals[1] < vals[2]):
        raise ValueError(f"need 0 < radius_phot <= radius_annulus < radius_dannulus, got {vals}")


def _aperture_grid(grid, factors: tuple, aperture_type: str) -> tuple:
    """The radii (FWHM) of ``'auto'``: sorted, positive, inside the annulus of ``factors``."""
    if grid is None:
        grid = AUTO_APERTURE_GRID
    try:
        vals = tuple(sorted(float(v) for v in grid))
    except (TypeError, ValueError):
        vals = ()
    if len(vals) < 2 or vals[0] <= 0 or len(set(vals)) != len(vals):
        raise ValueError(f"aperture_grid={grid!r}: give at least two distinct positive radii "
                         "in units of the FWHM, e.g. (0.6, 0.8, ..., 3.0)")
    if aperture_type == "auto" and vals[-1] > factors[1]:
        raise ValueError(f"aperture_grid reaches {vals[-1]} x FWHM, inside the sky annulus "
                         f"(fwhm_factors inner radius {factors[1]} x FWHM); the annulus must "
                         "lie outside the largest aperture")
    return vals
