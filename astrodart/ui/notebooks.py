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

__all__ = ["NOTEBOOKS", "notebook_dir", "run_notebook", "NotebookRun", "write_summary",
           "science_results_table"]

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
        PNG files of every image the notebook displayed, in cell order, named
        ``<name>_<NN>_<slug>.png`` (e.g. ``astrophotography_03_master_flat.png``).
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
        run.figures = _save_figures(nb, out / f"{path.stem}_figures", path.stem)
    return run


def _figure_slug(text: str, limit: int = 40) -> str:
    """A file-name slug from a heading: ``'### 2.7 The master flat'`` -> ``'master_flat'``.

    Parameters
    ----------
    text : str
        A markdown heading (leading ``#``, section numbers and a leading article are
        dropped) or an explicit figure name.
    limit : int
        Longest slug kept (cut at a word boundary).

    Returns
    -------
    str
        Lower-case words joined by ``_``; ``'figure'`` when nothing is left.
    """
    import re

    words = re.sub(r"[^a-z0-9]+", " ", text.lower().lstrip("#")).split()
    while words and re.fullmatch(r"[0-9]+", words[0]):
        words.pop(0)  # "2.7" became "2 7"
    if words and words[0] in ("the", "a", "an"):
        words.pop(0)
    slug = ""
    for w in words:
        if slug and len(slug) + 1 + len(w) > limit:
            break
        slug = f"{slug}_{w}" if slug else w[:limit]
    return slug or "figure"


def _cell_figure_name(cell) -> str | None:
    """An explicit figure name a cell sets: ``metadata.figure`` or a ``figure:<name>`` tag."""
    meta = cell.get("metadata", {})
    if meta.get("figure"):
        return str(meta["figure"])
    for tag in meta.get("tags", []):
        if str(tag).startswith("figure:"):
            return str(tag)[len("figure:"):]
    return None


def _save_figures(nb, folder: Path, name: str | None = None) -> list:
    """Write every PNG a notebook displayed to ``folder``, named by what it shows:
    ``<name>_<NN>_<slug>.png``, NN the running figure number and the slug from the cell's
    explicit figure name or else the nearest markdown heading above it."""
    name = name or folder.name.removesuffix("_figures")
    figures, heading = [], "figure"
    for cell in nb.cells:
        if cell.get("cell_type") == "markdown":
            lines = [ln for ln in cell.get("source", "").splitlines() if ln.startswith("#")]
            heading = lines[-1] if lines else heading
            continue
        slug = _figure_slug(_cell_figure_name(cell) or heading)
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                folder.mkdir(parents=True, exist_ok=True)
                p = folder / f"{name}_{len(figures) + 1:02d}_{slug}.png"
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


# Published values the results table compares with; the same ones the notebooks use.
#: HAT-P-32 pixel scale of a frame solved with astrometry.net (shared/data/README.md).
PUBLISHED_PIXEL_SCALE = 5.163  # arcsec/px
#: HAT-P-27b transit depth (Rp/R* = 0.1186)^2 and duration, Béky et al. (2011), as in the
#: photometry notebook (DEPTH_LIT, T14_LIT_H); its mid-time prediction comes from the
#: ephemeris Tc = 2455186.01879 BJD_TDB, P = 3.0395803 d of the same paper, which the
#: notebook writes to its summary as ``predicted_midtime_bjd``.
PUBLISHED_DEPTH, PUBLISHED_T14_HOURS = 0.0141, 1.7


def _fmt(summary: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    value = summary.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return format(value * scale if scale != 1.0 else value, fmt)


def science_results_table(root) -> str:
    """The science results of the guided notebooks, read from their JSON summaries.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder whose ``reduced_data/notebooks/*_summary.json`` are read.

    Returns
    -------
    str
        A plain-text table: masters (bias level, read noise, gain), the stack (frames, FWHM
        of single frames vs stack), the HAT-P-32 plate solutions (solved of all, pixel scale
        vs published), the light-curve scatter and the transit mid-time and depth against
        the published ephemeris. A notebook that did not run shows ``—``.
    """
    import json

    folder = Path(root) / "reduced_data" / "notebooks"

    def load(name):
        p = folder / f"{name}_summary.json"
        return json.loads(p.read_text()) if p.exists() else {}

    det, ast, pho = load("detector_lab"), load("astrophotography"), load("photometry")
    rows = [("masters", "bias level", _fmt(det, "bias_adu", ".1f") + " ADU", ""),
            ("", "read noise", _fmt(det, "read_noise_e", ".1f") + " e-", ""),
            ("", "gain", f"{_fmt(det, 'gain_e_per_adu', '.3f')} ± {_fmt(det, 'gain_err', '.3f')}"
             " e-/ADU", f"{_fmt(det, 'header_gain', 'g')} (header EGAIN)"),
            ("stack", "frames stacked", f"{_fmt(ast, 'n_stacked', 'd')} of "
             f"{_fmt(ast, 'n_science', 'd')}", ""),
            ("", "FWHM single / stack", f"{_fmt(ast, 'median_single_fwhm', '.2f')} / "
             f"{_fmt(ast, 'stack_fwhm', '.2f')} px", f"ratio {_fmt(ast, 'fwhm_ratio', '.3f')}"),
            ("plate solutions", "HAT-P-32 solved", f"{_fmt(ast, 'n_solved', 'd')}/"
             f"{_fmt(ast, 'n_hatp32', 'd')}", ""),
            ("", "pixel scale", _fmt(ast, "pixel_scale_arcsec", ".3f") + " \"/px",
             f"{PUBLISHED_PIXEL_SCALE} \"/px (astrometry.net)"),
            ("light curve", "scatter per point", _fmt(pho, "oot_rms_ppt", ".2f") + " ppt",
             f"{_fmt(pho, 'n_frames', 'd')} frames"),
            ("transit", "mid-time BJD_TDB", f"{_fmt(pho, 'midtime_bjd', '.4f')} ± "
             f"{_fmt(pho, 'midtime_err_min', '.1f')} min",
             f"{_fmt(pho, 'predicted_midtime_bjd', '.4f')} (Béky+2011; "
             f"{_fmt(pho, 'midtime_offset_min', '+.1f')} min)"),
            ("", "depth",
             f"{_fmt(pho, 'depth', '.2f', 100)} ± {_fmt(pho, 'depth_err', '.2f', 100)} %",
             f"{100 * PUBLISHED_DEPTH:.2f} % (Béky+2011)"),
            ("", "duration T14", _fmt(pho, "t14_hours", ".2f") + " h",
             f"{PUBLISHED_T14_HOURS} h (Béky+2011)")]
    head = ("", "quantity", "measured", "published / reference")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    text = [f"science results (from {folder}/*_summary.json)", line,
            "  ".join(h.ljust(w) for h, w in zip(head, widths)), line]
    text += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(text + [line])
