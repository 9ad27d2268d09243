"""The life of one run: prepare its folder, execute it (data, model, fit, test, save); many runs are `engines`'.

The pieces live beside this module: `fit` (optimizer, full training, fast mode; it reports through `FitHooks`),
`features` (cached backbone features), `assess` (testing once), `grid_cells` (the grid's one-pass runs).
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

from ..core.config import RANDOM_FEATURES_REFUSED, TrainConfig, default_runs_dir
from ..core.device import DevicePlan, configure_device, replica_batches, synchronize_batchnorm
from ..core.errors import PipelineError, WeightsUnavailableError
from ..data.datasets import PreparedData, check_trainable, prepare_data
from ..evaluation.metrics import Metrics
from ..models.model import build_model
from ..runs.contract import create_run_dir, now_iso
from ..runs.crossval import write_summary_when_complete
from ..runs.folder import RunFolder
from ..runs.lifecycle import Heartbeat, mark_cancelled
from .assess import evaluate_into
from .final import check_final, out_of_fold_into
from .fit import FitHooks, fit_fast, fit_full
from .grid_cells import figure, grid_cell_callback, grid_cells

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
    labelled images of both classes, unreadable files under `on_bad_image="fail"`) and a final model without a
    completed cross-validation of its settings are refused first, before TensorFlow loads and without a folder."""
    check_trainable(config)
    if config.split == "none":
        check_final(config, Path(runs_dir or default_runs_dir()))
    folder = RunFolder(create_run_dir(runs_dir or default_runs_dir(), config.name or config.default_name))
    folder.write_config(_run_config(config, folder, group))
    folder.update_status(
        state="queued", epoch=0, epochs=config.epochs, progress=0.0, pid=os.getpid(), queued_at=now_iso()
    )
    return folder


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


def folder_hooks(folder: RunFolder) -> FitHooks:
    """A fit's reports, written to the run folder: status.json, history.csv, checkpoints and TensorBoard logs."""
    return FitHooks(
        report=folder.update_status,
        history=folder.history().to_dict(orient="records"),
        on_history=folder.write_history,
        on_checkpoint=folder.save_checkpoint,
        tensorboard_dir=folder.tensorboard_dir,
        label=folder.run_id,
    )


def _mark_started(folder: RunFolder, config: TrainConfig) -> None:
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


def _record_setting(
    folder: RunFolder,
    config_dict: dict[str, Any],
    data: PreparedData,
    weights_used: str,
    plan: DevicePlan,
    batches: dict,
) -> None:
    """config.json gains what the run actually got: weights, data, versions, device."""
    import keras
    import tensorflow as tf

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
            "device": {"gpus": plan.gpus, "precision": plan.precision, "jit_compile": plan.jit_compile, **batches},
        }
    )


def _trained_model(
    folder: RunFolder, config: TrainConfig, config_dict: dict[str, Any], data: PreparedData
) -> tuple[Any, str]:
    """Build (or resume) the model and fit it; (model, weights used)."""
    folder.update_status(phase="building model")
    plan = configure_device()
    with plan.strategy.scope():
        model, weights_used, initial_epoch = _load_or_build(config, config_dict, folder)
    if config.freeze_backbone and weights_used.startswith("none") and not config.random_features:
        raise PipelineError(f"{RANDOM_FEATURES_REFUSED} (Asked for weights {config.weights!r}; got {weights_used}.)")
    batches = replica_batches(config.batch_size, plan.strategy.num_replicas_in_sync)
    if batches["synchronized_batchnorm"]:
        synchronize_batchnorm(model)
    _record_setting(folder, config_dict, data, weights_used, plan, batches)
    hooks = folder_hooks(folder)
    with plan.strategy.scope():
        if config.freeze_backbone:
            fit_fast(model, config, data, hooks, weights_used, plan.jit_compile)
        else:
            cells = grid_cells(folder)
            extra = (grid_cell_callback(cells, data, folder, weights_used),) if cells else ()
            fit_full(model, config, data, hooks, initial_epoch, plan.jit_compile, extra)
    return model, weights_used


def _mark_failed(folder: RunFolder, error: Exception) -> None:
    """The run and the grid cells it was to fill end `failed`, with the error."""
    message = str(error) if isinstance(error, PipelineError) else f"{type(error).__name__}: {error}"
    folder.update_status(state="failed", phase="failed", ended_at=now_iso(), error=message)
    for cell in grid_cells(folder).values():
        if cell.raw_status().get("state") in ("queued", "running"):
            cell.update_status(
                state="failed",
                phase="failed",
                ended_at=now_iso(),
                error=f"The one-pass run {folder.run_id} it comes from failed: {message}",
            )
    LOG.error("%s failed: %s", folder.run_id, message)


def execute_run(folder: RunFolder) -> dict[str, Any]:
    """Train the prepared (or interrupted) run in `folder` to the end; returns its metrics.

    The run ends `completed`, `cancelled` (Ctrl-C, or SIGTERM once `runs.cancel_on_sigterm` is installed) or
    `failed` (with the error message).
    """
    config_dict = folder.config()
    config = TrainConfig.from_dict(config_dict)
    _mark_started(folder, config)
    with Heartbeat(folder):  # alive, whatever host it runs on
        try:
            data = prepare_data(
                config, lambda fraction: folder.update_status(phase="preprocessing images", progress=round(fraction, 3))
            )
            folder.write_split(data.split)
            if config.split == "none":
                check_final(config, folder.path.parent, data.split)
            _record_skipped(folder, data.skipped())
            model, weights_used = _trained_model(folder, config, config_dict, data)
            folder.update_status(phase="saving model")
            folder.save_model(model)
            if config.split == "none":
                metrics = out_of_fold_into(config, data, folder)
            else:
                metrics = evaluate_into(model, config, data, folder, weights_used)
            folder.update_status(state="completed", phase="done", ended_at=now_iso(), progress=1.0)
            LOG.info(
                "%s completed: %s balanced accuracy %s, ROC AUC %s (%d images)",
                folder.run_id,
                Metrics.of(metrics).scored_on.lower(),
                figure(metrics.get("balanced_accuracy")),
                figure(metrics.get("roc_auc")),
                metrics["n"],
            )
            folder.remove_checkpoints()
            write_summary_when_complete(folder)
            return metrics
        except KeyboardInterrupt:
            mark_cancelled([folder, *grid_cells(folder).values()])
            raise
        except Exception as error:
            _mark_failed(folder, error)
            raise


def _record_skipped(folder: RunFolder, skipped: list[tuple[str, str]]) -> None:
    """The files left out of the run, each named with its reason in skipped.csv and in the log."""
    folder.write_skipped(skipped)
    for path, reason in skipped:
        LOG.warning("%s skipped %s: %s", folder.run_id, path, reason)


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
