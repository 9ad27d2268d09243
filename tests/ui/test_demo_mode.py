"""A hosted demo: whatever a visitor does, nothing is written to disk and no free path is offered."""

import hashlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import fake_run

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_visitor_of_the_hosted_demo_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_MODE", "1")
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("DEMO_DATA_DIR", str(tmp_path / "synthetic"))
    monkeypatch.delenv("CNMC_DATA_DIR", raising=False)
    folder = fake_run(tmp_path / "artifacts" / "runs", "published")
    before = _tree(tmp_path)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not [button for button in app.button if button.label == "Synthetic demo data"]
    assert not app.text_input, "no free file-system path in the sidebar"
    for page in ("pages/dataset.py", "pages/train.py", "pages/results.py"):
        app.switch_page(page).run()
        assert not app.exception, [e.value for e in app.exception]
    next(box for box in app.selectbox if box.label == "Run").set_value(folder.run_id).run()
    next(button for button in app.button if button.label == "Build the HTML report").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert any(button.label == "Report (HTML)" for button in app.get("download_button"))
    assert not [box for box in app.selectbox if box.label == "Export as"], "no new export in the demo"
    assert _tree(tmp_path) == before and not (tmp_path / "synthetic").exists()
