"""Sphinx configuration of the astrodart documentation.

Built in CI with warnings as errors (tests/test_docs.py runs ``sphinx-build -W``).
The API reference is generated at build time from the package itself (one page per room
and per guide module, from the docstrings), so it never lags behind the code.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import astrodart  # noqa: E402

project = "astrodart"
author = "astrodart developers"
release = astrodart.__version__
extensions = ["myst_nb", "sphinx.ext.autodoc", "numpydoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "api/.gitignore"]
nb_execution_mode = "off"          # the notebooks are executed by the test suite, on real data
myst_heading_anchors = 3
numpydoc_show_class_members = False
numpydoc_validation_checks = set()  # validation runs in tests/test_docstrings.py
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True,
                           "imported-members": False}
autodoc_member_order = "bysource"
suppress_warnings = ["myst.header", "config.cache"]
nitpicky = False
html_theme = "alabaster"
html_title = f"astrodart {release}"


def _api_pages(app=None):
    """Write docs/api/<module>.rst for every public module of the package."""
    api = HERE / "api"
    api.mkdir(exist_ok=True)
    names = []
    for info in pkgutil.walk_packages(astrodart.__path__, "astrodart."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    for old in api.glob("*.rst"):
        old.unlink()
    for name in names:
        title = f"``{name}``"
        (api / f"{name}.rst").write_text(
            f"{title}\n{'=' * len(title)}\n\n.. automodule:: {name}\n")
    lines = ["API reference", "=============", "",
             "One page per module, generated from the docstrings. The AstroDART guide",
             "modules (``astrodart.utils``, ``astrodart.first_stage`` ...) are thin facades",
             "over the rooms listed after them.", "", ".. toctree::", "   :maxdepth: 1", ""]
    lines += [f"   {n}" for n in names]
    (api / "index.rst").write_text("\n".join(lines) + "\n")


_api_pages()


def _notebooks():
    """Copy the guided notebooks into docs/notebooks/ (rendered with their stored outputs)."""
    import shutil

    dest = HERE / "notebooks"
    dest.mkdir(exist_ok=True)
    for nb in (HERE.parent / "notebooks").glob("*.ipynb"):
        shutil.copy2(nb, dest / nb.name)


_notebooks()
