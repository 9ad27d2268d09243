"""Testing a trained model once: P(ALL) of its validation and test images (a frozen model from cached features),
temperature scaling, metrics with intervals, written to the run folder."""

from __future__ import annotations

from typing import Any

from ..core.config import TrainConfig
from ..core.errors import PipelineError
from ..data.datasets import PreparedData
from ..evaluation.run_metrics import run_metrics, temperature_scaled
from ..inference.batches import predict_probabilities, predictions_table
from ..runs.folder import RunFolder
from .features import frozen_probabilities


def subset_predictions(
    model: Any, config: TrainConfig, data: PreparedData, subset: str, folder: RunFolder, weights_used: str
) -> Any:
    """The predictions table of one subset: P(ALL) of every image, the class called, its label and patient."""
    if config.freeze_backbone and not (config.fine_tune_blocks and config.fine_tune_epochs):
        prob_all = frozen_probabilities(model, config, data, folder.update_status, weights_used, subset)
    else:
        prob_all = predict_probabilities(model, data.images[subset], config.tta)
    return predictions_table(data.split[data.split["subset"] == subset], prob_all)


def evaluate_into(
    model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str
) -> dict[str, Any]:
    """Validation first, then the test subset, evaluated once and never used to choose."""
    if len(data.images["test"]) == 0:
        raise PipelineError("The test subset is empty; add data or change the split.")
    folder.update_status(phase="evaluating on the validation and test subsets")
    validation = (
        subset_predictions(model, config, data, "val", folder, weights_used) if len(data.images["val"]) else None
    )
    table = subset_predictions(model, config, data, "test", folder, weights_used)
    scaling = None
    if config.temperature_scaling:
        scaling, validation, table = temperature_scaled(validation, table)
    metrics = run_metrics(table, validation, data.split, config.tta, scaling)
    folder.write_predictions(table)
    folder.write_metrics(metrics)
    return metrics
