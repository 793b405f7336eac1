"""numpydoc's own validation of the public API's docstrings.

Every public function, class and public method named in a module's ``__all__`` must have
a docstring (GL08) that documents each parameter (PR01) and no parameter it does not
take (PR02), and a Returns section when it returns something (RT01).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

numpydoc_validate = pytest.importorskip(
    "numpydoc.validate", reason="numpydoc is not installed (pip install -e '.[test]')")

import astrodart  # noqa: E402

CHECKS = {"GL08", "PR01", "PR02", "RT01"}


def public_objects():
    """Import paths of the public API: ``__all__`` of every public module, and the
    public methods of its classes, each object once (at its defining module)."""
    seen = {}
    for info in pkgutil.walk_packages(astrodart.__path__, "astrodart."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not obj.__module__.startswith("astrodart"):
                continue
            home = f"{obj.__module__}.{obj.__qualname__}"
            seen[home] = None
            if inspect.isclass(obj):
                for meth, value in vars(obj).items():
                    if not meth.startswith("_") and inspect.isfunction(value):
                        seen[f"{home}.{meth}"] = None
    return sorted(seen)


def test_public_docstrings_pass_numpydoc_validation():
    problems = []
    for path in public_objects():
        for code, message in numpydoc_validate.validate(path)["errors"]:
            if code in CHECKS:
                problems.append(f"{path}: {code} {message}")
    assert problems == [], f"{len(problems)} docstring problems:\n" + "\n".join(problems)
