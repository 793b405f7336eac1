"""Run the guided notebooks headless, as the main job and the test suite do.

A notebook finds its data tree through the ``ASTRODART_ROOT`` environment variable (the
folder holding ``uncal_data/`` and ``reduced_data/``; the repository root when unset), and
its widgets fall back to plain arguments because ``ASTRODART_HEADLESS=1`` is set. The
executed copy of each notebook is written next to the reduction, under
``<root>/reduced_data/notebooks/``, with every figure it showed saved as a PNG beside it,
so a run leaves something a person can open and look at.

Orchestration layer: nbclient executes, we only choose the environment and where the
results go.
"""
from __future__ import annotations

import base64
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NOTEBOOKS", "notebook_dir", "run_notebook", "NotebookRun", "write_summary"]

#: The guided notebooks, in the order the main job runs them. The photometry notebook
#: starts from the night the astrophotography notebook reduced (it resumes), and runs
#: the reduction itself when started alone.
NOTEBOOKS = ("astrophotography", "photometry", "detector_lab")


def notebook_dir() -> Path:
    """The ``notebooks/`` folder of this checkout.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        When astrodart is installed without its repository (the notebooks are not part of
        the wheel).
    """
    d = Path(__file__).resolve().parents[2] / "notebooks"
    if not d.is_dir():
        raise FileNotFoundError(
            f"no notebooks/ folder next to the astrodart package ({d}); the guided notebooks "
            "ship with the repository: git clone it and run from there")
    return d


@dataclass
class NotebookRun:
    """What one headless run of a notebook produced (the fields are also its attributes).

    Parameters
    ----------
    name : str
        Notebook name without ``.ipynb``.
    executed : pathlib.Path
        The executed copy (outputs included).
    figures : list of pathlib.Path
        PNG files of every image the notebook displayed, in cell order.
    seconds : float
        Wall time of the run.
    """

    name: str
    executed: Path
    figures: list = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def _environ(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _write_atomic(path: Path, data: bytes) -> None:
    from astrodart.frames.io import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def run_notebook(name: str, root, out_dir=None, timeout: int = 3600,
                 kernel_name: str = "python3") -> NotebookRun:
    """Execute one guided notebook top to bottom on the data tree under ``root``.

    Parameters
    ----------
    name : str
        One of :data:`NOTEBOOKS`, or the path of any ``.ipynb`` file.
    root : str or pathlib.Path
        Folder holding ``uncal_data/`` and ``reduced_data/``; passed to the notebook as
        ``ASTRODART_ROOT``.
    out_dir : str or pathlib.Path, optional
        Where the executed notebook and its figures go; default
        ``<root>/reduced_data/notebooks``.
    timeout : int
        Seconds allowed per cell.
    kernel_name : str
        Jupyter kernel to run it in.

    Returns
    -------
    NotebookRun

    Raises
    ------
    FileNotFoundError
        Unknown notebook name.
    nbclient.exceptions.CellExecutionError
        A cell raised; the executed copy up to that cell is still written, for reading.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(name)
    if path.suffix != ".ipynb":
        path = notebook_dir() / f"{name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook (known: {', '.join(NOTEBOOKS)})")
    root = Path(root).resolve()
    out = Path(out_dir) if out_dir is not None else root / "reduced_data" / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.time()
    run = NotebookRun(path.stem, out / path.name)
    # the kernel must import the astrodart of this checkout (the one whose notebooks run),
    # not whatever an earlier or stale installation put on its path
    checkout = str(Path(__file__).resolve().parents[2])
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    pythonpath = os.pathsep.join([checkout] + inherited)
    try:
        with _environ(ASTRODART_ROOT=root, ASTRODART_HEADLESS="1", PYTHONPATH=pythonpath,
                      MPLBACKEND="module://matplotlib_inline.backend_inline"):
            client.execute()
    finally:
        run.seconds = time.time() - t0
        _write_atomic(run.executed, nbformat.writes(nb).encode())
        run.figures = _save_figures(nb, out / f"{path.stem}_figures")
    return run


def _save_figures(nb, folder: Path) -> list:
    """Write every PNG a notebook displayed to ``folder`` (named by cell and order)."""
    figures = []
    for i, cell in enumerate(nb.cells):
        for k, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                folder.mkdir(parents=True, exist_ok=True)
                p = folder / f"cell{i:03d}_{k}.png"
                _write_atomic(p, base64.b64decode(png))
                figures.append(p)
    return figures


def write_summary(name: str, root=None, **values) -> Path:
    """Record a notebook's key results as JSON beside its executed copy.

    The last cell of each guided notebook calls this so a run can be checked (by the test
    suite, or by an instructor comparing a class's results) without parsing outputs.

    Parameters
    ----------
    name : str
        Notebook name.
    root : str or pathlib.Path, optional
        Project folder; default ``$ASTRODART_ROOT`` or the repository root.
    **values
        JSON-serialisable numbers, strings and lists (numpy scalars are converted).

    Returns
    -------
    pathlib.Path
        ``<root>/reduced_data/notebooks/<name>_summary.json``.
    """
    import json

    import numpy as np

    if root is None:
        root = os.environ.get("ASTRODART_ROOT", Path(__file__).resolve().parents[2])
    out = Path(root) / "reduced_data" / "notebooks"
    out.mkdir(parents=True, exist_ok=True)

    def plain(v):
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, Path):
            return str(v)
        return v

    path = out / f"{name}_summary.json"
    _write_atomic(path, json.dumps(plain(values), indent=2, sort_keys=True).encode())
    return path
