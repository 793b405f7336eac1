"""Plate solving: offline on the real HAT-P-32 frames, graceful failure on HAT-P-27,
the online backend against a replayed nova.astrometry.net exchange, and check_ds9.

Every test works on copies of ../shared/data in a temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from datapaths import HATP27, HATP32, copy_night, require

from astrodart.astrometry import solve as A
from astrodart.astrometry.verify import _check_sip as check_sip
from astrodart.sources.stars import find_stars
from astrodart.frames.io import read_frame
from astrodart.frames.header import FrameHeader
from astrodart.second_stage import (
    AstrometryFailedWarning,
    DS9NotInstalledWarning,
    astrometry,
    check_ds9,
    get_fwhm,
)

#: Centre of the first HAT-P-32 frame from an independent solve (solve-field + Tycho-2).
REFERENCE_CENTRE = SkyCoord(31.24850 * u.deg, 46.74113 * u.deg)


def _wcs(path) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(fits.getheader(path))


def _centre(path) -> SkyCoord:
    h = fits.getheader(path)
    return _wcs(path).pixel_to_world((h["NAXIS1"] - 1) / 2, (h["NAXIS2"] - 1) / 2)


@pytest.fixture(scope="module")
def hatp32_solved(tmp_path_factory):
    """The 10 HAT-P-32 frames copied and solved once, offline, without an API key."""
    d = tmp_path_factory.mktemp("hatp32")
    files = [str(p) for p in copy_night(HATP32, d)]
    assert len(files) == 10
    fwhm = get_fwhm(files[:2]).estimate_fwhm()  # pixels, used as is for star finding
    step = astrometry(str(d), files, None, fwhm + [fwhm[-1]] * 8)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstrometryFailedWarning)
        failed = step.run()
    seconds = time.perf_counter() - t0
    return d, files, step, failed, seconds


def test_all_ten_hatp32_frames_solve_offline_fast(hatp32_solved):
    _, files, step, failed, seconds = hatp32_solved
    assert failed == []
    per_frame = seconds / len(files)
    print(f"\nin-process plate solving: {per_frame:.2f} s per frame "
          f"({seconds:.1f} s for {len(files)} frames, detection included)")
    assert per_frame <= 3.0
    for f in files:
        r = step.results[f]
        assert r.solved and r.backend == "inprocess"
        assert r.index and r.index.startswith("index-tycho2")
        w = _wcs(f)
        # these frames show no significant distortion (F-test): the TAN fit is written
        assert w.has_celestial and w.sip is None
        scale = np.mean(proj_plane_pixel_scales(w.celestial)) * 3600
        assert scale == pytest.approx(5.16, abs=0.05)
        pointing = FrameHeader.from_file(f).coord
        assert _centre(f).separation(pointing) < 6 * u.arcmin
        h = fits.getheader(f)
        assert h["ASTBACKE"] == "inprocess" and "astrometry.net" in h["ASTSOLVR"]
        assert h["ASTINDEX"].startswith("index-tycho2")
        assert h["ASTNSTAR"] >= 15
        assert 0 < h["ASTRMS"] < 3.0  # arcsec, about 0.2 px
        assert h["ASTSCALE"] == pytest.approx(5.16, abs=0.05)
        assert h["RADESYS"] == "ICRS"


def test_first_frame_agrees_with_an_independent_solve(hatp32_solved):
    _, files, _, _, _ = hatp32_solved
    sep = _centre(files[0]).separation(REFERENCE_CENTRE)
    assert sep < 30 * u.arcsec
    assert sep < 5 * u.arcsec  # what it actually achieves


def test_pixels_and_other_cards_are_untouched(hatp32_solved):
    _, files, _, _, _ = hatp32_solved
    for f in files[:3]:
        orig = require(HATP32) / Path(f).name
        with fits.open(orig, do_not_scale_image_data=True) as a, \
                fits.open(f, do_not_scale_image_data=True) as b:
            assert a[0].data.dtype == b[0].data.dtype
            np.testing.assert_array_equal(a[0].data, b[0].data)
            for key in ("DATE-OBS", "UT-OBS", "EXPTIME", "RA", "DEC", "IM_SCALE", "LONGITUD",
                        "EQUINOX", "BZERO"):
                if key in a[0].header:
                    assert b[0].header[key] == a[0].header[key]
    assert not any(p.name.startswith(".astrodart-tmp") for p in Path(files[0]).parent.iterdir())


def test_solutions_are_logged(hatp32_solved):
    d, files, _, _, _ = hatp32_solved
    lines = [json.loads(x) for x in (d / "astrodart_log.jsonl").read_text().splitlines()]
    events = [e for e in lines if e["step"] == "astrometry"]
    assert [e["file"] for e in events] == files
    assert all(e["solved"] and e["n_matched"] >= 15 and e["rms_arcsec"] < 3 for e in events)
    assert all(e["index"].startswith("index-tycho2") and e["backend"] == "inprocess"
               for e in events)


def test_resolving_keeps_existing_solutions_unless_overwrite(hatp32_solved):
    d, files, _, _, _ = hatp32_solved
    step = astrometry(str(d), files[:2], None, None)
    assert step.run() == []
    assert all(step.results[f].backend == "previous" for f in files[:2])
    step = astrometry(str(d), files[:1], None, 2.0, overwrite="yes")
    assert step.run() == []
    assert step.results[files[0]].backend == "inprocess"
    assert _centre(files[0]).separation(REFERENCE_CENTRE) < 30 * u.arcsec


def _stars(path, fwhm=2.0):
    ccd = read_frame(path)
    t = find_stars(ccd.data, fwhm, max_stars=100)
    return np.column_stack([t["x"], t["y"]]), t["flux"], ccd.shape, FrameHeader(ccd.meta, path)


def test_solve_field_backend_agrees_and_keeps_width_and_height(tmp_path):
    f = copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0]
    xy, flux, shape, fh = _stars(f)
    assert shape == (500, 650)  # (ny, nx): width 650 = NAXIS1
    sf = A.solve_with_solve_field(xy, shape, flux=flux, pixel_scale=fh.pixel_scale,
                                  position=fh.coord, time_limit=30)
    assert sf.solved, sf.reason
    assert sf.wcs.pixel_shape == (650, 500) or sf.wcs.pixel_shape is None
    assert sf.center.separation(REFERENCE_CENTRE) < 30 * u.arcsec
    ip = A.solve_in_process(xy, shape, pixel_scale=fh.pixel_scale, position=fh.coord)
    assert ip.solved
    # same stars, same engine, both fed 1-based positions: centres agree to a fraction of
    # a pixel (0-based input would shift the in-process one by ~1 px = 5")
    assert ip.center.separation(sf.center) < 1.5 * u.arcsec
    assert ip.pixel_scale == pytest.approx(sf.pixel_scale, rel=1e-3)
    # a swapped width/height would put the centre (325, 250) -> (250, 325) px away: > 6'
    swapped = A.solve_with_solve_field(xy, shape[::-1], flux=flux, pixel_scale=fh.pixel_scale,
                                       position=fh.coord, time_limit=30)
    if swapped.solved:
        assert swapped.center.separation(sf.center) > 5 * u.arcmin


def test_time_limit_also_holds_outside_the_main_thread(tmp_path):
    # no timer signals in worker threads: the engine runs in a child process there
    from concurrent.futures import ThreadPoolExecutor

    p32 = copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0]
    p27 = copy_night(HATP27, tmp_path, "*science_exposures.00000001.FIT.gz")[0]
    xy32, _, shape32, fh = _stars(p32)
    xy27, _, shape27, _ = _stars(p27, 3.0)
    with ThreadPoolExecutor(1) as pool:
        ok = pool.submit(A.solve_in_process, xy32, shape32, pixel_scale=fh.pixel_scale,
                         position=fh.coord).result()
        t0 = time.perf_counter()
        blind = pool.submit(A.solve_in_process, xy27, shape27, time_limit=2.0).result()
        elapsed = time.perf_counter() - t0
    assert ok.solved and ok.center.separation(REFERENCE_CENTRE) < 30 * u.arcsec
    assert not blind.solved and "no match within the 2 s time limit" in blind.reason
    assert elapsed < 2.0 + 3.0


def test_index_discovery_env_and_coverage(tmp_path, monkeypatch):
    system = A.discover_index_files()
    assert len(system) >= 1 and A.index_coverage(system) == "30'–2000'"
    d = tmp_path / "idx"
    d.mkdir()
    shutil.copy(system[-1].path, d / system[-1].name)
    fits.PrimaryHDU(np.zeros((2, 2))).writeto(d / "not-an-index.fits")
    monkeypatch.setenv(A.INDEX_ENV, str(d))
    found = A.discover_index_files(use_system=False)
    assert [i.name for i in found] == [system[-1].name]
    assert found[0].index_id == system[-1].index_id
    assert A.discover_index_files(tmp_path / "nowhere", use_env=False, use_system=False) == []
    # a 24' field cannot use quads of 30' and more; a 56' x 43' one can use 4108 and 4109
    assert A.usable_index_files(system, 24.0, 24.0) == []
    assert {i.index_id for i in A.usable_index_files(system, 55.9, 43.0)} == {4108, 4109}
    assert A.field_size_arcmin((500, 650), 5.16) == pytest.approx((55.9, 43.0), abs=0.05)


def test_hatp27_fails_gracefully_quickly_and_the_batch_carries_on(tmp_path):
    p27 = copy_night(HATP27, tmp_path, "*science_exposures.0000000[159].FIT.gz")
    p32 = copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")
    files = [str(p27[0]), str(p32[0]), str(p27[1]), str(p27[2])]
    before = {f: Path(f).read_bytes() for f in files if "HAT-P-27" in f}
    step = astrometry(str(tmp_path), files, None, None, time_limit=3.0, give_up_after=2)
    t0 = time.perf_counter()
    with pytest.warns(AstrometryFailedWarning) as caught:
        failed = step.run()
    elapsed = time.perf_counter() - t0
    assert failed == [files[0], files[2], files[3]]
    assert step.results[files[1]].solved  # the batch carried on after a failure
    assert len(caught) == 3 and all("HAT-P-27" in str(w.message) for w in caught)
    blind = step.results[files[0]].reason
    assert "no match within the 3 s time limit" in blind
    assert "no pixel scale in the header" in blind and "30'–2000'" in blind
    # after two blind time-outs the last frame is skipped with the reason, not searched
    assert step.results[files[3]].reason.startswith("skipped: the previous 2 frames")
    assert elapsed < 2 * (3.0 + 4.0) + 8.0
    for f, content in before.items():
        assert Path(f).read_bytes() == content  # nothing written into failed frames


def test_hatp27_with_its_true_scale_is_refused_at_once_with_the_reason(tmp_path):
    files = [str(p) for p in copy_night(HATP27, tmp_path, "*science_exposures.0000000[15].FIT.gz")]
    step = astrometry(str(tmp_path), files, None, None, pixel_scale=1.39)
    t0 = time.perf_counter()
    with pytest.warns(AstrometryFailedWarning, match="field 24' x 24' wide"):
        failed = step.run()
    assert failed == files
    assert time.perf_counter() - t0 < 6.0
    reason = step.results[files[0]].reason
    assert "installed index files cover 30'–2000'" in reason
    table = step.to_table()
    assert list(table["solved"]) == [False, False]


def test_unknown_keywords_and_backends_are_rejected(tmp_path):
    with pytest.raises(TypeError):
        astrometry(str(tmp_path), [], None, None, time_limt=5)
    with pytest.raises(ValueError, match="backend"):
        astrometry(str(tmp_path), [], None, None, backend="nova")
    with pytest.raises(ValueError, match="fwhm has 2 values"):
        astrometry(str(tmp_path), ["a.fits"], None, [2.0, 3.0])


def test_a_missing_file_is_reported_and_never_stops_the_batch(tmp_path):
    good = str(copy_night(HATP32, tmp_path, "HATP-32171220013612.FITS")[0])
    missing = str(tmp_path / "missing.fits")
    step = astrometry(str(tmp_path), [missing, good], None, 2.0)
    with pytest.warns(AstrometryFailedWarning, match="missing.fits"):
        assert step.run() == [missing]
    assert "does not exist" in step.results[missing].reason


def test_star_import_gives_the_astrodart_names():
    ns: dict = {}
    exec("from astrodart.second_stage import *", ns)
    assert {"get_fwhm", "astrometry", "check_ds9"} <= set(ns)


# --------------------------------------------------------------------- online backend
#: WCS header as returned by nova.astrometry.net's ``wcs_file/<job>`` for the first
#: HAT-P-32 frame (astrometry.net 0.93 solution with Tycho-2 index 4109, SIP order 2).
NOVA_WCS_CARDS = """\
WCSAXES =                    2 / no comment
CTYPE1  = 'RA---TAN-SIP' / TAN (gnomic) projection + SIP distortions
CTYPE2  = 'DEC--TAN-SIP' / TAN (gnomic) projection + SIP distortions
EQUINOX =               2000.0 / Equatorial coordinates definition (yr)
LONPOLE =                180.0 / no comment
LATPOLE =                  0.0 / no comment
CRVAL1  =        31.2485303791 / RA  of reference point
CRVAL2  =        46.7411176509 / DEC of reference point
CRPIX1  =                325.5 / X reference pixel
CRPIX2  =                250.5 / Y reference pixel
CUNIT1  = 'deg     ' / X pixel scale units
CUNIT2  = 'deg     ' / Y pixel scale units
CD1_1   =    -0.00143451922353 / Transformation matrix
CD1_2   =    4.31603516992E-06 / no comment
CD2_1   =   -4.85081216194E-06 / no comment
CD2_2   =     -0.0014345166108 / no comment
IMAGEW  =                  650 / Image width,  in pixels.
IMAGEH  =                  500 / Image height, in pixels.
A_ORDER =                    2 / Polynomial order, axis 1
A_0_2   =   -4.69039302851E-06 / no comment
A_1_1   =    2.27411092808E-06 / no comment
A_2_0   =    2.32577287052E-06 / no comment
B_ORDER =                    2 / Polynomial order, axis 2
B_0_2   =    1.90610472352E-06 / no comment
B_1_1   =   -1.68682265594E-07 / no comment
B_2_0   =   -8.05297556412E-07 / no comment
AP_ORDER=                    2 / Inv polynomial order, axis 1
AP_0_0  =   -5.08902818404E-08 / no comment
AP_0_1  =   -2.75571360494E-07 / no comment
AP_0_2  =    4.69043993003E-06 / no comment
AP_1_0  =    3.68992659011E-07 / no comment
AP_1_1  =   -2.27412279552E-06 / no comment
AP_2_0  =   -2.32579372673E-06 / no comment
BP_ORDER=                    2 / Inv polynomial order, axis 2
BP_0_0  =    2.40390180317E-08 / no comment
BP_0_1  =    5.54287626256E-08 / no comment
BP_0_2  =   -1.90611963776E-06 / no comment
BP_1_0  =   -1.05988483908E-07 / no comment
BP_1_1  =     1.6868330488E-07 / no comment
BP_2_0  =     8.0530471138E-07 / no comment"""


class _Response:
    def __init__(self, payload=None, text="", status_code=200):
        self._payload, self.text, self.status_code = payload, text, status_code

    def json(self):
        return self._payload


class NovaReplay:
    """Replays the nova.astrometry.net API exchange (login, url_upload, submissions,
    jobs/<id>/info, wcs_file/<id>) at astroquery's HTTP layer, recording every request."""

    def __init__(self, job_status="success", wcs_cards=NOVA_WCS_CARDS, fail_first=0):
        self.calls: list[tuple[str, str, dict]] = []
        self.timeouts: list = []
        self.job_status = job_status
        self.wcs_text = fits.Header.fromstring(wcs_cards, sep="\n").tostring()
        self.fail_first = fail_first

    def __call__(self, client, method, url, data=None, cache=None, timeout=None, **kw):
        self.calls.append((method, url, data or {}))
        self.timeouts.append(timeout)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise requests.exceptions.ReadTimeout("HTTPSConnectionPool: read timed out")
        if url.endswith("/api/login"):
            return _Response({"status": "success", "message": "authenticated user",
                              "session": "f2a8b1c9d0e7"})
        if url.endswith("/api/url_upload"):
            return _Response({"status": "success", "subid": 7901234, "hash": "0b9c2a"})
        if "/api/submissions/" in url:
            return _Response({"processing_started": "2024-05-01 10:00:01", "jobs": [8805678],
                              "job_calibrations": [], "user": 4242})
        if "/api/jobs/" in url and url.endswith("/info"):
            return _Response({"status": self.job_status, "original_filename": "",
                              "objects_in_field": []})
        if "/wcs_file/" in url:
            return _Response(text=self.wcs_text)
        raise AssertionError(f"unexpected request {method} {url}")

    def payload(self, endpoint):
        for _, url, data in self.calls:
            if url.endswith(endpoint):
                return json.loads(data["request-json"])
        raise AssertionError(f"no request to {endpoint}")


@pytest.fixture
def nova(monkeypatch):
    from astroquery.astrometry_net import AstrometryNetClass, conf

    monkeypatch.setattr(conf, "api_key", "")

    def install(**kw):
        replay = NovaReplay(**kw)
        monkeypatch.setattr(AstrometryNetClass, "_request",
                            lambda self, method, url, **k: replay(self, method, url, **k))
        return replay
    return install


def test_online_backend_against_a_replayed_exchange(tmp_path, nova):
    replay = nova()
    f = str(copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0])
    step = astrometry(str(tmp_path), [f], "my-secret-key", 2.0, backend="online",
                      request_timeout=25.0)
    assert step.run() == []
    assert replay.timeouts and all(t == 25.0 for t in replay.timeouts)  # no request unbounded
    assert replay.payload("/api/login") == {"apikey": "my-secret-key"}
    sent = replay.payload("/api/url_upload")
    assert (sent["image_width"], sent["image_height"]) == (650, 500)  # not swapped
    assert min(sent["x"]) >= 1.0 and min(sent["y"]) >= 1.0  # 1-based positions
    assert sent["scale_units"] == "arcsecperpix" and sent["scale_est"] == pytest.approx(5.21)
    assert sent["center_ra"] == pytest.approx(31.312099) and sent["session"] == "f2a8b1c9d0e7"
    h = fits.getheader(f)
    assert h["ASTBACKE"] == "online" and "nova.astrometry.net" in h["ASTSOLVR"]
    assert _centre(f).separation(REFERENCE_CENTRE) < 30 * u.arcsec
    assert _wcs(f).sip is not None


def test_online_solve_timeout_is_a_clear_failure(tmp_path, nova):
    nova(job_status="solving")
    f = str(copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0])
    step = astrometry(str(tmp_path), [f], "my-secret-key", 2.0, backend="online",
                      online_timeout=1.5)
    t0 = time.perf_counter()
    with pytest.warns(AstrometryFailedWarning, match="did not finish within 1.5 s"):
        assert step.run() == [f]
    assert time.perf_counter() - t0 < 10
    assert "submission 7901234" in step.results[f].reason
    assert "ASTSOLVR" not in fits.getheader(f)


def test_online_network_timeouts_are_retried(tmp_path, nova):
    xy, _, shape, fh = _stars(copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0])
    replay = nova(fail_first=2)
    res = A.solve_online(xy, shape, api_key="k", pixel_scale=fh.pixel_scale, retries=2,
                         retry_wait=0.0)
    assert res.solved and len(res.attempts) == 2 and "ReadTimeout" in res.attempts[0]
    assert res.center.separation(REFERENCE_CENTRE) < 30 * u.arcsec
    replay.fail_first = 10
    res = A.solve_online(xy, shape, api_key="k", retries=1, retry_wait=0.0)
    assert not res.solved and "unreachable after 2 attempts" in res.reason


def test_online_needs_a_key_and_is_the_fallback_when_offline_cannot_solve(tmp_path, nova):
    f = str(copy_night(HATP27, tmp_path, "*science_exposures.00000001.FIT.gz")[0])
    xy, _, shape, _ = _stars(f, 3.0)
    res = A.solve_online(xy, shape)
    assert not res.solved and "no nova.astrometry.net API key" in res.reason
    # the field is too small for the local index files: with a key, auto falls back online
    cards = "\n".join([
        "WCSAXES =                    2", "CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'",
        "CRVAL1  =            222.76750", "CRVAL2  =              5.94722",
        "CRPIX1  =                512.5", "CRPIX2  =                512.5",
        "CD1_1   =        -3.861111E-04", "CD1_2   =                  0.0",
        "CD2_1   =                  0.0", "CD2_2   =         3.861111E-04"])
    nova(wcs_cards=cards)
    step = astrometry(str(tmp_path), [f], "my-secret-key", 3.0, pixel_scale=1.39)
    assert step.backends()[-1] == "online"
    assert step.run() == []
    r = step.results[f]
    assert r.backend == "online" and "field 24' x 24' wide" in r.attempts[0]
    h = fits.getheader(f)
    assert h["ASTBACKE"] == "online" and h["ASTSCALE"] == pytest.approx(1.39)


# ------------------------------------------------------------------------------ DS9
def test_check_ds9_warns_when_ds9_is_missing(tmp_path, monkeypatch):
    f = copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0]
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.warns(DS9NotInstalledWarning, match="DS9 is not installed"):
        viewer = check_ds9(f)
    assert not viewer.opened and viewer.process is None
    with pytest.raises(FileNotFoundError):
        check_ds9(tmp_path / "nope.fits")


def test_check_ds9_opens_the_image_when_installed(tmp_path, monkeypatch):
    f = copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ds9"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'ds9-args.txt'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    viewer = check_ds9(f)
    assert viewer.opened
    viewer.process.wait(10)
    assert (tmp_path / "ds9-args.txt").read_text().split()[0] == str(f)


def test_star_finding_uses_the_pixel_fwhm_unscaled(tmp_path, monkeypatch):
    # the original multiplied the pixel FWHM by arcsec/px (5.21 here) before star finding
    import astrodart.pipeline.solve as ss  # where the astrometry step finds its stars

    seen = []

    def spy(data, fwhm, *args, **kwargs):
        seen.append(fwhm)
        return find_stars(data, fwhm, *args, **kwargs)

    monkeypatch.setattr(ss, "find_stars", spy)
    f = str(copy_night(HATP32, tmp_path, "HATP-32171220013343.FITS")[0])
    assert astrometry(str(tmp_path), [f], None, [2.1]).run() == []
    assert seen == [2.1]
    # once solved, get_fwhm reports arcseconds with the solved scale (5.16"/px, not 5.21)
    fw = get_fwhm([f])
    px = fw.estimate_fwhm()[0]
    assert fw.fwhm_arcsec[0] == pytest.approx(px * 5.16, rel=0.01)


def _pairs(distortion: float, seed: int = 1):
    """25 star pairs of a 512 px, 6"/px field; the true sky positions carry a quadratic
    distortion of ``distortion`` px at the corners, the measured ones 0.02 px noise."""
    rng = np.random.default_rng(seed)
    truth = WCS(naxis=2)
    truth.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    truth.wcs.crpix, truth.wcs.crval = [256.5, 256.5], [132.85, 11.8]
    truth.wcs.cd = np.array([[-6.0, 0.0], [0.0, 6.0]]) / 3600.0
    xy = rng.uniform(0, 511, (25, 2))
    u_, v_ = (xy[:, 0] - 255.5) / 255.5, (xy[:, 1] - 255.5) / 255.5
    sky = truth.pixel_to_world(xy[:, 0] + distortion * u_ * v_, xy[:, 1] + distortion * u_ ** 2)
    return xy + rng.normal(0, 0.02, xy.shape), sky


@pytest.mark.parametrize("distortion, kept", [(0.0, False), (2.0, True)])
def test_sip_is_kept_only_where_the_distortion_is_significant(distortion, kept):
    from astropy.wcs.utils import fit_wcs_from_points

    xy, sky = _pairs(distortion)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = fit_wcs_from_points((xy[:, 0], xy[:, 1]), sky, sip_degree=2)
    n, rms, centre, scale = A.verify_wcs(engine, xy, sky, (512, 512), 2.0)
    wcs, n2, rms2, *_, note = check_sip(engine, n, rms, centre, scale, "", xy, sky,
                                           (512, 512), 2.0, 6, 2)
    assert (wcs.sip is not None) is kept, note
    assert ("not significant" in note) is not kept
    assert n2 == 25 and rms2 < 0.02 * 6 * 3     # arcsec: the centroid noise, 0.02 px


def test_api_key_read_without_loading_astroquery(tmp_path):
    """The online backend's key is found without importing astroquery's HTTP stack (~2 s
    of a night's astrometry step), and it is the key astroquery itself then reads."""
    import subprocess
    import sys

    (tmp_path / "astropy").mkdir()
    (tmp_path / "astropy" / "astroquery.cfg").write_text("[astrometry_net]\napi_key = k3y\n")
    code = ("import sys\n"
            "from astrodart.astrometry.online import _configured_api_key\n"
            "first = _configured_api_key()\n"
            "loaded = 'astroquery.astrometry_net' in sys.modules\n"
            "from astroquery.astrometry_net import conf\n"
            "print(first, loaded, conf.api_key, _configured_api_key())\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["k3y", "False", "k3y", "k3y"]


def test_night_refusal_stops_after_the_first_frame(tmp_path):
    """A field the index files cannot give (HAT-P-27b, 24') is tried once, on the
    sharpest frame, within the blind time limit; the other frames are not tried and say
    why. A second night of a solvable field (HAT-P-32) solves every frame."""
    from types import SimpleNamespace

    from astrodart.pipeline.night_astrometry import BLIND_TIME_LIMIT, _solve_night

    def night(files):
        result = SimpleNamespace(reference_frame=str(files[1]), data_dir=tmp_path / "tree",
                                 series_filter="V")
        return SimpleNamespace(result=result, guess={"V": 3.0}, pool=None,
                               options=SimpleNamespace(overwrite=True))

    files = copy_night(HATP27, tmp_path / "p27", "*science_exposures.0000000*.FIT.gz")
    table = _solve_night(night(files), [str(p) for p in files])
    assert len(table) == len(files) == 3
    assert not any(table["solved"])
    tried = table["elapsed"] > 0
    assert list(table["file"][tried]) == [str(files[1])]
    assert table["elapsed"][tried][0] < BLIND_TIME_LIMIT + 3.0  # the limit holds (detection aside)
    assert all("not tried" in r and files[1].name in r for r in table["reason"][~tried])

    good = copy_night(HATP32, tmp_path / "p32")[:3]
    solved = _solve_night(night(good), [str(p) for p in good])
    assert list(solved["solved"]) == [True, True, True]
