"""``astrodart reduce --scheduler ADDRESS`` on a dask cluster equals the local run (issue 20).

A small real subset of the HAT-P-27b night (3 bias, 3 darks, 3 dome flats, 8 science
frames, copied to a temporary folder) is reduced with ``--stop stack`` twice: once on the
local process pool, once on a 2-worker ``LocalCluster`` (worker processes, one thread
each) reached by its address, as a user reaches a cluster's scheduler. Both runs must
give the same files, the same pixels (calibrated frames, masters, stack) within 1e-6
relative, the same quality table, and each ``summary.json`` must say where it ran; the
cluster's task stream shows the per-frame steps ran on both workers. A scheduler that is
not there, a cluster without workers and a missing dask.distributed are refused before
anything is written, naming the address.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

distributed = pytest.importorskip(
    "dask.distributed", reason="the dask extra is not installed (pip install -e '.[dask]')")

from datapaths import HATP27, require

from astrodart.cli import main
from astrodart.pipeline.reduce import reduce
from astrodart.pipeline.reduce_options import ReduceOptions

#: Frames of the subset: pattern -> how many (the first ones, sorted).
SUBSET = {"*bias_frame*": 3, "*dark_frame*": 3, "*dome_flat*": 3, "*science_exposures*": 8}
RTOL = 1e-6
#: An ISO time stamp in a header value.
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d)?")
#: Cards that differ between two runs by design: the file's date, and the key of the
#: alignment reference (its resolved path, size and modification time).
_RUN_CARDS = {("DATE", 0), ("ALNRKEY", 0)}


def _cluster(n_workers: int = 2):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)


def _reduce(night, out, *extra) -> int:
    return main(["reduce", str(night), "--out", str(out), "--target", "HAT-P-27",
                 "--stop", "stack", "--no-progress", "--workers", "2", *map(str, extra)])


def _reduce_said(night, out, *extra) -> tuple[int, str]:
    """The exit status and what the run wrote to stderr (shown when a run fails)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = _reduce(night, out, *extra)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def subset_night(tmp_path_factory) -> Path:
    src = require(HATP27)
    dest = tmp_path_factory.mktemp("night")
    for pattern, n in SUBSET.items():
        for p in sorted(src.glob(pattern))[:n]:
            shutil.copy2(p, dest / p.name)
    return dest


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as c:
        yield c


@pytest.fixture(scope="module")
def runs(subset_night, cluster, tmp_path_factory):
    """The subset reduced here and on the cluster, with the cluster's task stream."""
    base = tmp_path_factory.mktemp("runs")
    local = _reduce_said(subset_night, base / "local")
    with distributed.Client(cluster) as client, distributed.get_task_stream(client) as ts:
        on_cluster = _reduce_said(subset_night, base / "cluster", "--scheduler",
                                  cluster.scheduler_address)
    return {"local": base / "local", "cluster": base / "cluster", "tasks": ts.data,
            "status": (local[0], on_cluster[0]), "stderr": (local[1], on_cluster[1]),
            "address": cluster.scheduler_address}


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _summary(root: Path) -> dict:
    return json.loads((root / "results" / "summary.json").read_text())


def _cards(header: fits.Header, root: Path) -> dict:
    """Header values, the run's own folder replaced (the runs wrote to two folders).

    The provenance fingerprint (``ADFPRINT``) hashes its parts (``ADPARAMS``), which
    include the code version: the package version and a hash of its source files, read
    by each worker process when it starts. The parts are compared without it, and the
    fingerprint itself where both runs ran the same source.
    """
    out = {}
    for card in header.cards:
        value = card.value
        if isinstance(value, str):
            value = value.replace(str(root.resolve()), "<root>").replace(str(root), "<root>")
            value = _ISO_TIME.sub("<time>", value)  # HISTORY lines say when
        out[(card.keyword, len([k for k in out if k[0] == card.keyword]))] = value
    params = out.get(("ADPARAMS", 0))
    if params:
        parts = json.loads(params)
        out["code version"] = parts.pop("version", None)
        out[("ADPARAMS", 0)] = parts
    return out


def _assert_same_fits(a_path: Path, b_path: Path, roots: tuple) -> None:
    with fits.open(a_path) as a, fits.open(b_path) as b:
        assert [h.name for h in a] == [h.name for h in b], a_path.name
        for ha, hb in zip(a, b):
            if ha.data is None:
                assert hb.data is None, a_path.name
                continue
            if isinstance(ha, fits.BinTableHDU):
                assert ha.data.tobytes() == hb.data.tobytes(), a_path.name
                continue
            np.testing.assert_allclose(hb.data, ha.data, rtol=RTOL, atol=0, equal_nan=True,
                                       err_msg=f"{a_path.name}[{ha.name}]")
        ca, cb = _cards(a[0].header, roots[0]), _cards(b[0].header, roots[1])
        same_code = ca.pop("code version", None) == cb.pop("code version", None)
        differ = {k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)}
        # the in-memory stack's fingerprint holds the quality table's, which names the
        # run's own files: two runs in two folders differ there, as in ALNRKEY
        in_run = a_path.name.startswith(("Combined_image", "stack_"))
        allowed = _RUN_CARDS | (set() if same_code and not in_run else {("ADFPRINT", 0)})
        assert not differ - allowed, (a_path.name, sorted(differ, key=str))


def test_both_runs_finish(runs):
    assert runs["status"] == (0, 0), runs["stderr"]


def test_same_files(runs):
    local, remote = _files(runs["local"]), _files(runs["cluster"])
    assert local == remote
    fits_files = [p for p in local if p.suffix == ".fits"]
    calibrated = [p for p in fits_files if p.name.startswith("calibrated_")]
    assert len(calibrated) == SUBSET["*science_exposures*"]
    assert {p.name for p in fits_files} >= {"masterbias.fits", "masterdark_20s.fits",
                                            "masterflat_Visible.fits", "stack_Visible.fits"}


def test_same_pixels_and_headers(runs):
    roots = (runs["local"], runs["cluster"])
    compared = 0
    for rel in _files(runs["local"]):
        if rel.suffix == ".fits":
            _assert_same_fits(runs["local"] / rel, runs["cluster"] / rel, roots)
            compared += 1
    assert compared >= SUBSET["*science_exposures*"] + 4


def test_calibrated_frames_are_science(runs):
    """What was compared is real calibrated data: sky in electrons, finite, not a copy."""
    frames = sorted((runs["cluster"]).rglob("calibrated_*science_exposures*.fits"))
    sky = [float(np.nanmedian(fits.getdata(p))) for p in frames]
    assert len(sky) == 8 and all(50 < s < 5000 for s in sky), sky


def test_same_quality_table(runs):
    a = Table.read(runs["local"] / "results" / "quality.ecsv", format="ascii.ecsv")
    b = Table.read(runs["cluster"] / "results" / "quality.ecsv", format="ascii.ecsv")
    assert a.colnames == b.colnames and len(a) == len(b) == SUBSET["*science_exposures*"]
    for name in a.colnames:
        if a[name].dtype.kind in "fc":
            np.testing.assert_allclose(b[name], a[name], rtol=RTOL, equal_nan=True,
                                       err_msg=name)
        else:
            strip = [str(v).replace(str(runs["local"]), "") for v in a[name]]
            assert strip == [str(v).replace(str(runs["cluster"]), "") for v in b[name]], name
    assert np.all(np.isfinite(a["fwhm"])) and 1 < float(np.median(a["fwhm"])) < 10


def test_stacks_equal(runs):
    a = fits.getdata(runs["local"] / "results" / "stack_Visible.fits")
    b = fits.getdata(runs["cluster"] / "results" / "stack_Visible.fits")
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=0, equal_nan=True)
    assert np.isfinite(a).mean() > 0.9
    sa, sb = _summary(runs["local"]), _summary(runs["cluster"])
    assert sa["stack_fwhm_px"] == pytest.approx(sb["stack_fwhm_px"], rel=RTOL)


def test_summary_records_where_it_ran(runs):
    here, there = _summary(runs["local"])["ran_on"], _summary(runs["cluster"])["ran_on"]
    assert here == {"executor": "process pool", "host": socket.gethostname(), "workers": 2}
    assert there == {"executor": "dask.distributed", "scheduler": runs["address"],
                     "workers": 2, "threads": 2}


def test_per_frame_steps_ran_on_both_workers(runs):
    def tasks(name):
        return [t for t in runs["tasks"] if str(t["key"]).startswith(name)]

    # every raw frame went through the fused calibration chain as one task (the lights
    # also through the alignment), and every light through the quality measurement
    assert len(tasks("_run_one")) >= sum(SUBSET.values())
    assert len(tasks("_safe_quality")) == SUBSET["*science_exposures*"]
    assert len({t["worker"] for t in tasks("_run_one")}) == 2


def test_python_api_takes_a_client(subset_night, cluster, tmp_path, capsys):
    """``ReduceOptions(scheduler=client)``: the client is used (not closed), and the
    settings file keeps its address."""
    with distributed.Client(cluster) as client:
        opts = ReduceOptions(night=str(subset_night), out=str(tmp_path / "o"),
                             scheduler=client, dry_run=True, progress=False)
        run = reduce(opts)
        assert run.ran_on["scheduler"] == cluster.scheduler_address
        assert client.status == "running"
        assert f'scheduler = "{cluster.scheduler_address}"' in opts.to_toml()
    assert f"dask cluster at {cluster.scheduler_address}" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_refused_before_any_write(tmp_path, capsys):
    night = tmp_path / "night"
    night.mkdir()
    address = f"tcp://127.0.0.1:{_free_port()}"
    assert _reduce(night, tmp_path / "out", "--scheduler", address) == 2
    err = capsys.readouterr().err
    assert address in err and "nothing answers" in err
    assert not (tmp_path / "out").exists()
    assert _reduce(night, tmp_path / "out", "--scheduler", "no-port-here") == 2
    assert "not a scheduler address" in capsys.readouterr().err


def test_cluster_without_workers_refused(tmp_path, capsys):
    night = tmp_path / "night"
    night.mkdir()
    with _cluster(n_workers=0) as empty:
        assert _reduce(night, tmp_path / "out", "--scheduler", empty.scheduler_address) == 2
    err = capsys.readouterr().err
    assert empty.scheduler_address in err and "no workers" in err
    assert not (tmp_path / "out").exists()


def test_missing_distributed_named(tmp_path, capsys, monkeypatch):
    night = tmp_path / "night"
    night.mkdir()
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert _reduce(night, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:8786") == 2
    err = capsys.readouterr().err
    assert "tcp://127.0.0.1:8786" in err and "dask.distributed is not installed" in err
    assert not (tmp_path / "out").exists()


def test_shared_executor_takes_an_address(cluster):
    """What a night's steps share: an address becomes a checked client (closed on
    release, the cluster left running); None a local process pool; a client stays."""
    from astrodart.pipeline.cluster import shared_executor, where_it_runs
    from astrodart.pipeline.executors import WorkerPool

    client, release = shared_executor(cluster.scheduler_address)
    assert client.submit(sum, [1, 2, 3], pure=False).result() == 6
    assert where_it_runs(client)["workers"] == 2
    release()
    assert client.status == "closed" and len(cluster.workers) == 2
    pool, release = shared_executor(None, workers=2)
    assert isinstance(pool, WorkerPool) and where_it_runs(pool)["workers"] == 2
    release()
    with distributed.Client(cluster) as mine:
        same, release = shared_executor(mine)
        release()
        assert same is mine and mine.status == "running"


def test_workers_that_cannot_see_the_night_refused(cluster, tmp_path):
    """A path the workers cannot read (as on a cluster without the shared disk)."""
    from astrodart.pipeline.cluster import SchedulerError, connect_scheduler

    with pytest.raises(SchedulerError, match="cannot read or write .*absent.*same file system"):
        connect_scheduler(cluster.scheduler_address, read=[tmp_path / "absent"])
    client, owned = connect_scheduler(cluster.scheduler_address, read=[tmp_path],
                                      write=[tmp_path / "new" / "out"])
    assert owned and len(client.nthreads()) == 2
    client.close()
