"""The house's plan, checked: every import between the pipeline's modules (those inside functions too) goes one way,
from a room to the same room or one below it (docs/architecture.md draws them), and no import makes a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"

ROOMS: list[tuple[str, set[str]]] = [
    ("core", {"pipeline", "errors", "files", "device", "config"}),
    ("data", {"preprocess", "data", "synthetic", "splits", "cache", "datasets", "shortcuts"}),
    ("models", {"torch_pickle", "lite", "model", "release"}),
    ("evaluation", {"metrics", "intervals", "evaluate", "figures"}),
    ("runs", {"runs", "crossval", "catalog", "release_card"}),
    ("inference", {"inference", "predict", "cells", "export"}),
    ("explain", {"road", "explain", "explain_eval", "report"}),
    ("training", {"fit", "train", "cluster", "engines", "launch", "nested", "release_build"}),
    ("cli", {"cli", "cli.options", "cli.commands", "cli.reference", "__main__"}),
]
"""Lowest first: a module imports from its own room and the rooms above it in this list, never from a later one."""


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
                return trail[trail.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module], _ = "done", trail.pop()
        return None

    for module in sorted(arrows):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_every_module_has_a_room_and_one_room_only() -> None:
    placed = [module for _, members in ROOMS for module in members]
    assert len(placed) == len(set(placed)), "a module in two rooms"
    assert set(_modules()) == set(placed), "a module with no room (add it to ROOMS and docs/architecture.md)"


def test_imports_go_one_way_and_make_no_circle() -> None:
    arrows = imports_between_modules(_modules())
    assert find_circle(arrows) is None, f"imports in a circle: {' -> '.join(find_circle(arrows) or [])}"
    floor = {module: index for index, (_, members) in enumerate(ROOMS) for module in members}
    upward = sorted(f"{module} ({ROOMS[floor[module]][0]}) imports {target} ({ROOMS[floor[target]][0]})"
                    for module, targets in arrows.items() for target in targets if floor[target] > floor[module])
    assert not upward, "imports against the rooms' order:\n" + "\n".join(upward)


def test_the_checks_see_imports_inside_functions_and_find_a_circle(tmp_path: Path) -> None:
    """The walker itself: a relative import inside a function is an arrow, and two modules importing each other
    (one of them only inside a function, as cluster and train once did) are a circle."""
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("from .b import run\n")
    (tmp_path / "pipeline" / "b.py").write_text("def run():\n    from .a import thing\n    return thing\n")
    modules = {"pipeline": tmp_path / "pipeline" / "__init__.py", "a": tmp_path / "pipeline" / "a.py",
               "b": tmp_path / "pipeline" / "b.py"}
    arrows = imports_between_modules(modules)
    assert arrows["a"] == {"b"} and arrows["b"] == {"a"}
    assert find_circle(arrows) in (["a", "b", "a"], ["b", "a", "b"])
    assert find_circle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", ["train", "cluster", "engines"])
def test_the_runs_engines_sit_above_one_run(name: str) -> None:
    """`engines` (grids, cross-validation, Ray) imports `train` and `cluster`; neither imports it back."""
    arrows = imports_between_modules(_modules())
    assert "engines" not in arrows[name]
    if name == "engines":
        assert {"train", "cluster"} <= arrows[name]
