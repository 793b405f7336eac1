"""The shape of the package (docs/ARCHITECTURE.md), held by tests.

- every AstroDART name the guides and notebooks use imports from its guide module, and a
  star-import of a guide module gives at least the names it gave before the package was
  split into rooms;
- layers: an import (also one inside a function) only goes down, and the module import
  graph has no cycle;
- size: no module over 600 lines, no function whose code (docstring excluded) is over 60
  lines, no public name defined in two modules outside the guide facades;
- at least four domain rooms, each named in docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "astrodart"

#: The AstroDART guide modules: thin facades over the rooms.
FACADES = ("utils", "first_stage", "second_stage", "third_stage_astrophotography",
           "third_stage_photometry")

#: Every public name of the guide modules, as users and the three notebooks import them
#: (``from astrodart.<module> import *`` and named imports), before the split into rooms.
GUIDE_NAMES = {
    "utils": ["OrganiseReport", "RESERVED_DIRS", "data_organiser", "get_directory",
              "group_dirname", "header_tools", "image_combination", "LOG_NAME"],
    "first_stage": ["CalibrationError", "CalibrationWarning", "bad_pixel_correction",
                    "bad_pixel_map", "calibration_chain", "correct_flatfield",
                    "cosmic_ray_laplacian_correction", "cosmic_ray_median_correction",
                    "dark_current", "dark_interpolation", "deviation_calculation",
                    "finalize_stage1", "gain_correction", "master_frame",
                    "overscan_correction", "photon_transfer", "subtract_bias", "subtract_dark",
                    "trimmer", "load_master", "KW_NONFINITE"],
    "second_stage": ["AstrometryFailedWarning", "DS9NotInstalledWarning", "FWHMFailedWarning",
                     "astrometry", "check_ds9", "get_fwhm", "has_astrodart_wcs",
                     "write_solution"],
    "third_stage_astrophotography": ["AlignmentError", "AlignmentLimitError",
                                     "AlignmentLimits", "align", "rgb_image", "save_to_tiff",
                                     "stack", "ALIGN_KEYWORDS", "STRETCHES"],
    "third_stage_photometry": ["InteractiveUnavailableError", "PhotFlag", "PhotometryWarning",
                               "StarSelection", "check_image", "coordinates",
                               "get_site_coordinates", "photometry", "plot_light_curve",
                               "results_table", "track_positions", "track_stars",
                               "write_results_hdf5", "FWHM_FACTORS"],
}

#: Star-imports the notebooks rely on: these names must stay in ``__all__``.
STAR_NAMES = {m: [n for n in names if not n.isupper() and n != "load_master"]
              for m, names in GUIDE_NAMES.items()}

#: Layer of each top-level part of the package (a module or a room).
LAYERS = {
    "__init__": 0, "exceptions": 0,
    "frames": 1,
    "calibration": 2, "combine": 2, "sources": 2, "astrometry": 2, "alignment": 2,
    "color": 2, "photometry": 2, "datasets": 2,
    "pipeline": 3,
    "ui": 4,
    **{f: 5 for f in FACADES},
    "cli": 5, "cli_stages": 5,
}
ROOMS = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name: str, path: Path):
    """Every astrodart module ``name`` imports, anywhere in its code (with line numbers)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("astrodart"):
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("astrodart"):
                continue
            for a in node.names:  # ``from astrodart.x import y`` may name a module y
                sub = f"{mod}.{a.name}"
                yield (sub if importlib.util.find_spec(sub.split(".")[0]) and
                       _is_module(sub) else mod), node.lineno


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (PKG.parent / rel.with_suffix(".py")).exists() or (PKG.parent / rel / "__init__.py").exists()


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def test_guide_names_import_as_before():
    missing = []
    for mod, names in GUIDE_NAMES.items():
        m = importlib.import_module(f"astrodart.{mod}")
        missing += [f"astrodart.{mod}.{n}" for n in names if not hasattr(m, n)]
        star = set(getattr(m, "__all__", []))
        missing += [f"astrodart.{mod}.__all__ lacks {n}" for n in STAR_NAMES[mod] if n not in star]
    assert missing == []


def test_every_part_of_the_package_has_a_layer():
    top = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
           if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert top - set(LAYERS) == set()


def test_imports_only_go_down_the_layers():
    upward = []
    for name, path in _modules():
        for target, line in _imports(name, path):
            if _layer(target) > _layer(name):
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert upward == []


def test_module_import_graph_has_no_cycle():
    graph = defaultdict(set)
    for name, path in _modules():
        for target, _ in _imports(name, path):
            if target != name and not name.startswith(target + "."):  # a room's own __init__
                graph[name].add(target)
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_module_over_600_lines():
    long = {str(p.relative_to(REPO)): n for _, p in _modules()
            if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def _code_lines(fn: ast.FunctionDef) -> int:
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        if len(body) == 1:
            return 0
        body = body[1:]
    return fn.end_lineno - body[0].lineno + 1


def test_no_function_over_60_lines_of_code():
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > 60:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                            f"({_code_lines(node)} lines)")
    assert long == []


def test_each_public_name_has_one_home():
    homes = defaultdict(list)
    for name, path in _modules():
        if name.split(".")[-1] in FACADES and name.count(".") == 1:
            continue
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            for n in names:
                if not n.startswith("_") and n not in ("log", "logger"):
                    homes[n].append(name)
    twice = {n: m for n, m in homes.items() if len(m) > 1}
    assert twice == {}


def test_rooms_are_domains_named_in_the_architecture_document():
    assert len(ROOMS) >= 4
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    assert [r for r in ROOMS if f"{r}/" not in text] == []


@pytest.mark.parametrize("room", [r for r in ROOMS if LAYERS[r] < LAYERS["ui"]])
def test_lower_layers_do_not_import_plotting_or_widgets(room):
    for name, path in _modules():
        if name.split(".")[1:2] != [room]:
            continue
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        heavy = [ast.unparse(n) for n in top
                 if any(k in ast.unparse(n) for k in ("matplotlib", "ipywidgets", "ipympl"))]
        assert heavy == [], path
