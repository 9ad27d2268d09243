"""The house's plan, checked: every import between the pipeline's modules (those inside functions too) goes one way,
from a room (a sub-package) to the same room or one below it (docs/architecture.md draws them), and no import
makes a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"

ROOMS = ["core", "data", "models", "evaluation", "runs", "inference", "explain", "training", "cli"]
"""The sub-packages, lowest first: a module imports from its own room and the rooms before it in this list, never
from a later one (pages and the benchmark stand above them all)."""


def room_of(module: str) -> str:
    """A module's room: its sub-package; the package's own __init__ (class names) is core, __main__ is cli."""
    return {"pipeline": "core", "__main__": "cli"}.get(module, module.split(".")[0])


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "pipeline"
        found[name] = path
    return found


def imports_between_modules(modules: dict[str, Path]) -> dict[str, set[str]]:
    """For each module, the package's modules it imports anywhere in its source (top level or inside a function);
    names are relative to `pipeline` ("cli.commands"), the package itself is "pipeline"."""
    arrows: dict[str, set[str]] = {}
    for name, path in modules.items():
        inside = [] if name == "pipeline" else name.split(".")[: None if path.name == "__init__.py" else -1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = inside[: len(inside) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pipeline":
                module = node.module.removeprefix("pipeline").removeprefix(".")
            elif isinstance(node, ast.Import):
                targets |= {alias.name.removeprefix("pipeline.") for alias in node.names} & set(modules)
                continue
            else:
                continue
            candidates = {module, *(".".join(filter(None, [module, alias.name])) for alias in node.names)}
            targets |= {candidate or "pipeline" for candidate in candidates} & set(modules)
        arrows[name] = targets - {name}
    return arrows


def find_circle(arrows: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules along it, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], _ = "open", trail.append(module)
        for target in sorted(arrows.get(module, ())):
            if state.get(target) == "open":
                return trail[trail.index(target) :] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module], _ = "done", trail.pop()
        return None

    for module in sorted(arrows):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_every_module_lives_in_a_room_that_says_its_job() -> None:
    modules = _modules()
    assert {room_of(module) for module in modules} == set(ROOMS), "a module outside the declared rooms"
    for room in ROOMS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert docstring and len(docstring.split("\n\n")[0].splitlines()) <= 2, f"{room}: its job in two lines"


def test_imports_go_one_way_and_make_no_circle() -> None:
    arrows = imports_between_modules(_modules())
    assert find_circle(arrows) is None, f"imports in a circle: {' -> '.join(find_circle(arrows) or [])}"
    floor = {room: index for index, room in enumerate(ROOMS)}
    upward = sorted(
        f"{module} ({room_of(module)}) imports {target} ({room_of(target)})"
        for module, targets in arrows.items()
        for target in targets
        if floor[room_of(target)] > floor[room_of(module)]
    )
    assert not upward, "imports against the rooms' order:\n" + "\n".join(upward)


def test_the_checks_see_imports_inside_functions_and_find_a_circle(tmp_path: Path) -> None:
    """The walker itself: a relative import inside a function is an arrow, and two modules importing each other
    (one of them only inside a function, as cluster and train once did) are a circle."""
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("from .b import run\n")
    (tmp_path / "pipeline" / "b.py").write_text("def run():\n    from .a import thing\n    return thing\n")
    modules = {
        "pipeline": tmp_path / "pipeline" / "__init__.py",
        "a": tmp_path / "pipeline" / "a.py",
        "b": tmp_path / "pipeline" / "b.py",
    }
    arrows = imports_between_modules(modules)
    assert arrows["a"] == {"b"} and arrows["b"] == {"a"}
    assert find_circle(arrows) in (["a", "b", "a"], ["b", "a", "b"])
    assert find_circle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", ["train", "cluster", "engines"])
def test_the_runs_engines_sit_above_one_run(name: str) -> None:
    """`engines` (grids, cross-validation, Ray) imports `train` and `cluster`; neither imports it back."""
    arrows = imports_between_modules(_modules())
    assert "training.engines" not in arrows[f"training.{name}"]
    if name == "engines":
        assert {"training.train", "training.cluster"} <= arrows["training.engines"]


def test_importing_every_module_leaves_the_process_environment_as_it_was() -> None:
    """Only the entry points (the command line, the dashboard, the benchmark) set environment variables. The
    libraries the modules import are loaded first: OpenCV edits LD_LIBRARY_PATH itself when it loads."""
    import json
    import os
    import subprocess
    import sys

    code = """
import importlib, json, os, pkgutil, sys
import cv2, numpy, pandas, PIL.Image
before = dict(os.environ)
import pipeline
names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.") if m.name != "pipeline.__main__"]
for name in names:
    importlib.import_module(name)
changed = sorted(set(os.environ) ^ set(before) | {k for k in before if os.environ.get(k) != before[k]})
print(json.dumps({"imported": len(names), "changed": changed, "tensorflow": "tensorflow" in sys.modules}))
"""
    entry_points_set = ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL", "RAY_AUTH_MODE")  # left out: a write would show
    environment = {name: value for name, value in os.environ.items() if name not in entry_points_set}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == len(_modules()) - 2, "every module but the package and __main__ was imported"
    assert result["changed"] == [], f"importing the package changed the environment: {result['changed']}"
    assert not result["tensorflow"], "and no module imports TensorFlow when it is imported"


def patched_libraries(source: str) -> list[str]:
    """Assignments in `source` to an attribute of a library it imports (`keras.backend.clear_session = ...`,
    `file_utils.get_file = ...`): process-wide changes of another package's behaviour."""
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported |= {alias.asname or alias.name for alias in node.names}
    imported -= {"pipeline", "pages"}
    found = []
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        )
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(target, ast.Attribute) and isinstance(root, ast.Name) and root.id in imported:
                found.append(ast.unparse(target))
    return found


def test_no_library_module_or_page_patches_another_package() -> None:
    """Process-wide changes belong to the entry points (streamlit_app.py switches off Streamlit's Keras reset, and
    says why); the pipeline and the pages change no other package's functions."""
    assert patched_libraries(
        "import keras\nfrom keras.src.utils import file_utils\nx = 1\nself_like = object()\n"
        "keras.backend.clear_session = None\nfile_utils.get_file = len\n"
    ) == ["keras.backend.clear_session", "file_utils.get_file"], "the check sees both kinds of patch"
    root = PACKAGE.parent
    found = {
        str(path.relative_to(root)): patched
        for path in sorted([*PACKAGE.rglob("*.py"), *(root / "pages").rglob("*.py")])
        if (patched := patched_libraries(path.read_text()))
    }
    assert found == {}
    assert patched_libraries((root / "streamlit_app.py").read_text()) == ["keras.backend.clear_session"]


STATE_NAMES = {"STATES", "ACTIVE_STATES", "RESUMABLE_STATES"}


def test_pages_and_the_command_line_never_name_a_run_folders_files() -> None:
    """The run folder's layout is RunFolder's: the pages and the CLI ask it for paths and tables (its methods) and
    never take a file name from the contract, nor join one to a folder themselves."""
    root = PACKAGE.parent
    sources = [*(root / "pages").rglob("*.py"), *(PACKAGE / "cli").rglob("*.py"), root / "streamlit_app.py"]
    found = []
    for path in sources:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("runs.contract"):
                found += [f"{path.name}: {alias.name}" for alias in node.names if alias.name not in STATE_NAMES]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "file":
                found.append(f"{path.name}: .file({ast.unparse(node.args[0]) if node.args else ''})")
            joined = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
            if joined and isinstance(node.right, ast.Constant) and node.right.value in RUN_FILE_NAMES:
                found.append(f"{path.name}: / {node.right.value!r}")
    assert found == []


def _run_file_names() -> set[str]:
    from pipeline.runs import contract

    return {
        value
        for name, value in vars(contract).items()
        if name.isupper() and isinstance(value, str) and "." in value and name not in STATE_NAMES
    }


RUN_FILE_NAMES = _run_file_names()


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def _code_files() -> list[Path]:
    root = PACKAGE.parent
    return sorted(
        [*PACKAGE.rglob("*.py"), *(root / "pages").rglob("*.py"), *(root / "bench").rglob("*.py")]
        + [*(root / "scripts").glob("*.py"), root / "streamlit_app.py"]
    )


def test_modules_and_functions_stay_short() -> None:
    """Every module of the product (pipeline, pages, bench, scripts, the app) is at most 300 lines and every
    function at most 60 (docs/contributing.md): a longer one is split by job."""
    root = PACKAGE.parent
    long_modules, long_functions = [], []
    for path in _code_files():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(root)}: {len(source.splitlines())}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(root)}:{node.name}: {length}")
    assert long_modules == [] and long_functions == []
