"""Layer 2: cosmic-ray detection and cleaning (pure functions, no file I/O).

Two methods:

* :func:`lacosmic` — L.A.Cosmic (van Dokkum 2001, PASP 113, 1420) through astroscrappy
  (McCully et al. 2018, doi:10.5281/zenodo.1482019): Laplacian edge detection, which
  rejects sharp hits and keeps stars through the fine-structure contrast ``objlim``.
* :func:`median_cosmics` — the median-filter method of IRAF's ``cosmicrays``/ccdproc's
  ``cosmicray_median``: pixels far above an ``mbox`` median are replaced. Configured here
  with a per-pixel noise and a "sharpness" guard so star cores are not taken for hits.

The noise model (:func:`~astrodart.calibration.noise.noise_variance`) is what makes the
detection thresholds mean what they say whatever the frame's history: the background
variance is *measured* (robust MAD in boxes) rather than predicted from the pixel
values, so a bias pedestal still in the data (the AstroDART chain removes cosmic rays
before the bias) does not inflate the Poisson term; sources above the background add
their own photon noise.

Gain semantics (astroscrappy): the data are multiplied by ``gain`` to reach electrons,
so ``gain`` is e-/ADU for data in ADU and exactly 1 for data already in electrons.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from scipy import ndimage

from astrodart.calibration.base import CalibrationError
from astrodart.calibration.noise import _variance, background_maps, noise_variance
from astrodart.calibration.pixels import repair_pixels

__all__ = [
    "lacosmic",
    "median_cosmics",
    "clean_cosmics",
]

log = logging.getLogger("astrodart")


def _one_openmp_thread():
    """A context in which the OpenMP runtimes loaded in this process (astroscrappy's)
    run one thread, set with threadpoolctl (the previous limits are restored on exit).

    astroscrappy's compiled kernels use GNU OpenMP, whose thread pool does not survive a
    ``fork``: a process forked from one that has run a multi-threaded OpenMP region (the
    step engine's process pool on Linux, forked from a notebook kernel that called
    astroscrappy or ``ccdproc.cosmicray_lacosmic`` itself) hangs in its first OpenMP call.
    With one thread, libgomp never uses its pool, so neither side of a fork can hang;
    astrodart gets its parallelism from the process pool instead (one frame per core).
    """
    import astroscrappy.utils  # noqa: F401  (loads the OpenMP runtime before the lookup)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _star_core_guard(
    data: np.ndarray, background: np.ndarray, crmask: np.ndarray, core_ratio: float
) -> np.ndarray:
    """Unflag detections that are star cores: at a component's brightest pixel, a star
    raises its 3x3 median to a large fraction (> ``core_ratio``) of its peak above the
    background (0.5-0.75 for FWHM 2-3 px), a cosmic ray (one or two pixels wide, or a
    thin track) leaves it at the background. Returns the cleaned-up mask."""
    labels, n = ndimage.label(crmask, structure=np.ones((3, 3), bool))
    if n == 0:
        return crmask
    keep = np.ones(n + 1, bool)
    keep[0] = False
    for i, sl in enumerate(ndimage.find_objects(labels), 1):
        comp = labels[sl] == i
        exc = np.where(comp, data[sl] - background[sl], -np.inf)
        y, x = np.unravel_index(np.argmax(exc), exc.shape)
        y, x = y + sl[0].start, x + sl[1].start
        peak = data[y, x] - background[y, x]
        win = data[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] - background[y, x]
        if peak > 0 and np.median(win) > core_ratio * peak:
            keep[i] = False
    return keep[labels]


def _boxes(mask: np.ndarray, margin: int) -> list[tuple[slice, slice]]:
    """Bounding boxes of the connected regions of ``mask`` grown by ``margin`` px (and
    clipped to the image), merged until none overlap.

    The merging works on masks (fill the boxes, label, take the bounding boxes again until
    the count no longer changes), not pairwise: a frame with thousands of candidates (hot
    pixels when no bad-pixel map is given) took seconds with a pairwise merge.
    """
    ny, nx = mask.shape
    slices = ndimage.find_objects(ndimage.label(mask, structure=np.ones((3, 3), bool))[0])
    boxes = [
        (slice(max(sl[0].start - margin, 0), min(sl[0].stop + margin, ny)),
         slice(max(sl[1].start - margin, 0), min(sl[1].stop + margin, nx)))
        for sl in slices if sl is not None
    ]
    while len(boxes) > 1:
        cover = np.zeros((ny, nx), bool)
        for box in boxes:
            cover[box] = True
        merged = [sl for sl in ndimage.find_objects(ndimage.label(cover)[0]) if sl is not None]
        if len(merged) == len(boxes):
            break
        boxes = merged
    return boxes


def lacosmic(
    data: np.ndarray,
    *,
    gain: float = 1.0,
    sigclip: float = 5.0,
    sigfrac: float = 0.3,
    objlim: float = 5.0,
    niter: int = 4,
    satlevel: float = np.inf,
    mask: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    cleantype: str = "meanmask",
    background_box: int = 64,
    core_ratio: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect and clean cosmic rays with L.A.Cosmic (astroscrappy).

    Parameters
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` image in ADU (``gain`` = e-/ADU) or electrons (``gain`` = 1).
    gain : float
        e-/ADU of ``data``; astroscrappy multiplies by it to work in electrons.
    sigclip : float
        Laplacian-to-noise detection limit (sigma).
    sigfrac : float
        Fraction of ``sigclip`` used for neighbours of detected pixels.
    objlim : float
        Minimum contrast between the Laplacian and the fine-structure image; raise it if
        star cores are flagged.
    niter : int
        L.A.Cosmic iterations (see Notes for how they are kept cheap).
    satlevel : float
        Saturation level in the units of ``data``; saturated stars are masked.
    mask : numpy.ndarray, optional
        ``(ny, nx)`` bool, known bad pixels (hot pixels, dead pixels from a bad-pixel
        map). They are interpolated over in a working copy before detection (astroscrappy's
        own mask would also blind the 8 neighbours of every bad pixel), never flagged,
        and returned unchanged.
    variance : numpy.ndarray, optional
        ``(ny, nx)`` variance in units of ``data`` squared; default
        :func:`noise_variance` (measured background noise + source photon noise).
    cleantype : {'meanmask', 'medmask', 'median', 'idw'}
        astroscrappy's replacement of flagged pixels.
    background_box : int
        Box (px) of the background noise grid.
    core_ratio : float
        Star-core guard: a detection whose brightest pixel has a 3x3 median above
        ``core_ratio`` times its own excess over the background is a star, not a hit
        (astroscrappy's fast separable medians can let bright, compact star cores
        through its fine-structure test). 0 disables the guard.

    Returns
    -------
    crmask : numpy.ndarray
        ``(ny, nx)`` bool, True on cosmic-ray pixels.
    cleaned : numpy.ndarray
        ``(ny, nx)`` float32 image with flagged pixels replaced, units of ``data``.

    Notes
    -----
    astroscrappy runs with one OpenMP thread (set with threadpoolctl; the parallelism
    comes from the process pool, one frame per core). Without a bad-pixel ``mask`` it
    runs on the full frame, ``niter`` iterations at once: the hot pixels of a frame not
    yet dark-subtracted are candidates by the thousand, their cut-outs cover most of the
    frame and cost as much or more (the same pixels flagged on the HAT-P-27b lights).
    With a ``mask`` (hot pixels hidden) it is run where it can find
    something, which gives its full-frame result (checked in the tests) for a fraction
    of the cost on a typical sky frame:

    * iteration 1 runs on cut-outs around the candidate pixels only: those whose
      Laplacian-to-noise ratio, computed with astroscrappy's own Laplacian and a lower
      bound of its noise, exceeds ``sigclip`` (no other pixel can pass its test), grown
      by the 2 px in which neighbours are added, with 10 px of context for its filters;
    * iterations 2..``niter`` run on cut-outs around the pixels cleaned by the previous
      iteration (nothing farther than the filters' reach can change).

    References
    ----------
    van Dokkum, P. G. 2001, PASP 113, 1420 (L.A.Cosmic); McCully, C. et al. 2018,
    astroscrappy, doi:10.5281/zenodo.1482019.
    """
    if gain is None or not gain > 0:
        raise CalibrationError(f"gain {gain!r} not usable for cosmic-ray detection")
    a = np.ascontiguousarray(np.nan_to_num(np.asarray(data, np.float32)))
    bad = None if mask is None else np.asarray(mask, bool)
    if bad is not None and not bad.any():
        bad = None
    work = a if bad is None else repair_pixels(a, bad)
    bkg, bstd = background_maps(work, background_box)
    var = None if variance is None else np.asarray(variance, np.float32)
    sat = float(satlevel) * float(gain) if np.isfinite(satlevel) else np.float32(3e38)
    options = dict(sigclip=sigclip, sigfrac=sigfrac, objlim=objlim, gain=float(gain),
                   readnoise=0.0, satlevel=sat, niter=1, sepmed=True, cleantype=cleantype,
                   fsmode="median")
    with _one_openmp_thread():
        if bad is None:  # hot pixels seed thousands of cut-outs: the full frame
            v = var if var is not None else _variance(work, bkg, bstd, gain)
            crmask, cleaned = _run_astroscrappy(work, v, dict(options, niter=int(niter)))
        else:
            crmask, cleaned = _local_iterations(work, (var, bkg, bstd, gain), options,
                                                sigclip, niter)
    if core_ratio > 0:
        guarded = _star_core_guard(work, bkg, crmask, core_ratio)
        restore = crmask & ~guarded
        cleaned[restore] = work[restore]
        crmask = guarded
    if bad is not None:
        crmask &= ~bad
        cleaned[bad] = a[bad]
    return crmask, cleaned


def _local_iterations(work, noise, options, sigclip, niter) -> tuple[np.ndarray, np.ndarray]:
    """L.A.Cosmic's iterations on cut-outs: the first around the candidates (and the edge
    strips), the later ones around the pixels the previous iteration cleaned (see
    :func:`lacosmic`, Notes). ``noise = (variance or None, background, background_std,
    gain)``. Returns ``(crmask, cleaned)``."""
    candidates = _candidates(work, noise[2], noise[0], sigclip)
    cleaned = work.copy()
    crmask = _local_pass(candidates, 2, cleaned, np.zeros_like(candidates), noise, options,
                         _edge_strips(*work.shape))
    new = crmask.copy()
    for _ in range(int(niter) - 1):
        if not new.any():
            break
        new = _local_pass(new, 10, cleaned, crmask, noise, options)
        crmask |= new
    return crmask, cleaned


#: Margin (px) around a cut-out: more than the reach of L.A.Cosmic's filters (~7 px), so
#: that the results inside the cut-out are those of a full-frame run.
_CONTEXT = 10


def _run_astroscrappy(image: np.ndarray, variance: np.ndarray, options: dict):
    """One astroscrappy call (run inside :func:`_one_openmp_thread`): ``(crmask, cleaned)``
    of ``image``."""
    import astroscrappy

    m, c = astroscrappy.detect_cosmics(
        np.ascontiguousarray(image, np.float32),
        inmask=None,
        invar=np.ascontiguousarray(variance, np.float32),
        **options,
    )
    return np.asarray(m, bool), np.asarray(c, np.float32)


def _local_pass(seeds, reach, image, exclude, noise, options, extra=()) -> np.ndarray:
    """Run one astroscrappy iteration on cut-outs around ``seeds`` (grown by ``reach``,
    plus :data:`_CONTEXT` for the filters) and the ``extra`` boxes; keep the detections
    inside the grown boxes (not in ``exclude``), write their cleaned values into
    ``image``; return the new detections. ``noise = (variance or None, background,
    background_std, gain)``: without a variance map, each cut-out's variance is modelled
    from its current pixels."""
    var, bkg, bstd, gain = noise
    ny, nx = image.shape
    boxes = _boxes(seeds, reach) + list(extra)
    if sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes) > 0.4 * image.size:
        boxes = [(slice(0, ny), slice(0, nx))]
    found = np.zeros_like(seeds)
    for by, bx in boxes:
        oy = slice(max(by.start - _CONTEXT, 0), min(by.stop + _CONTEXT, ny))
        ox = slice(max(bx.start - _CONTEXT, 0), min(bx.stop + _CONTEXT, nx))
        sub = image[oy, ox]
        v = var[oy, ox] if var is not None else _variance(sub, bkg[oy, ox], bstd[oy, ox], gain)
        m, c = _run_astroscrappy(sub, v, options)
        inner = (
            slice(by.start - oy.start, by.stop - oy.start),
            slice(bx.start - ox.start, bx.stop - ox.start),
        )
        hit = np.zeros_like(m)
        hit[inner] = m[inner] & ~exclude[by, bx]
        found[oy, ox] |= hit
        image[oy, ox][hit] = c[hit]
    return found


def _candidates(work, bstd, var, sigclip) -> np.ndarray:
    """Pixels L.A.Cosmic's first iteration can flag: a Laplacian-to-noise ratio above
    ``sigclip`` with a lower bound of astroscrappy's noise (its median-filtered variance
    is at least the background variance), so the candidates are a superset of its
    detections. The outermost pixel ring, where astroscrappy's Laplacian is meaningless
    (zero padding), is left to :func:`_edge_strips`."""
    import astroscrappy.utils

    if var is None:
        noise_floor = np.float32(0.95) * bstd
    else:
        noise_floor = np.sqrt(ndimage.minimum_filter(np.maximum(var, 0), size=7)) * np.float32(0.99)
    lplus = astroscrappy.utils.laplaceconvolve(astroscrappy.utils.subsample(work))
    lplus[lplus < 0] = 0
    lplus = np.asarray(astroscrappy.utils.rebin(lplus))
    candidates = lplus > 2 * float(sigclip) * np.maximum(noise_floor, 1e-12)
    candidates[[0, -1], :] = False
    candidates[:, [0, -1]] = False
    return candidates


def _edge_strips(ny: int, nx: int) -> list[tuple[slice, slice]]:
    """The four edge strips of a ``(ny, nx)`` frame, run as cut-outs of their own."""
    e = min(3, ny, nx)
    return [
        (slice(0, e), slice(0, nx)),
        (slice(ny - e, ny), slice(0, nx)),
        (slice(0, ny), slice(0, e)),
        (slice(0, ny), slice(nx - e, nx)),
    ]


def median_cosmics(
    data: np.ndarray,
    *,
    thresh: float = 5.0,
    mbox: int = 11,
    rbox: int = 11,
    gbox: int = 5,
    gain: float = 1.0,
    contrast: float = 3.0,
    mask: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    background_box: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect and clean cosmic rays with the median-filter method (ccdproc's
    ``cosmicray_median``), protecting star cores.

    A pixel is flagged when ``data - median_mbox > thresh * sigma`` (ccdproc), with an
    error image ``max(sigma, contrast * (median_3 - background) / thresh)``: ``sigma`` is
    the per-pixel noise (:func:`noise_variance`), and the second term requires a hit to
    stand ``contrast`` times higher above the median than its own 3x3 median stands
    above the smooth background.
    A star (several pixels wide) raises its 3x3 median almost as much as its peak and is
    kept; a cosmic ray (one or two pixels wide) leaves the 3x3 median at the background.

    Parameters
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` image (ADU or electrons).
    thresh : float
        Detection threshold in units of the error image.
    mbox : int
        Median box (px) defining the background of a hit.
    rbox : int
        Median box (px) for the replacement values, computed from the unflagged good
        pixels only (0: no replacement).
    gbox : int
        Box (px) by which detections are grown (0: no growth).
    gain : float
        e-/ADU of ``data`` (1 for electrons), for the photon noise of sources.
    contrast : float
        Sharpness required of a hit (see above); 0 disables the star protection.
    mask : numpy.ndarray, optional
        ``(ny, nx)`` bool, known bad pixels (hot, dead): interpolated over in a working
        copy before detection, never flagged nor changed.
    variance : numpy.ndarray, optional
        ``(ny, nx)`` noise variance (default :func:`noise_variance`).
    background_box : int
        Box (px) of the background noise grid.

    Returns
    -------
    crmask : numpy.ndarray
        ``(ny, nx)`` bool, True on flagged (and grown) pixels.
    cleaned : numpy.ndarray
        ``(ny, nx)`` float32 image with flagged pixels replaced by the ``rbox`` median.

    References
    ----------
    IRAF ``noao.imred.crutil.cosmicrays``; ccdproc ``cosmicray_median`` (Craig et al. 2017,
    doi:10.5281/zenodo.1069648).
    """
    import ccdproc

    a = np.ascontiguousarray(np.nan_to_num(np.asarray(data, np.float32)))
    bad = None if mask is None else np.asarray(mask, bool)
    raw = a
    if bad is not None and bad.any():  # known bad pixels must not seed (grown) detections
        a = repair_pixels(a, bad)
    var, bkg, _ = noise_variance(a, gain=gain, box=background_box)
    if variance is not None:
        var = np.asarray(variance, np.float32)
    sigma = np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)
    if contrast > 0:
        # excess of the 3x3 median over the smooth background: large on stars (extended),
        # ~0 under a cosmic ray (one or two pixels wide)
        structure = ndimage.median_filter(a, size=3, mode="nearest") - bkg
        sigma = np.maximum(sigma, np.float32(contrast / thresh) * np.maximum(structure, 0))
    # ccdproc detects (its growth and replacement are done below, so that known bad
    # pixels neither seed grown detections nor feed the replacement values)
    _, crmask = ccdproc.cosmicray_median(
        a, error_image=sigma, thresh=thresh, mbox=mbox, gbox=0, rbox=0
    )
    crmask = np.asarray(crmask, bool)
    if bad is not None:
        crmask &= ~bad
    if gbox > 0:
        crmask = ndimage.maximum_filter(crmask, gbox)
        if bad is not None:
            crmask &= ~bad
    cleaned = raw.copy()
    if rbox > 0 and crmask.any():
        excluded = crmask if bad is None else (crmask | bad)
        h = rbox // 2
        ny, nx = a.shape
        for y, x in zip(*np.nonzero(crmask)):
            sl = (
                slice(max(y - h, 0), min(y + h + 1, ny)),
                slice(max(x - h, 0), min(x + h + 1, nx)),
            )
            vals = a[sl][~excluded[sl]]
            cleaned[y, x] = np.median(vals) if vals.size else a[y, x]
    return crmask, cleaned


def clean_cosmics(
    ccd: CCDData,
    method: str = "lacosmic",
    gain: float | None = None,
    mask: np.ndarray | None = None,
    satlevel: float | None = None,
    **options,
) -> tuple[CCDData, int]:
    """Remove cosmic rays from a :class:`CCDData` with the right gain semantics.

    Parameters
    ----------
    ccd : CCDData
        Frame in ADU or electrons.
    method : {'lacosmic', 'median'}
        :func:`lacosmic` or :func:`median_cosmics`.
    gain : float, optional
        e-/ADU. Required for data in ADU; for data in electrons the detection uses
        gain 1 (a different value is ignored with a warning in the log).
    mask : numpy.ndarray, optional
        ``(ny, nx)`` bool, pixels excluded (hot pixels); combined with ``ccd.mask``'s
        bad pixels only through this argument.
    satlevel : float, optional
        Saturation in the units of the data (L.A.Cosmic only).
    **options
        Passed to the method (``sigclip``, ``objlim``, ``niter``, ``thresh``, ``mbox`` ...).

    Returns
    -------
    (CCDData, int)
        Cleaned frame (mask OR-ed with the hits; uncertainty kept; header ``ADNCRPIX``)
        and the number of flagged pixels.

    Raises
    ------
    CalibrationError
        Data in ADU without a gain, data in another unit, or an unknown method.
    """
    if ccd.unit == u.electron:
        g = 1.0
        if gain is not None and not np.isclose(gain, 1.0):
            log.warning(
                "cosmic rays: gain=%s ignored, the data are already in electrons "
                "(astroscrappy then uses gain=1)",
                gain,
            )
    elif ccd.unit == u.adu:
        if gain is None or not gain > 0:
            raise CalibrationError(
                "data in ADU and no gain: give gain= (e-/ADU) or add GAIN to "
                "the header with header_tools, or apply gain_correction first"
            )
        g = float(gain)
    else:
        raise CalibrationError(
            f"cosmic-ray detection needs data in ADU or electrons, not {ccd.unit}"
        )
    if method == "lacosmic":
        if satlevel is not None:
            options["satlevel"] = satlevel
        crmask, cleaned = lacosmic(ccd.data, gain=g, mask=mask, **options)
    elif method == "median":
        crmask, cleaned = median_cosmics(ccd.data, gain=g, mask=mask, **options)
    else:
        raise CalibrationError(f"cosmic-ray method {method!r} unknown; use 'lacosmic' or 'median'")
    header = ccd.meta.copy() if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
    n = int(crmask.sum())
    header["ADNCRPIX"] = (n, f"cosmic-ray pixels cleaned ({method})")
    new_mask = crmask if ccd.mask is None else (np.asarray(ccd.mask, bool) | crmask)
    unc = (
        None
        if ccd.uncertainty is None
        else StdDevUncertainty(np.array(ccd.uncertainty.array, np.float32))
    )
    out = CCDData(cleaned, unit=ccd.unit, meta=header, uncertainty=unc, mask=new_mask, wcs=ccd.wcs)
    return out, n
