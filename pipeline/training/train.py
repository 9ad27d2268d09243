"""The life of one run: prepare its folder, execute it (data, model, fit, test, save); many runs are `engines`'.

The pieces live beside this module: `datasets` (data and tf.data), `fit` (optimizer, callbacks, fast mode),
`inference` (running a model over images), `device` (CPU or GPUs).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import RANDOM_FEATURES_REFUSED, TrainConfig, default_runs_dir
from ..core.device import configure_device, replica_batches, synchronize_batchnorm
from ..core.errors import PipelineError, WeightsUnavailableError
from ..data.datasets import PreparedData, check_trainable, prepare_data
from ..data.splits import split_report
from ..evaluation.evaluate import (
    compute_metrics,
    fit_temperature,
    metrics_from_predictions,
    model_warnings,
    with_temperature,
)
from ..evaluation.intervals import patient_bootstrap
from ..inference.batches import predict_probabilities, predictions_table
from ..models.model import build_model
from ..runs.crossval import write_summary_when_complete
from ..runs.folder import Heartbeat, RunFolder, create_run_dir, mark_cancelled, now_iso
from .fit import fit_fast, fit_full, frozen_probabilities

LOG = logging.getLogger(__name__)


def git_commit() -> str | None:
    """The checkout's commit, or None outside git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _run_config(config: TrainConfig, folder: RunFolder, group: str) -> dict[str, Any]:
    return {
        **config.to_dict(),
        "run_id": folder.run_id,
        "created": now_iso(),
        "group": group,
        "weights_used": None,
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


def prepare_run(config: TrainConfig, runs_dir: Path | None = None, group: str = "") -> RunFolder:
    """A new run folder with its config and a `queued` status; data a run cannot train on (a bad root, no
    labelled images of both classes, unreadable files under `on_bad_image="fail"`) is refused first, before
    TensorFlow loads and without a folder."""
    check_trainable(config)
    folder = RunFolder(create_run_dir(runs_dir or default_runs_dir(), config.name or config.default_name))
    folder.write_config(_run_config(config, folder, group))
    folder.update_status(
        state="queued", epoch=0, epochs=config.epochs, progress=0.0, pid=os.getpid(), queued_at=now_iso()
    )
    return folder


def _predictions(
    model: Any, config: TrainConfig, data: PreparedData, subset: str, folder: RunFolder, weights_used: str
) -> Any:

    if config.freeze_backbone and not (config.fine_tune_blocks and config.fine_tune_epochs):
        prob_all = frozen_probabilities(model, config, data, folder, weights_used, subset)
    else:
        prob_all = predict_probabilities(model, data.images[subset], config.tta)
    return predictions_table(data.split[data.split["subset"] == subset], prob_all)


def temperature_scaled(
    validation: pd.DataFrame | None, test: pd.DataFrame
) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame]:
    """(the record of temperature scaling, validation and test predictions with P(ALL) rescaled): the
    temperature is fitted on the validation predictions alone, then applied to both; the classes called stay.
    The record keeps the test subset's calibration before scaling. Without validation images of both classes
    nothing is fitted and the record says why."""
    is_all = None if validation is None else (validation["label"] == "ALL").to_numpy()
    if is_all is None or is_all.all() or not is_all.any():
        held = "no validation subset" if is_all is None else f"validation holds {validation['label'].iloc[0]} only"
        return (
            {
                "temperature": None,
                "fitted_on": "validation",
                "not_fitted": f"temperature scaling needs validation images of both classes ({held})",
            },
            validation,
            test,
        )
    temperature = fit_temperature(is_all, validation["prob_all"].to_numpy())
    before = compute_metrics(test["label"], test["predicted"], test["prob_all"])
    record = {
        "temperature": round(temperature, 6),
        "fitted_on": "validation",
        "validation_images": len(validation),
        "calibration_before": before["calibration"],
        "brier_before": before["brier"],
    }

    def rescaled(table: pd.DataFrame) -> pd.DataFrame:
        return table.assign(prob_all=np.round(with_temperature(table["prob_all"], temperature), 6))

    return record, rescaled(validation), rescaled(test)


def run_metrics(
    test: pd.DataFrame,
    validation: pd.DataFrame | None,
    split: pd.DataFrame,
    tta: bool = False,
    temperature_scaling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json of a run from its test and validation predictions and its split: the test figures, the
    validation figures under `validation` (what runs are chosen by), what the split supports (leakage,
    patients per class), the temperature scaling applied (if any) and every warning, those about the model
    itself (constant, one class, no better than a constant answer) first."""
    report = split_report(split)
    metrics = {
        **metrics_from_predictions(test),
        "subset": "test",
        "tta": tta,
        "validation": (
            {**metrics_from_predictions(validation), "subset": "val"}
            if validation is not None and len(validation)
            else None
        ),
        **report,
    }
    integrity = model_warnings(metrics)
    if metrics["validation"]:
        integrity += model_warnings(metrics["validation"], "validation")
    metrics["model_warnings"] = integrity
    metrics["warnings"] = integrity + metrics["warnings"]
    if temperature_scaling is not None:
        metrics["temperature_scaling"] = temperature_scaling
        if temperature_scaling.get("not_fitted"):
            metrics["warnings"].append(f"Probabilities not rescaled: {temperature_scaling['not_fitted']}.")
    metrics["intervals"] = patient_bootstrap(test)  # 95 % intervals: the test figures rest on a few patients
    return metrics


def _evaluate(
    model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str
) -> dict[str, Any]:
    """Validation first, then the test subset, evaluated once and never used to choose."""
    if len(data.images["test"]) == 0:
        raise PipelineError("The test subset is empty; add data or change the split.")
    folder.update_status(phase="evaluating on the validation and test subsets")
    validation = _predictions(model, config, data, "val", folder, weights_used) if len(data.images["val"]) else None
    table = _predictions(model, config, data, "test", folder, weights_used)
    scaling = None
    if config.temperature_scaling:
        scaling, validation, table = temperature_scaled(validation, table)
    metrics = run_metrics(table, validation, data.split, config.tta, scaling)
    folder.write_predictions(table)
    folder.write_metrics(metrics)
    return metrics


def _load_or_build(config: TrainConfig, config_dict: dict[str, Any], folder: RunFolder) -> tuple[Any, str, int]:
    """(model, weights used, epochs already done): from the last checkpoint of an interrupted full run, else new.
    The random state starts from the seed plus the epochs done, so a resumed run draws fresh batches and
    dropout masks, as an uninterrupted run would, instead of replaying those of its first epochs."""
    import keras

    checkpoint = None if config.freeze_backbone else folder.latest_checkpoint()
    keras.utils.set_random_seed(config.seed + (checkpoint[0] if checkpoint else 0))
    if checkpoint:
        return keras.models.load_model(checkpoint[1]), config_dict.get("weights_used") or config.weights, checkpoint[0]
    model, weights_used = build_model(
        config.backbone, config.image_size, config.weights, config.freeze_backbone, config.bn_momentum, config.head_l2
    )
    return model, weights_used, 0


def execute_run(folder: RunFolder) -> dict[str, Any]:
    """Train the prepared (or interrupted) run in `folder` to the end; returns its metrics.

    The run ends `completed`, `cancelled` (Ctrl-C, or SIGTERM once `runs.cancel_on_sigterm` is installed) or
    `failed` (with the error message).
    """
    import keras
    import tensorflow as tf

    config_dict = folder.config()
    config = TrainConfig.from_dict(config_dict)
    folder.update_status(
        state="running",
        phase="preparing data",
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=now_iso(),
        ended_at=None,
        error=None,
        progress=0.0,
    )
    LOG.info(
        "%s started on %s (pid %d): %s at %d px, %d epochs, batch %d, data %s",
        folder.run_id,
        socket.gethostname(),
        os.getpid(),
        config.backbone,
        config.image_size,
        config.epochs,
        config.batch_size,
        config.data_dir,
    )
    with Heartbeat(folder):  # alive, whatever host it runs on
        try:
            data = prepare_data(
                config, lambda fraction: folder.update_status(phase="preprocessing images", progress=round(fraction, 3))
            )
            folder.write_split(data.split)
            _record_skipped(folder, data.skipped())
            folder.update_status(phase="building model")
            plan = configure_device()
            with plan.strategy.scope():
                model, weights_used, initial_epoch = _load_or_build(config, config_dict, folder)
            if config.freeze_backbone and weights_used.startswith("none") and not config.random_features:
                raise PipelineError(
                    f"{RANDOM_FEATURES_REFUSED} (Asked for weights {config.weights!r}; got {weights_used}.)"
                )
            batches = replica_batches(config.batch_size, plan.strategy.num_replicas_in_sync)
            if batches["synchronized_batchnorm"]:
                synchronize_batchnorm(model)
            folder.write_config(
                {
                    **config_dict,
                    "weights_used": weights_used,
                    "data_layout": data.dataset.layout,
                    "data_kind": data.dataset.kind,
                    "data_root": str(data.dataset.root),
                    "split_counts": data.split["subset"].value_counts().to_dict(),
                    "skipped_images": len(data.skipped()),
                    "tensorflow_version": tf.__version__,
                    "keras_version": keras.__version__,
                    "device": {
                        "gpus": plan.gpus,
                        "precision": plan.precision,
                        "jit_compile": plan.jit_compile,
                        **batches,
                    },
                }
            )
            with plan.strategy.scope():
                if config.freeze_backbone:
                    fit_fast(model, config, data, folder, weights_used, plan.jit_compile)
                else:
                    cells = _grid_cells(folder)
                    fit_full(
                        model,
                        config,
                        data,
                        folder,
                        initial_epoch,
                        plan.jit_compile,
                        (grid_cell_callback(cells, data, folder, weights_used),) if cells else (),
                    )
            folder.update_status(phase="saving model")
            folder.save_model(model)
            metrics = _evaluate(model, config, data, folder, weights_used)
            folder.update_status(state="completed", phase="done", ended_at=now_iso(), progress=1.0)
            LOG.info(
                "%s completed: test balanced accuracy %s, ROC AUC %s (%d images)",
                folder.run_id,
                _figure(metrics.get("balanced_accuracy")),
                _figure(metrics.get("roc_auc")),
                metrics["n"],
            )
            folder.remove_checkpoints()
            write_summary_when_complete(folder)
            return metrics
        except KeyboardInterrupt:
            mark_cancelled([folder, *_grid_cells(folder).values()])
            raise
        except Exception as error:
            message = str(error) if isinstance(error, PipelineError) else f"{type(error).__name__}: {error}"
            folder.update_status(state="failed", phase="failed", ended_at=now_iso(), error=message)
            for cell in _grid_cells(folder).values():
                if cell.raw_status().get("state") in ("queued", "running"):
                    cell.update_status(
                        state="failed",
                        phase="failed",
                        ended_at=now_iso(),
                        error=f"The one-pass run {folder.run_id} it comes from failed: {message}",
                    )
            LOG.error("%s failed: %s", folder.run_id, message)
            raise


def _record_skipped(folder: RunFolder, skipped: list[tuple[str, str]]) -> None:
    """The files left out of the run, each named with its reason in skipped.csv and in the log."""
    folder.write_skipped(skipped)
    for path, reason in skipped:
        LOG.warning("%s skipped %s: %s", folder.run_id, path, reason)


def one_pass_possible(config: TrainConfig) -> bool:
    """Whether a grid's cells of one batch size can be taken from one run to the longest epoch count: full
    training whose schedule decays per step whatever the total (the paper's RMSprop with exponential decay; the
    data order is seeded per epoch either way). Adam's cosine decay depends on the total and fast mode trains a
    head in seconds: those grids run cell by cell."""
    return config.optimizer == "rmsprop" and not config.freeze_backbone


def _grid_cells(folder: RunFolder) -> dict[int, RunFolder]:
    """The grid cells a one-pass run evaluates at their epoch counts, by epoch."""
    try:
        cells = folder.config().get("grid_cells") or {}
    except (OSError, ValueError, PipelineError):
        return {}
    return {int(epoch): RunFolder(folder.path.parent / run_id) for epoch, run_id in cells.items()}


def grid_cell_callback(cells: dict[int, RunFolder], data: PreparedData, trunk: RunFolder, weights_used: str) -> Any:
    """After each epoch that is a grid cell's epoch count, that cell's run folder gets what a run of its own would
    hold: the history so far, the model, its validation and test figures, `completed`."""
    import keras

    class GridCells(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            cell = cells.get(epoch + 1)
            if cell is None or cell.raw_status().get("state") == "completed":
                return
            cell.update_status(
                state="running",
                phase="evaluating (taken from the one-pass run)",
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=trunk.raw_status().get("started_at"),
            )
            trunk_config = trunk.config()
            cell.write_config(
                {
                    **trunk_config,
                    **{
                        key: value
                        for key, value in cell.config().items()
                        if key in ("run_id", "created", "epochs", "name")
                    },
                    "grid_cells": None,
                    "grid_source": trunk.run_id,
                }
            )
            cell.write_split(data.split)
            cell.write_history(trunk.history().head(epoch + 1).to_dict(orient="records"))
            cell.save_model(self.model)
            config = TrainConfig.from_dict(cell.config())
            metrics = _evaluate(self.model, config, data, cell, weights_used)
            cell.update_status(
                state="completed",
                phase="done",
                ended_at=now_iso(),
                progress=1.0,
                epoch=epoch + 1,
                epochs=epoch + 1,
                epochs_done=epoch + 1,
            )
            LOG.info(
                "%s (grid cell at epoch %d of %s) completed: test balanced accuracy %s",
                cell.run_id,
                epoch + 1,
                trunk.run_id,
                _figure(metrics.get("balanced_accuracy")),
            )

    return GridCells()


def _figure(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def train(config: TrainConfig, runs_dir: Path | None = None, group: str = "") -> RunFolder:
    """Prepare and execute one run in this process. A run that could not get its weights trained nothing and
    is removed again, so a wrong `--weights` changes nothing."""
    folder = prepare_run(config, runs_dir, group)
    try:
        execute_run(folder)
    except WeightsUnavailableError:
        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    return folder
