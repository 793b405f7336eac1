"""Stage 1 of the real HAT-P-27b night on a dask.distributed cluster equals the local run.

Every per-frame step takes ``executor=``; a ``dask.distributed.Client`` fits that slot.
The test starts a LocalCluster of 2 worker processes (1 thread each), runs a subset of
the night (5 bias, 5 darks, 5 flats, 10 science frames) through the same chain twice,
once with the engine's own local map and once on the cluster, and compares every file:
same names, identical pixels (data, uncertainty, mask) and identical headers apart from
the absolute master paths recorded in them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

distributed = pytest.importorskip(
    "dask.distributed", reason="the dask extra is not installed (pip install -e '.[dask]')")
Client, LocalCluster, get_task_stream = (distributed.Client, distributed.LocalCluster,
                                         distributed.get_task_stream)

from astrodart.first_stage import (
    bad_pixel_map,
    calibration_chain,
    correct_flatfield,
    cosmic_ray_laplacian_correction,
    deviation_calculation,
    gain_correction,
    master_frame,
    subtract_bias,
    subtract_dark,
    trimmer,
)

REGION = "[1:1024,1:1024]"
RON = 13.0  # e-, the photon-transfer read noise of this camera (test_first_stage measures it)


def _stage1(work: Path, night: Path, executor) -> list[Path]:
    """The guide's chain: the fused chain for the calibration frames, the step classes
    for the science frames (so both kinds of step run on the executor)."""
    bias = sorted(night.glob("*bias_frame*"))[:5]
    dark = sorted(night.glob("*dark_frame*"))[:5]
    flat = sorted(night.glob("*dome_flat*"))[:5]
    sci = sorted(night.glob("*science_exposures*"))[:10]
    kw = dict(progress=False, executor=executor)
    chain = dict(kw, region=REGION, ron=RON)
    b = calibration_chain(work / "bias", bias, "yes", **chain).run()
    mb = master_frame(work / "bias", b, "masterbias.fits", "median", "sigclip", 3, 3).run()
    d = calibration_chain(work / "dark", dark, "yes", masterbias_file=mb, **chain).run()
    md = master_frame(work / "dark", d, "masterdark_20s.fits", "median", "sigclip", 3, 3).run()
    f = calibration_chain(
        work / "flat", flat, "yes", masterbias_file=mb, masterdark_file=md, **chain
    ).run()
    mf = master_frame(
        work / "flat", f, "masterflat.fits", "median", "sigclip", 3, 3, frame_type="flat"
    ).run()
    bpm = bad_pixel_map(work / "dark", md, mf).run()
    obj = work / "object"
    s = trimmer(obj, sci, REGION, "yes", **kw).run()
    s = deviation_calculation(obj, s, "yes", ron=RON, **kw).run()
    s = gain_correction(obj, s, "yes", **kw).run()
    s = cosmic_ray_laplacian_correction(obj, s, "yes", mask_file=bpm, **kw).run()
    s = subtract_bias(obj, s, mb, "yes", **kw).run()
    s = subtract_dark(obj, s, md, "yes", **kw).run()
    s = correct_flatfield(obj, s, mf, "yes", **kw).run()
    assert len(s) == len(sci)
    return sorted(p.relative_to(work) for p in work.rglob("*.fits"))


def _comparable(header: fits.Header, root: Path) -> list[tuple]:
    """Header cards with the run's own folder taken out of path values."""
    out = []
    for card in header.cards:
        value = card.value
        if isinstance(value, str):
            value = value.replace(str(root.resolve()), "<root>").replace(str(root), "<root>")
        out.append((card.keyword, value))
    return out


def test_stage1_on_local_cluster_equals_local_run(tmp_path, hatp27_dir):
    local = _stage1(tmp_path / "local", hatp27_dir, executor=None)
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            on_cluster = _stage1(tmp_path / "cluster", hatp27_dir, executor=client)
        # the client's concurrent.futures face works the same way
        sci = sorted(hatp27_dir.glob("*science_exposures*"))[:2]
        via_executor = trimmer(
            tmp_path / "executor", sci, REGION, "yes", progress=False,
            executor=client.get_executor(),
        ).run()
    assert [Path(p).name for p in via_executor] == [
        p.name for p in local if p.name.startswith("trimmed_")
    ][:2]
    for p in via_executor:
        np.testing.assert_array_equal(
            fits.getdata(p), fits.getdata(tmp_path / "local" / "object" / Path(p).name)
        )
    # every frame of every per-frame step ran as a task on the cluster's two workers
    tasks = [t for t in stream.data if "_run_one" in str(t["key"])]
    assert len(tasks) == 15 + 7 * 10
    assert len({t["worker"] for t in tasks}) == 2

    # 25 raw frames -> 25 calibrated frames + 7 x 10 science intermediates
    # + 3 masters + the bad-pixel map
    assert local == on_cluster
    assert len(local) == 15 + 70 + 3 + 1
    for rel in local:
        with fits.open(tmp_path / "local" / rel) as a, fits.open(tmp_path / "cluster" / rel) as b:
            assert [h.name for h in a] == [h.name for h in b], rel
            for ha, hb in zip(a, b):
                if ha.data is None:
                    assert hb.data is None
                    continue
                np.testing.assert_array_equal(ha.data, hb.data, err_msg=str(rel))
            assert _comparable(a[0].header, tmp_path / "local") == _comparable(
                b[0].header, tmp_path / "cluster"
            ), rel
    # the science outputs are really calibrated (not copies): finite, in electrons, sky
    # flat-fielded to a few hundred e-
    final = [p for p in local if p.name.startswith("flatfield_corrected_")]
    assert len(final) == 10
    sky = [float(np.median(fits.getdata(tmp_path / "local" / p))) for p in final]
    assert all(50 < s < 5000 for s in sky), sky
