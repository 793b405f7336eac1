"""Every Python code block of the README runs as written, in order, on the real sample
night (in a fresh project folder, as a user would from the repository root)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from datapaths import HATP27, HATP32, REPO, require

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[str]:
    """The README's Python code blocks, in order."""
    return FENCE.findall((REPO / "README.md").read_text())


def test_readme_has_code_blocks():
    blocks = readme_blocks()
    assert len(blocks) >= 4
    assert any("data_organiser(" in b for b in blocks)


@pytest.mark.slow
def test_every_readme_code_block_runs(tmp_path, monkeypatch):
    require(HATP27)
    pytest.importorskip("dask.distributed", reason="the README's dask block needs the dask extra")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uncal_data").mkdir()
    (tmp_path / "reduced_data").mkdir()
    repo_before = sorted(p.name for p in REPO.iterdir())
    namespace: dict = {"__name__": "__readme__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, block in enumerate(readme_blocks()):
            try:
                exec(compile(block, f"README.md block {i + 1}", "exec"), namespace)
            except Exception as exc:  # name the block in the failure
                raise AssertionError(f"README block {i + 1} failed: {exc!r}\n{block}") from exc
    # what the tour promises: 100 calibrated frames, aligned, stacked
    assert len(namespace["files"][0]) == 100
    assert len(namespace["aligned"][0]) >= 95
    stack_path = Path(namespace["stacks"][0])
    assert stack_path.exists() and stack_path.resolve().is_relative_to(tmp_path.resolve())
    assert all(1.0 < f < 8.0 for f in namespace["fwhm"])
    # the raw night was copied, never written in place
    assert sorted(p.name for p in (tmp_path / "uncal_data" / "180423").iterdir()) \
        == sorted(p.name for p in HATP27.iterdir() if p.name != "README.md")
    assert sorted(p.name for p in REPO.iterdir()) == repo_before  # nothing written in the checkout


BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def readme_reduce_commands() -> list[str]:
    """The ``astrodart reduce`` commands of the README's "Reduce your own night", in order."""
    return [line.strip() for block in BASH.findall((REPO / "README.md").read_text())
            for line in block.splitlines() if line.strip().startswith("astrodart reduce ")]


def test_readme_shows_three_reduce_examples():
    commands = readme_reduce_commands()
    assert len(commands) == 3
    assert any("--target-xy" in c for c in commands) and any("--coord" in c for c in commands)


@pytest.mark.slow
def test_readme_reduce_examples_run_as_written(tmp_path, monkeypatch):
    """Run from a folder beside the sample data (``../shared/data``, as in the README),
    in order: the third reuses the first one's calibration."""
    import json
    import shlex

    from astrodart.cli import main

    work = tmp_path / "checkout"
    work.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    for night in (require(HATP27), require(HATP32)):  # wherever the locator found them
        (tmp_path / "shared" / "data" / night.name).symlink_to(night, target_is_directory=True)
    monkeypatch.chdir(work)
    outcomes = []
    for command in readme_reduce_commands():
        args = shlex.split(command)[1:] + ["--no-progress"]
        status = main(args)
        out = work / args[args.index("--out") + 1]
        summary = json.loads((out / "results" / "summary.json").read_text())
        outcomes.append((status, summary))
        assert status == 0, command
    (_, full), (_, lights), (_, pixel) = outcomes
    assert full["frames"]["light"] == 100 and full["frames"]["flat"] == 10
    assert "stack_Visible" in full["products"]
    assert lights["lightcurve"]["points"] == 10 and lights["astrometry"]["solved"] == 10
    assert pixel["lightcurve"]["points"] == 100
    assert {"masters", "calibrate"} <= set(pixel["reused"])
    print(f"\nREADME examples: light curve scatter HAT-P-32 {lights['lightcurve']}, "
          f"HAT-P-27 {pixel['lightcurve']}, transit {pixel.get('transit')}")
