"""The AAVSO reports (issue 19): the AAVSO Extended File Format and the AAVSO Exoplanet
Database (Exoplanet Watch) report, written for the HAT-P-27 night and checked against
their published rules; the checks refuse broken files, one rule at a time.

The night's light curve here is made of the real frames' time stamps (mid-exposure from
the 100 science headers, BJD_TDB and airmass by the package's timing functions at Mt
Stony Brook) with a 1.4 % transit at the ephemeris' mid-time and 3 ppt noise: the full
photometry of the night takes minutes (``tests/test_photometry_real.py`` does it); the
format rules only need real dates, airmasses, exposure and binning.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.time import Time
from datapaths import HATP27, require

from astrodart.frames.header import FrameHeader
from astrodart.photometry.exports import (
    PLACEHOLDER_OBSCODE,
    ReportFormatError,
    aavso_extended_text,
    aavso_filter,
    exoplanet_report_text,
    validate_aavso_extended,
    validate_exoplanet_report,
    write_report,
)
from astrodart.photometry.timing import airmass, bjd_tdb
from astrodart.photometry.transit import trapezoid_model

TARGET = SkyCoord("14h51m04.2s", "+05d56m50s", frame="icrs")
SITE = EarthLocation.from_geodetic(-73.12, 40.91, 40.0)
T0 = 2455186.01879 + 1002 * 3.0395803  # Béky et al. 2011: 2458231.6783 BJD_TDB


@pytest.fixture(scope="module")
def night():
    """The HAT-P-27 night's 100 science frames: times, airmass and a transit light curve."""
    files = sorted(require(HATP27).glob("*science_exposures*.FIT.gz"))
    assert len(files) == 100
    heads = [FrameHeader.from_file(f) for f in files]
    mid = Time([h.mid_exposure.utc.jd for h in heads], format="jd", scale="utc")
    bjd = bjd_tdb(mid, TARGET, SITE).jd
    rng = np.random.default_rng(27)
    flux = trapezoid_model(bjd, T0, 0.014, 1.7 / 24, 0.012) * (1 + 0.003 * rng.normal(size=100))
    return {"files": files, "head": heads[0], "jd_utc": mid.jd, "bjd": bjd, "flux": flux,
            "err": np.full(100, 0.003), "airmass": airmass(mid, TARGET, SITE)}


@pytest.fixture(scope="module")
def reports(night):
    mag = -2.5 * np.log10(night["flux"])
    ext = aavso_extended_text("HAT-P-27", night["jd_utc"], mag, 1.0857 * night["err"],
                              filter=night["head"].filter, airmass=night["airmass"],
                              notes="ensemble of 10 comparison stars")
    oot = np.abs(night["bjd"] - T0) > 0.85 / 24
    exo = exoplanet_report_text(
        night["bjd"], night["flux"], night["err"], star_name="HAT-P-27",
        planet_name="HAT-P-27 b", exposure_time=night["head"].exptime,
        filter=night["head"].filter, detrend={"AIRMASS": night["airmass"]},
        results={"Tc": T0, "Depth": 0.014}, norm_mask=oot)
    return {"extended": ext, "exoplanet": exo}


def test_the_nights_reports_follow_their_formats(night, reports, tmp_path):
    ext, exo = reports["extended"], reports["exoplanet"]
    assert validate_aavso_extended(ext) == []
    assert validate_exoplanet_report(exo) == []
    head = ext.splitlines()[:6]
    assert head[2].startswith("#SOFTWARE=astrodart ")  # name and version, as asked
    assert head[:2] + head[3:] == ["#TYPE=EXTENDED", f"#OBSCODE={PLACEHOLDER_OBSCODE}",
                                   "#DELIM=,", "#DATE=JD", "#OBSTYPE=CCD"]
    rows = [r.split(",") for r in ext.splitlines() if not r.startswith("#")]
    assert len(rows) == 100 and all(len(r) == 15 for r in rows)
    # the first point: JD UTC at mid-exposure, 'Visible' (clear) is CV, airmass of the site
    assert float(rows[0][1]) == pytest.approx(night["jd_utc"][0], abs=1e-6)
    assert rows[0][4:8] == ["CV", "NO", "DIF", "ENSEMBLE"]
    assert float(rows[0][11]) == pytest.approx(night["airmass"][0], abs=1e-4)
    params = dict(line[1:].split("=", 1) for line in exo.splitlines()[:14])
    assert params["DATE_TYPE"] == "BJD_TDB" and params["EXPOSURE_TIME"] == "20"
    assert params["FILTER"] == "CV" and params["BINNING"] == "1x1"
    assert params["MEASUREMENT_TYPE"] == "Rnflux" and params["DETREND_PARAMETERS"] == "AIRMASS"
    data = np.array([[float(v) for v in r.split(",")] for r in exo.splitlines()
                     if not r.startswith("#")])
    assert data.shape == (100, 4)
    oot = np.abs(data[:, 0] - T0) > 0.85 / 24
    assert np.median(data[oot, 1]) == pytest.approx(1.0, abs=1e-9)  # Rnflux: 1 out of transit
    assert 1 - np.median(data[~oot, 1]) == pytest.approx(0.014, abs=0.003)
    assert data[0, 0] == pytest.approx(night["bjd"][0], abs=1e-8)
    # written atomically; read back and checked from the file
    path = write_report(tmp_path / "aavso_exoplanet.txt", exo)
    assert validate_exoplanet_report(path) == [] and path.read_text() == exo
    with pytest.raises(ValueError, match="accepts .txt, .csv and .tsv"):
        write_report(tmp_path / "report.dat", exo)


def _drop_line(text, start):
    return "\n".join(line for line in text.splitlines() if not line.startswith(start)) + "\n"


def _edit_row(text, k, edit):
    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if not line.startswith("#")]
    lines[rows[k]] = edit(lines[rows[k]])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind, broken, message", [
    ("extended", lambda t: _drop_line(t, "#OBSCODE"), "missing parameter #OBSCODE="),
    ("extended", lambda t: _edit_row(t, 3, lambda r: r.rsplit(",", 1)[0]),
     "line 11: 14 fields; the format has 15"),
    ("extended", lambda t: t.replace("#DATE=JD", "#DATE=MJD"),
     "#DATE=MJD is not one of JD, HJD, EXCEL"),
    ("extended", lambda t: _edit_row(t, 0, lambda r: r.replace(",CV,", ",Visible,")),
     "FILTER='Visible' is not an AAVSO band code"),
    ("extended", lambda t: _edit_row(t, 0, lambda r: r.replace("ENSEMBLE", "na")),
     "MTYPE=DIF needs CNAME"),
    ("extended", lambda t: t.replace("#OBSTYPE=CCD\n", "#OBSTYPE=CCD\n\n"),
     "line 7: blank line"),
    ("exoplanet", lambda t: _drop_line(t, "#EXOPLANET_NAME"),
     "missing parameter #EXOPLANET_NAME="),
    ("exoplanet", lambda t: _edit_row(t, 5, lambda r: r + ",1.0"),
     "5 fields; DATE, DIFF, ERR and 1 detrend value(s) make 4"),
    ("exoplanet", lambda t: t.replace("#DATE_TYPE=BJD_TDB", "#DATE_TYPE=MJD"),
     "#DATE_TYPE=MJD is not one of JD_UTC, HJD_UTC, BJD_UTC, BJD_TT, BJD_TDB"),
    ("exoplanet", lambda t: t.replace("#DATE_TYPE=BJD_TDB", "#DATE_TYPE=bjd_tdb"),
     "(case sensitive)"),
    ("exoplanet", lambda t: t.replace("#EXPOSURE_TIME=20", "#EXPOSURE_TIME=900"),
     "#EXPOSURE_TIME=900 is not seconds between 0 and 600"),
    ("exoplanet", lambda t: _edit_row(t, 2, lambda r: "x" + r), "is not a Julian Date"),
    ("exoplanet", lambda t: t.replace("#MEASUREMENT_TYPE=Rnflux", "#MEASUREMENT_TYPE=Dmag"),
     "Dmag is normalised to 0 out of transit"),
])
def test_broken_reports_are_refused_with_the_rule(reports, kind, broken, message):
    text = broken(reports[kind])
    check = validate_aavso_extended if kind == "extended" else validate_exoplanet_report
    problems = check(text)
    assert any(message in p for p in problems), problems
    with pytest.raises(ReportFormatError) as info:
        check(text, raise_on_error=True)
    assert info.value.problems == problems


def test_writers_refuse_what_the_formats_do_not_allow(night):
    t, f, e = night["bjd"][:5], night["flux"][:5], night["err"][:5]
    args = {"star_name": "HAT-P-27", "planet_name": "HAT-P-27 b", "filter": "V"}
    with pytest.raises(ValueError, match="exposure_time=900"):
        exoplanet_report_text(t, f, e, exposure_time=900, **args)
    with pytest.raises(ValueError, match="binning='5x5'"):
        exoplanet_report_text(t, f, e, exposure_time=20, binning="5x5", **args)
    with pytest.raises(ValueError, match="detrend has 5 series"):
        exoplanet_report_text(t, f, e, exposure_time=20,
                              detrend={str(k): f for k in range(5)}, **args)
    with pytest.raises(ValueError, match="date_type='MJD'"):
        aavso_extended_text("X", t, f, e, filter="V", date_type="MJD")
    with pytest.raises(ValueError, match="contains the delimiter"):
        aavso_extended_text("X", t, f, e, filter="V", notes="a, b")
    with pytest.raises(ValueError, match="no AAVSO band code"):
        aavso_filter("Hydrogen beta 3nm")
    assert [aavso_filter(n) for n in ("Visible", "Clear", "Rc", "r'", "", "tg")] == \
        ["CV", "CV", "R", "SR", "CV", "TG"]


def _night_result(night):
    """A reduced night as the light-curve step sees it (photometry results, no frames)."""
    n = len(night["bjd"])
    tgt = {"fwhm": np.full(n, 3.0), "sky": np.full(n, 500.0), "x": np.full(n, 481.0),
           "y": np.full(n, 522.0), "flags": np.zeros(n, int), "exptime": np.full(n, 20.0),
           "mid_exposure_utc": night["jd_utc"]}
    diff = {"timestamps": night["bjd"], "rel_flux": night["flux"], "rel_flux_err": night["err"],
            "airmass": night["airmass"], "valid": np.ones(n, bool),
            "comparison_used": np.array([True, True, False])}
    phot = {"target": {"filter": {"Visible": tgt}}, "differential": {"filter": {"Visible": diff}},
            "files": {"Visible": np.array([Path(f).name for f in night["files"]])},
            "comparison_stars": {f"comparison_{k}": {"coords": {}} for k in (1, 2, 3)},
            "meta": {"target_name": "HAT-P-27"}}
    return SimpleNamespace(lightcurve=phot, series_filter="Visible", target="HAT-P-27",
                           calibrated={"Visible": [str(night["files"][0])]}, products={})


def test_reduce_writes_both_reports_to_results(night, tmp_path):
    """The pipeline's writer (``astrodart reduce``'s light-curve step) on the night's table."""
    from astrodart.pipeline.night_exports import write_aavso_reports
    from astrodart.pipeline.night_products import lightcurve_table

    result = _night_result(night)
    table = lightcurve_table(result.lightcurve, "Visible")
    report = {"detected": True, "t0_bjd_tdb": T0, "depth": 0.014, "duration_h": 1.7}
    out = write_aavso_reports(result, table, tmp_path / "results", obscode="XYZ",
                              report=report)
    assert sorted(p.name for p in out.values()) == ["aavso_exoplanet.txt", "aavso_extended.txt"]
    assert validate_aavso_extended(out["aavso_extended"]) == []
    assert validate_exoplanet_report(out["aavso_exoplanet"]) == []
    exo = out["aavso_exoplanet"].read_text()
    assert "#OBSCODE=XYZ" in exo and "#RESULTS=Tc=2458231.67825" in exo
    assert "ensemble of 2 comparison stars" in exo


def test_reduce_steps_write_the_reports_with_the_observer_code(night, tmp_path):
    """``astrodart reduce --obscode``: the light-curve step writes both reports beside
    lightcurve.ecsv; the transit step writes the exoplanet report again with its fit."""
    from astrodart.pipeline.reduce_summary import lightcurve_step, transit_step

    state = SimpleNamespace(result=_night_result(night), tables={}, options=SimpleNamespace())
    state.products = state.result.products
    results = tmp_path / "results"
    lightcurve_step(results, obscode="ABC12").run(state)
    assert {"lightcurve", "aavso_extended", "aavso_exoplanet"} <= set(state.products)
    first = (results / "aavso_exoplanet.txt").read_text()
    assert "#RESULTS=" not in first and "#OBSCODE=ABC12" in first
    transit_step(results, None, obscode="ABC12").run(state)
    exo = (results / "aavso_exoplanet.txt").read_text()
    assert validate_exoplanet_report(exo) == [] and validate_aavso_extended(
        results / "aavso_extended.txt") == []
    tc = float(exo.split("#RESULTS=Tc=")[1].split(",")[0])
    assert abs(tc - T0) * 1440 < 20  # the fit found the injected transit
    assert "#OBSCODE=ABC12" in (results / "aavso_extended.txt").read_text()


def test_obscode_option_is_checked_before_any_work(tmp_path):
    from astrodart.cli import main
    from astrodart.pipeline.reduce_options import ReduceOptions, UsageError

    night = tmp_path / "night"
    night.mkdir()
    base = {"night": str(night), "out": str(tmp_path / "out")}
    assert ReduceOptions(**base).check()["obscode"] == PLACEHOLDER_OBSCODE
    assert ReduceOptions(**base, obscode="abc12").check()["obscode"] == "ABC12"
    with pytest.raises(UsageError, match="--obscode 'MY CODE': the AAVSO observer code, 1 to 5"):
        ReduceOptions(**base, obscode="MY CODE").check()
    assert 'obscode = "XYZ"' in ReduceOptions(**base, obscode="XYZ").to_toml()
    assert main(["reduce", str(night), "--out", str(tmp_path / "out"),
                 "--obscode", "TOOLONG"]) == 2
    assert not (tmp_path / "out").exists()
