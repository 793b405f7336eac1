"""Import cost (issue 20): ``import astrodart`` and ``import astrodart.utils`` stay light.

Not timing tests: each import runs in a fresh interpreter and the test reads what it
loaded (``sys.modules``). ``benchmarks/import_time.py`` measures the times.

- ``import astrodart`` and ``import astrodart.utils`` load no astrodart module beyond
  themselves and none of astropy, numpy, scipy or the plotting, widget and science
  libraries (``astrodart.utils`` resolves its names on first use, PEP 562);
- every name ``astrodart.utils`` gave before it became lazy still imports, and is the
  object of its home module;
- taking the guide's names (``from astrodart.utils import *``) loads astropy's FITS
  reader and the step engine but not ``astropy.nddata`` (with scipy), ``astropy.coordinates``
  or ``astropy.table``, which load on the first frame read, pointing or table.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

#: Modules the package must not load on ``import astrodart`` / ``import astrodart.utils``
#: (measured with ``python -X importtime``: astropy 0.25-0.3 s, astropy.nddata + scipy.sparse
#: 0.2-0.3 s, astropy.coordinates with astropy.table 0.3-0.45 s on the 2-core machine).
HEAVY = ("numpy", "astropy", "scipy", "scipy.ndimage", "scipy.sparse", "bottleneck",
         "matplotlib", "ipywidgets", "photutils", "astroalign", "astroscrappy", "sep",
         "ccdproc", "dask", "reproject", "astroquery", "IPython")

#: Loaded by the guide's names themselves only on first use of a frame, a pointing or a
#: table; never by ``from astrodart.utils import *``.
DEFERRED = ("astropy.nddata", "astropy.coordinates", "astropy.table", "scipy",
            "matplotlib", "ipywidgets", "photutils", "astroalign", "astroscrappy", "sep",
            "ccdproc", "dask")

#: Every public name ``astrodart.utils`` had before it became lazy (its ``dir()``), with
#: the module that defines or re-exports it.
UTILS_NAMES = {
    "FrameHeader": "astrodart.frames.header",
    "HeaderValueError": "astrodart.frames.header",
    "MissingKeywordError": "astrodart.frames.header",
    "normalise_name": "astrodart.frames.header",
    "FrameError": "astrodart.frames.io",
    "atomic_path": "astrodart.frames.io",
    "find_fits": "astrodart.frames.io",
    "image_hdu_index": "astrodart.frames.io",
    "header_tools": "astrodart.pipeline.headers",
    "image_combination": "astrodart.pipeline.image_combination",
    "RESERVED_DIRS": "astrodart.pipeline.organise",
    "OrganiseReport": "astrodart.pipeline.organise",
    "data_organiser": "astrodart.pipeline.organise",
    "get_directory": "astrodart.pipeline.organise",
    "group_dirname": "astrodart.pipeline.organise",
    "LOG_NAME": "astrodart.pipeline.runlog",
    "log_event": "astrodart.pipeline.runlog",
    "parse_overwrite": "astrodart.pipeline.step",
}
STAR_NAMES = ["header_tools", "data_organiser", "get_directory", "image_combination",
              "OrganiseReport", "group_dirname", "RESERVED_DIRS"]


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after ``statement`` (beyond plain start-up)."""
    code = ("import sys; before = set(sys.modules)\n" + statement +
            "\nimport json; print(json.dumps(sorted(set(sys.modules) - before)))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _hits(loaded, names):
    return sorted(n for n in names if n in loaded)


@pytest.mark.parametrize("statement", ["import astrodart", "import astrodart.utils"])
def test_light_imports_load_no_heavy_library(statement):
    loaded = loaded_after(statement)
    assert _hits(loaded, HEAVY) == []
    ours = sorted(m for m in loaded if m.startswith("astrodart"))
    assert ours == ["astrodart"] + (["astrodart.utils"] if statement.endswith("utils") else [])


def test_star_import_defers_nddata_coordinates_table_and_science_libraries():
    loaded = loaded_after("from astrodart.utils import *")
    assert "astropy.io.fits" in loaded  # the names themselves are really loaded
    assert "astrodart.pipeline.headers" in loaded and "astrodart.pipeline.organise" in loaded
    assert _hits(loaded, DEFERRED) == []


def test_the_first_frame_read_loads_ccddata(tmp_path):
    # lazy does not mean missing: read_frame still hands back a CCDData with the pixels
    import numpy as np
    from astropy.io import fits

    path = tmp_path / "frame with space.fits"
    fits.PrimaryHDU(np.arange(12, dtype=np.int16).reshape(3, 4)).writeto(path)
    code = (f"from astrodart.utils import *\nimport sys\nassert 'astropy.nddata' not in sys.modules\n"
            f"from astrodart.frames.io import read_frame\nccd = read_frame({str(path)!r})\n"
            f"from astrodart.frames.header import FrameHeader\n"
            f"print(type(ccd).__name__, float(ccd.data.sum()), ccd.unit, 'astropy.nddata' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["CCDData", "66.0", "adu", "True"]


def test_every_former_utils_name_imports_and_is_its_home_object():
    utils = importlib.import_module("astrodart.utils")
    for name, home in UTILS_NAMES.items():
        namespace: dict = {}
        exec(f"from astrodart.utils import {name}", namespace)  # noqa: S102 (the user's spelling)
        assert namespace[name] is getattr(importlib.import_module(home), name), name
        assert name in dir(utils), name


def test_star_import_gives_exactly_the_guide_names():
    namespace: dict = {}
    exec("from astrodart.utils import *", namespace)  # noqa: S102
    assert sorted(k for k in namespace if not k.startswith("__")) == sorted(STAR_NAMES)
    assert namespace["get_directory"].__name__ == "get_directory"
    assert "calibration" in namespace["RESERVED_DIRS"]


def test_unknown_name_is_a_clear_attribute_error():
    import astrodart
    import astrodart.utils

    with pytest.raises(AttributeError, match="astrodart.utils.*'no_such_tool'"):
        astrodart.utils.no_such_tool  # noqa: B018
    with pytest.raises(ImportError, match="no_such_tool"):
        exec("from astrodart.utils import no_such_tool", {})  # noqa: S102
    with pytest.raises(AttributeError, match="'astrodart'.*'nope'"):
        astrodart.nope  # noqa: B018


def test_version_is_the_installed_metadata():
    from importlib.metadata import PackageNotFoundError, version

    import astrodart
    from astrodart import __version__

    try:
        expected = version("astrodart")
    except PackageNotFoundError:
        expected = "0.1.0"
    assert __version__ == astrodart.__version__ == expected
    assert "__version__" in astrodart.__all__
