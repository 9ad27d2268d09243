"""A hosted demo: whatever a visitor does, nothing is written to disk and no free path is offered."""

import hashlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import fake_run, record_spawns

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
    for page in ("pages/dataset.py", "pages/results.py"):
        app.switch_page(page).run()
        assert not app.exception, [e.value for e in app.exception]
    next(box for box in app.selectbox if box.label == "Run").set_value(folder.run_id).run()
    next(button for button in app.button if button.label == "Build the HTML report").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert any(button.label == "Report (HTML)" for button in app.get("download_button"))
    assert not [box for box in app.selectbox if box.label == "Export as"], "no new export in the demo"
    assert not [button for button in app.get("download_button") if button.label == "Model (.keras)"], (
        "no model file for visitors unless the host allows it"
    )
    assert str(tmp_path) not in app.session_state[f"report-{folder.run_id}"], "no server path in the report"
    assert _tree(tmp_path) == before and not (tmp_path / "synthetic").exists()


def test_a_demo_model_that_failed_to_prepare_can_be_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.training import launch

    monkeypatch.setenv("DEMO_MODE", "1")
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CNMC_DATA_DIR", raising=False)
    runs_dir = tmp_path / "artifacts" / "runs"
    failed = fake_run(runs_dir, "demo-model", state="failed", config={"group": launch.DEMO_GROUP})
    failed.update_status(error=f"OSError: {tmp_path}/cache/features.npy: disk full")
    spawned = record_spawns(monkeypatch)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    shown = [warning.value for warning in app.warning if "could not be prepared" in warning.value]
    assert shown and "disk full" in shown[0] and str(tmp_path) not in shown[0], "the reason, without server paths"
    next(button for button in app.button if button.label == "Try again").click().run()
    assert len(spawned) == 1, "one background process for the new demo model"
    configs = [folder.config() for folder in spawned[0]]
    assert [config["cv_fold"] for config in configs] == list(range(launch.DEMO_FOLDS)), "the served fold first"
    assert len({config["group"] for config in configs}) == 1 and launch.is_demo_group(configs[0]["group"])
    assert all(config["split"] == "patient" and config["cv_folds"] == launch.DEMO_FOLDS for config in configs)
    assert launch.failed_demo_model(runs_dir) is None


def test_a_demo_that_serves_a_model_trained_elsewhere_trains_none_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODEL_PATH in a hosted demo: no demo model is prepared beside it, and Home and Predict (whose model picker
    names models from their cards) show the configured model, which has no status or metrics of its own."""
    import zipfile

    model = tmp_path / "elsewhere"
    model.mkdir()
    with zipfile.ZipFile(model / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    monkeypatch.setenv("DEMO_MODE", "1")
    monkeypatch.setenv("MODEL_PATH", str(model))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CNMC_DATA_DIR", raising=False)
    spawned = record_spawns(monkeypatch)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    app.switch_page("pages/predict.py").run()
    assert not app.exception, [e.value for e in app.exception]
    picker = next(box for box in app.selectbox if box.label == "Model")
    assert picker.value == "configured-model" and len(picker.options) == 1
    assert spawned == [] and not (tmp_path / "artifacts" / "runs").exists(), "no demo model trained"
