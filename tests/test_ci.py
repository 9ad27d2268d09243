"""The CI helpers: the flakiness finder reads pytest's JUnit reports and names every test whose outcome changed."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _flaky():
    loader = importlib.machinery.SourceFileLoader("flaky", str(REPO / ".ci" / "flaky"))
    spec = importlib.util.spec_from_loader("flaky", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _report(path: Path, cases: dict[str, str]) -> Path:
    body = {"passed": "", "failure": "<failure message='x'/>", "skipped": "<skipped/>", "error": "<error/>"}
    path.write_text(
        "<testsuites><testsuite>"
        + "".join(
            f"<testcase classname='tests.test_x' name='{name}'>{body[outcome]}</testcase>"
            for name, outcome in cases.items()
        )
        + "</testsuite></testsuites>"
    )
    return path


def test_a_test_whose_outcome_changed_between_runs_is_named(tmp_path: Path) -> None:
    flaky = _flaky()
    first = flaky.outcomes(_report(tmp_path / "1.xml", {"a": "passed", "b": "passed", "c": "skipped"}))
    second = flaky.outcomes(_report(tmp_path / "2.xml", {"a": "passed", "b": "failure", "c": "skipped"}))
    assert first["tests.test_x::b"] == "passed" and second["tests.test_x::b"] == "failure"
    assert flaky.changed([first, second]) == {"tests.test_x::b": ["passed", "failure"]}
    third = flaky.outcomes(_report(tmp_path / "3.xml", {"a": "passed", "c": "skipped"}))
    assert flaky.changed([first, third]) == {"tests.test_x::b": ["passed", "missing"]}
    assert flaky.changed([first, first]) == {}
