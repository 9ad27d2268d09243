"""Sample weights of a training set: classes and patients weigh what the run asks for."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import TrainConfig
from pipeline.inference.predict import Predictor
from pipeline.training.fit import sample_weights
from pipeline.training.train import train

LABELS = np.array([1] * 8 + [0] * 4)
PATIENTS = np.array(["UID_1"] * 6 + ["UID_2"] * 2 + ["UID_H1"] * 3 + ["UID_H2"])


def _weights(**settings: object) -> np.ndarray | None:
    return sample_weights(TrainConfig(data_dir="", **settings), LABELS, PATIENTS)


def _per(groups: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    return {str(group): float(weights[groups == group].sum()) for group in np.unique(groups)}


def test_no_weighting_asked_gives_none() -> None:
    assert _weights() is None


def test_class_weights_match_scikit_learns_balanced_weights() -> None:
    from sklearn.utils.class_weight import compute_sample_weight

    np.testing.assert_allclose(_weights(class_weight=True), compute_sample_weight("balanced", LABELS), rtol=1e-6)


@pytest.mark.parametrize("class_weight", [False, True])
def test_patients_of_a_class_weigh_the_same(class_weight: bool) -> None:
    weights = _weights(balance_patients=True, class_weight=class_weight)
    per_patient = _per(PATIENTS, weights)
    assert per_patient["UID_1"] == pytest.approx(per_patient["UID_2"])
    assert per_patient["UID_H1"] == pytest.approx(per_patient["UID_H2"])
    per_class = _per(LABELS, weights)
    expected = {"0": 6.0, "1": 6.0} if class_weight else {"0": 4.0, "1": 8.0}
    assert per_class == pytest.approx(expected)
    assert weights.sum() == pytest.approx(len(LABELS)), "the loss keeps its scale"


@pytest.mark.slow
def test_a_frozen_models_figures_from_cached_views_are_the_whole_models(tiny_config, artifacts_root) -> None:
    from pipeline.data.cache import load_images
    from pipeline.inference.batches import predict_probabilities
    from pipeline.models.model import load_model
    from pipeline.training.train import train

    folder = train(
        tiny_config.replace(freeze_backbone=True, random_features=True, tta=True, epochs=2, name="frozen-tta"),
        artifacts_root / "runs",
    )
    predictions = folder.predictions()
    images, _ = load_images(predictions["path"].tolist(), tiny_config.image_size, tiny_config.clahe)
    whole = predict_probabilities(load_model(folder.model_path), np.asarray(images), tta=True)
    np.testing.assert_allclose(predictions["prob_all"].to_numpy(), whole, atol=1e-4)
    assert whole.std() > 0, "the comparison is not between two constants"


@pytest.mark.slow
def test_a_run_logs_its_start_one_line_per_epoch_and_its_end_under_the_package_name(
    tiny_config, artifacts_root, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from pipeline.training.train import train

    with caplog.at_level(logging.INFO, logger="pipeline"):
        folder = train(tiny_config.replace(epochs=2, name="talks"), artifacts_root / "runs")
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("pipeline.")]
    assert any(line.startswith(f"{folder.run_id} started on ") for line in lines), lines
    epochs = [line for line in lines if line.startswith(f"{folder.run_id} training epoch ")]
    assert [line.split(":")[0] for line in epochs] == [
        f"{folder.run_id} training epoch 1/2",
        f"{folder.run_id} training epoch 2/2",
    ]
    history = folder.history()
    assert f"loss {history['loss'].iloc[-1]:.4f}" in epochs[-1]
    metrics = folder.metrics()
    assert any(
        line.startswith(f"{folder.run_id} completed: test balanced accuracy {metrics['balanced_accuracy']:.3f}")
        for line in lines
    ), lines


@pytest.mark.slow
def test_fast_mode_trains_the_head_on_cached_features_and_saves_a_full_model(tiny_config, artifacts_root) -> None:
    folder = train(
        tiny_config.replace(freeze_backbone=True, random_features=True, epochs=3, name="fast"), artifacts_root / "runs"
    )
    assert folder.status()["state"] == "completed"
    assert folder.history()["epoch"].tolist() == [1, 2, 3]
    predictor = Predictor.from_run(folder.path)
    assert "top_activation" in [layer.name for layer in predictor.model.layers]


@pytest.mark.slow
def test_fast_mode_with_augment_trains_on_augmented_feature_passes(tiny_config, artifacts_root, monkeypatch) -> None:
    from pipeline.training import features

    shapes = []
    original = features._augmented_features

    def recorded(model, config, images, labels, report):
        computed = original(model, config, images, labels, report)
        shapes.append((len(images), len(computed)))
        return computed

    monkeypatch.setattr(features, "_augmented_features", recorded)
    folder = train(
        tiny_config.replace(
            freeze_backbone=True, random_features=True, augment=True, augment_passes=2, epochs=2, name="fast-augmented"
        ),
        artifacts_root / "runs",
    )
    assert folder.status()["state"] == "completed"
    assert len(shapes) == 1 and shapes[0][1] == 2 * shapes[0][0], "two augmented passes over the training images"
    config = folder.config()
    assert config["augment"] is True and config["augment_passes"] == 2 and config["freeze_backbone"] is True


@pytest.mark.slow
def test_the_feature_cache_key_follows_the_weights_not_their_label(tiny_config) -> None:
    from pipeline.models.model import build_model
    from pipeline.training.features import FEATURE_CODE_VERSION, feature_cache_key

    model, _ = build_model("efficientnet_b0", 32, "none", freeze_backbone=True)
    key = feature_cache_key(model, tiny_config, "imagenet (x)", [], "plain")
    assert key["feature_code"] == FEATURE_CODE_VERSION and key == feature_cache_key(
        model, tiny_config, "imagenet (x)", [], "plain"
    )
    stem = model.get_layer("stem_conv")
    stem.set_weights([weight + 1e-3 for weight in stem.get_weights()])  # other weights under the same label
    changed = feature_cache_key(model, tiny_config, "imagenet (x)", [], "plain")
    assert changed["weights_sha256"] != key["weights_sha256"]
    head = model.get_layer("head_dense")
    head.set_weights([weight + 1.0 for weight in head.get_weights()])  # the head is not part of the features
    assert feature_cache_key(model, tiny_config, "imagenet (x)", [], "plain") == changed


@pytest.mark.slow
def test_a_fit_reports_through_its_hooks_without_a_run_folder(tiny_config) -> None:
    from pipeline.data.datasets import prepare_data
    from pipeline.models.model import build_model
    from pipeline.training.fit import FitHooks, fit_fast

    config = tiny_config.replace(freeze_backbone=True, random_features=True, epochs=2)
    data = prepare_data(config)
    model, used = build_model(config.backbone, config.image_size, "none", freeze_backbone=True)
    reports, histories = [], []
    hooks = FitHooks(report=lambda **changes: reports.append(changes), on_history=lambda rows: histories.append(rows))
    fit_fast(model, config, data, hooks, used)
    assert [[row["epoch"] for row in rows] for rows in histories] == [[1], [1, 2]]
    assert all(np.isfinite(rows[-1]["loss"]) for rows in histories)
    assert reports[0]["phase"].startswith("extracting plain features")
    assert [r["epoch"] for r in reports if r.get("phase") == "training head"] == [1, 2]
    assert reports[-1] == {"epoch": 2, "step": reports[-1]["step"], "progress": 1.0, "epochs_done": 2}
