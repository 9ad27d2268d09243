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


def test_ci_runs_the_readmes_own_test_command_in_a_fresh_virtual_environment() -> None:
    loader = importlib.machinery.SourceFileLoader("readme_command", str(REPO / ".ci" / "readme_command"))
    spec = importlib.util.spec_from_loader("readme_command", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    readme = (REPO / "README.md").read_text()
    test, dashboard = module.command("test"), module.command("dashboard")
    assert test in readme and "python -m pytest" in test and "requirements-dev.txt" in test
    assert dashboard in readme and "streamlit run streamlit_app.py" in dashboard
    ci = (REPO / ".ci" / "run").read_text()
    assert "-m venv" in ci and "readme_command test" in ci and 'bash -c "$test_command"' in ci
    text = "Run the tests (soon):\n\n```bash\npip install x && python -m pytest -q\n```\n"
    assert module.command("test", text) == "pip install x && python -m pytest -q"
