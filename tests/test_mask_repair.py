"""Masks that mean something (issue 19): masked pixels are repaired before resampling and
flagged where they land, never spread into good pixels; photometry repairs the masked
pixels of an aperture, counts them, and refuses a point where they hold too much flux.
"""
from __future__ import annotations

import numpy as np
import pytest
from datapaths import HATP27, require

from astrodart.alignment.resample import warp_to_reference
from astrodart.alignment.transforms import PixelTransform
from astrodart.datasets import simulate
from astrodart.photometry.apertures import PhotFlag, aperture_photometry_ccd

SHIFT = PixelTransform.translation(7.3, -4.6)


def _stars(shape=(200, 200), seed=3):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(30, shape[0] - 30, (12, 2))
    flux = rng.uniform(2e4, 2e5, 12)
    img = simulate.render_stars(shape, xy[:, 0], xy[:, 1], flux, 4.0, psf="gaussian") + 200.0
    return img.astype(np.float32), xy, flux


def test_warp_flags_masked_pixels_where_they_land_and_does_not_spread():
    img, xy, _ = _stars()
    rng = np.random.default_rng(7)
    mask = np.zeros(img.shape, bool)
    mask[rng.integers(20, 180, 200), rng.integers(20, 180, 200)] = True
    n_bad = int(mask.sum())
    dirty = img.copy()
    dirty[mask] = 1e6  # what a cosmic ray leaves
    out, invalid = warp_to_reference(dirty, SHIFT, img.shape, mask=mask)
    clean, footprint = warp_to_reference(img, SHIFT, img.shape)
    inside = ~footprint
    assert np.isfinite(out[inside]).all()               # NaN only outside the footprint
    assert np.isnan(out[footprint]).all()
    flagged = invalid & inside
    assert abs(int(flagged.sum()) - n_bad) <= 2         # one output pixel per masked pixel
    # the good pixels are untouched by the masked ones (no ringing of the 1e6 values)
    good = inside & ~flagged
    assert np.max(np.abs(out[good] - clean[good])) < 0.05 * img.max()
    assert np.median(np.abs(out[good] - clean[good])) < 1e-3


def test_photometry_repairs_a_wing_pixel_and_refuses_a_core_pixel():
    img, xy, flux = _stars()
    mask = np.zeros(img.shape, bool)
    cx, cy = np.round(xy[0]).astype(int)
    mask[cy + 4, cx] = True                              # wing of star 0
    mask[int(round(xy[1][1])), int(round(xy[1][0]))] = True  # core of star 1
    kw = dict(r_ap=8.0, r_in=12.0, r_out=18.0, gain=1.0, read_noise=5.0)
    ref = aperture_photometry_ccd(img, xy, **kw)
    dirty = img.copy()
    dirty[mask] = np.nan
    res = aperture_photometry_ccd(dirty, xy, mask=mask, **kw)
    assert res.n_repaired[0] == pytest.approx(1.0) and res.n_repaired[1] == pytest.approx(1.0)
    assert (res.n_repaired[2:] == 0).all()
    assert res.repaired_fraction[0] < 0.02 and not res.flags[0] & PhotFlag.BAD_PIXEL
    assert res.flux[0] == pytest.approx(ref.flux[0], rel=2e-3)   # nothing lost
    assert res.repaired_fraction[1] > 0.02 and res.flags[1] & PhotFlag.BAD_PIXEL
    assert np.allclose(res.area, np.pi * 8.0**2)
    assert np.allclose(res.flux[2:], ref.flux[2:])
    with pytest.raises(ValueError, match="max_repaired_fraction"):
        aperture_photometry_ccd(img, xy, max_repaired_fraction=2.0, **kw)


def test_real_frame_aligned_with_the_issue_mask_keeps_every_star_flux(tmp_path):
    """A HAT-P-27b light with ~4,500 random single pixels masked (what stage 1 used to
    leave) is aligned by a sub-pixel shift: before, the mask spread and an 8-px aperture
    lost up to 27 % of a star's flux; now no aperture loses flux."""
    from astrodart.frames.io import read_frame
    from astrodart.sources.stars import find_stars, positions_of

    raw = sorted(require(HATP27).glob("*science_exposures.0000001*.FIT.gz"))[0]
    data = np.asarray(read_frame(raw).data, np.float32)
    rng = np.random.default_rng(11)
    mask = np.zeros(data.shape, bool)
    mask[rng.integers(0, data.shape[0], 4500), rng.integers(0, data.shape[1], 4500)] = True
    stars = positions_of(find_stars(data, 4.5, max_stars=40))
    xy = SHIFT.apply(stars)
    keep = (xy > 20).all(1) & (xy < np.array(data.shape[::-1]) - 20).all(1)
    xy = xy[keep]
    clean, _ = warp_to_reference(data, SHIFT, data.shape)
    out, invalid = warp_to_reference(data, SHIFT, data.shape, mask=mask)
    assert abs(int((invalid & np.isfinite(out)).sum()) - int(mask.sum())) < 0.01 * mask.sum()
    kw = dict(r_ap=8.0, r_in=12.0, r_out=18.0, gain=1.0, read_noise=10.0)
    ref = aperture_photometry_ccd(clean, xy, **kw)
    res = aperture_photometry_ccd(out, xy, mask=invalid, **kw)
    ok = ~(res.flags & PhotFlag.BAD_PIXEL).astype(bool) & (ref.flux > 0)
    assert ok.sum() >= 0.8 * len(xy) and np.isfinite(res.flux).all()
    loss = 1 - res.flux[ok] / ref.flux[ok]
    assert np.max(np.abs(loss)) < 0.02                   # within the refusal limit (2 %)
    assert np.median(np.abs(loss)) < 3e-3                 # measured 1.25e-3 (one repaired pixel)
