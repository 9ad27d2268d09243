"""Training runs: prepare data, fit (full fine-tune or fast mode on cached features), evaluate, save."""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import CLASS_NAMES
from .cache import cache_key, cached_array, load_images
from .config import TrainConfig, default_cache_dir, default_runs_dir
from .data import Dataset, prelim_records, scan_dataset, split_records
from .errors import PipelineError, WeightsUnavailableError
from .evaluate import label_from_prob, metrics_from_predictions
from .runs import RunFolder, create_run_dir, mark_cancelled, now_iso, temporary_path_for

STATUS_INTERVAL_S = 2.0
PREDICT_BATCH = 32


class RunCancelled(KeyboardInterrupt):
    """Raised in the training process when it is asked to stop (SIGTERM), handled like Ctrl-C."""


def _raise_cancelled(signum: int, frame: Any) -> None:
    raise RunCancelled(f"stopped by signal {signum}")


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


@dataclass
class PreparedData:
    dataset: Dataset
    split: pd.DataFrame
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    skipped_images: list[str]


def prepare_data(config: TrainConfig, folder: RunFolder | None = None) -> PreparedData:
    """Scan, split and preprocess (through the cache) the data of `config`."""
    dataset = scan_dataset(config.data_dir)
    records = dataset.training_records(config.folds)
    if config.max_images and len(records) > config.max_images:
        chosen = np.random.default_rng(config.seed).choice(len(records), config.max_images, replace=False)
        records = [records[index] for index in sorted(chosen)]
    test_records = prelim_records(dataset) if config.split == "folds" else None
    split = split_records(records, config.split, config.seed, config.test_fraction, config.val_fraction,
                          config.val_fold, test_records)

    def progress(fraction: float) -> None:
        if folder:
            folder.update_status(phase="preprocessing images", progress=round(fraction, 3))

    paths = split["path"].tolist()
    images, failed = load_images(paths, config.image_size, config.clahe, default_cache_dir(), progress)
    keep = ~split["path"].isin(failed).to_numpy()
    split = split[keep].reset_index(drop=True)
    images = np.asarray(images)[keep]
    by_subset, labels = {}, {}
    for subset in ("train", "val", "test"):
        mask = (split["subset"] == subset).to_numpy()
        by_subset[subset] = images[mask]
        labels[subset] = (split.loc[mask, "label"] == "ALL").to_numpy().astype(np.int32)
    if len(by_subset["train"]) == 0 or len(np.unique(labels["train"])) < 2:
        raise PipelineError("The training subset needs images of both classes; add data or change the split.")
    return PreparedData(dataset, split, by_subset, labels, failed)


def make_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int,
                 augment: bool = False) -> Any:
    """tf.data over preprocessed uint8 images: shuffle, batch, cast to 0-255 floats, augment, prefetch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                            num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        dataset = dataset.map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def feature_dataset(features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None = None) -> Any:
    """tf.data over cached features, held in memory; shuffled each epoch when a seed is given."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).cache()
    if seed is not None:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment(images: Any, labels: Any) -> tuple[Any, Any]:
    """Flips and 90-degree rotations: a cell has no up or left."""
    import tensorflow as tf

    images = tf.image.random_flip_left_right(images)
    images = tf.image.random_flip_up_down(images)
    return tf.image.rot90(images, k=tf.random.uniform([], 0, 4, dtype=tf.int32)), labels


def _optimizer(config: TrainConfig, learning_rate: float | None = None) -> Any:
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate or config.learning_rate, decay_steps=config.decay_steps, decay_rate=config.decay_rate)
    return keras.optimizers.RMSprop(learning_rate=schedule)


def _progress_callback(folder: RunFolder, total_epochs: int, steps: int, epoch_offset: int = 0,
                       phase: str = "training") -> Any:
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Writes status.json every few seconds within an epoch and history.csv after each epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.rows = folder.history().to_dict(orient="records")
            self.last_write = 0.0
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            first = not self.epoch
            self.epoch = epoch_offset + epoch + 1
            changes = {"first_epoch_this_process": self.epoch} if first else {}
            folder.update_status(phase=phase, epoch=self.epoch, epochs=total_epochs, step=0, steps=steps,
                                 progress=0.0, **changes)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.monotonic() - self.last_write >= STATUS_INTERVAL_S:
                self.last_write = time.monotonic()
                folder.update_status(step=batch + 1, progress=round((batch + 1) / steps, 4),
                                     batch_accuracy=float((logs or {}).get("accuracy", math.nan)))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            learning_rate = float(np.asarray(self.model.optimizer.learning_rate))
            row = {"epoch": self.epoch, "accuracy": logs.get("accuracy"), "loss": logs.get("loss"),
                   "val_accuracy": logs.get("val_accuracy"), "val_loss": logs.get("val_loss"),
                   "learning_rate": learning_rate}
            self.rows = [r for r in self.rows if int(r["epoch"]) < self.epoch] + [row]
            folder.write_history(self.rows)
            folder.update_status(epoch=self.epoch, step=steps, progress=1.0, epochs_done=self.epoch)

    return ProgressCallback()


def _checkpoint_callback(folder: RunFolder) -> Any:
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """The whole model with its optimizer after each epoch, written atomically (`epoch-NNNN.keras`);
        older checkpoints are removed once the new one is in place. Keras' BackupAndRestore writes its
        file in place, so a kill at the wrong moment leaves a backup that no longer loads."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            folder.checkpoint_dir.mkdir(exist_ok=True)
            target = folder.checkpoint_path(epoch + 1)
            tmp = temporary_path_for(target)
            self.model.save(tmp)
            os.replace(tmp, target)
            for older in folder.checkpoint_dir.glob("epoch-*.keras"):
                if older != target:
                    older.unlink(missing_ok=True)

    return EpochCheckpoint()


def _image_datasets(config: TrainConfig, data: PreparedData) -> tuple[Any, Any]:
    """The shuffled (and optionally augmented) training set and the validation set, or None without one."""
    train = make_dataset(data.images["train"], data.labels["train"], config.batch_size, True, config.seed,
                         config.augment)
    validation = (make_dataset(data.images["val"], data.labels["val"], config.batch_size, False, config.seed)
                  if len(data.images["val"]) else None)
    return train, validation


def _fit_full(model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, initial_epoch: int) -> None:
    if initial_epoch == 0:
        model.compile(optimizer=_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train, validation = _image_datasets(config, data)
    steps = math.ceil(len(data.images["train"]) / config.batch_size)
    # History first, then the checkpoint: a kill between the two never leaves a checkpoint ahead of the history.
    callbacks = [_progress_callback(folder, config.epochs, steps), _checkpoint_callback(folder)]
    model.fit(train, validation_data=validation, epochs=config.epochs, initial_epoch=initial_epoch,
              callbacks=callbacks, shuffle=False, verbose=0)


def _features(model: Any, images: np.ndarray, folder: RunFolder) -> np.ndarray:
    from .model import feature_extractor

    extractor = feature_extractor(model)
    parts = []
    for start in range(0, len(images), PREDICT_BATCH):
        batch = np.asarray(images[start:start + PREDICT_BATCH], dtype=np.float32)
        parts.append(np.asarray(extractor(batch, training=False)))
        folder.update_status(progress=round(min(1.0, (start + len(batch)) / max(1, len(images))), 4))
    return np.concatenate(parts) if parts else np.zeros((0, extractor.output_shape[-1]), np.float32)


def _subset_features(model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder,
                     weights_used: str, subset: str) -> np.ndarray:
    """Pooled backbone features of a subset, cached across runs when the backbone weights are fixed
    (ImageNet or a file); random weights are computed afresh, since they change with every build."""
    folder.update_status(phase=f"extracting {subset} features", progress=0.0)

    def compute() -> np.ndarray:
        return _features(model, data.images[subset], folder)

    if weights_used.startswith("none"):
        return compute()
    paths = data.split.loc[data.split["subset"] == subset, "path"].tolist()
    key = {"images": cache_key(paths, config.image_size, config.clahe), "backbone": config.backbone,
           "weights": weights_used}
    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features


def _fit_fast(model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str) -> None:
    """Fast mode: pooled backbone features computed once (and cached), then the head trained on them."""
    from .model import head_model, unfreeze_top_blocks

    features = {subset: _subset_features(model, config, data, folder, weights_used, subset)
                for subset in ("train", "val")}
    head = head_model(model)
    head.compile(optimizer=_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    steps = math.ceil(len(features["train"]) / config.batch_size)
    total_epochs = config.epochs + (config.fine_tune_epochs if config.fine_tune_blocks else 0)
    train_features = feature_dataset(features["train"], data.labels["train"], config.batch_size, config.seed)
    validation = (feature_dataset(features["val"], data.labels["val"], config.batch_size) if len(features["val"])
                  else None)
    head.fit(train_features, validation_data=validation, epochs=config.epochs, shuffle=False, verbose=0,
             callbacks=[_progress_callback(folder, total_epochs, steps, phase="training head")])
    if config.fine_tune_blocks and config.fine_tune_epochs:
        unfreeze_top_blocks(model, config.fine_tune_blocks)
        model.compile(optimizer=_optimizer(config, config.learning_rate / 10),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        train, validation_set = _image_datasets(config, data)
        model.fit(train, validation_data=validation_set, epochs=config.fine_tune_epochs, shuffle=False, verbose=0,
                  callbacks=[_progress_callback(folder, total_epochs, steps,
                                                epoch_offset=config.epochs, phase="fine-tuning")])


def predict_probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    """Probability of ALL for each preprocessed uint8 image."""
    probabilities = []
    for start in range(0, len(images), PREDICT_BATCH):
        batch = np.asarray(images[start:start + PREDICT_BATCH], dtype=np.float32)
        probabilities.append(np.asarray(model(batch, training=False))[:, CLASS_NAMES.index("ALL")])
    return np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32)


def predictions_table(split: pd.DataFrame, prob_all: np.ndarray) -> pd.DataFrame:
    table = split[["path", "patient", "label"]].copy().reset_index(drop=True)
    table["predicted"] = label_from_prob(prob_all)
    table["prob_all"] = np.round(prob_all.astype(float), 6)
    return table


def save_model(model: Any, folder: RunFolder) -> None:
    tmp = temporary_path_for(folder.model_path)
    model.save(tmp)
    os.replace(tmp, folder.model_path)


def _run_config(config: TrainConfig, folder: RunFolder, group: str) -> dict[str, Any]:
    return {**config.to_dict(), "run_id": folder.run_id, "created": now_iso(), "group": group,
            "weights_used": None, "python": platform.python_version(), "git_commit": git_commit()}


def prepare_run(config: TrainConfig, runs_dir: Path | None = None, group: str = "") -> RunFolder:
    """A new run folder with its config and a `queued` status; a bad dataset root is refused first."""
    scan_dataset(config.data_dir)
    folder = RunFolder(create_run_dir(runs_dir or default_runs_dir(), config.name or config.default_name))
    folder.write_config(_run_config(config, folder, group))
    folder.update_status(state="queued", epoch=0, epochs=config.epochs, progress=0.0, pid=os.getpid(),
                         queued_at=now_iso())
    return folder


def execute_run(folder: RunFolder) -> dict[str, Any]:
    """Train the prepared (or interrupted) run in `folder` to the end; returns its metrics.

    The run ends `completed`, `cancelled` (SIGTERM/Ctrl-C) or `failed` (with the error message).
    """
    import keras
    import tensorflow as tf

    previous = signal.signal(signal.SIGTERM, _raise_cancelled)
    config_dict = folder.config()
    config = TrainConfig.from_dict(config_dict)
    folder.update_status(state="running", phase="preparing data", pid=os.getpid(), started_at=now_iso(),
                         ended_at=None, error=None, progress=0.0)
    try:
        keras.utils.set_random_seed(config.seed)
        data = prepare_data(config, folder)
        folder.write_split(data.split)
        folder.update_status(phase="building model")
        strategy = configure_device()
        checkpoint = None if config.freeze_backbone else folder.latest_checkpoint()
        with strategy.scope():
            if checkpoint:
                initial_epoch, model = checkpoint[0], keras.models.load_model(checkpoint[1])
                weights_used = config_dict.get("weights_used") or config.weights
            else:
                initial_epoch, (model, weights_used) = 0, _build(config)
        folder.write_config({
            **config_dict, "weights_used": weights_used, "data_layout": data.dataset.layout,
            "data_kind": data.dataset.kind, "data_root": str(data.dataset.root),
            "split_counts": data.split["subset"].value_counts().to_dict(),
            "skipped_images": len(data.dataset.skipped) + len(data.skipped_images),
            "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
        })
        with strategy.scope():
            if config.freeze_backbone:
                _fit_fast(model, config, data, folder, weights_used)
            else:
                _fit_full(model, config, data, folder, initial_epoch)
        folder.update_status(phase="saving model")
        save_model(model, folder)
        metrics = _evaluate_test(model, data, folder)
        folder.update_status(state="completed", phase="done", ended_at=now_iso(), progress=1.0)
        shutil.rmtree(folder.checkpoint_dir, ignore_errors=True)
        return metrics
    except KeyboardInterrupt:
        mark_cancelled([folder])
        raise
    except Exception as error:
        message = str(error) if isinstance(error, PipelineError) else f"{type(error).__name__}: {error}"
        folder.update_status(state="failed", phase="failed", ended_at=now_iso(), error=message)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def configure_device() -> Any:
    """Mixed precision on a GPU that has tensor cores, all GPUs through MirroredStrategy; nothing on a CPU.
    (Keras compiles with XLA on GPUs by itself: `jit_compile="auto"`.)"""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return tf.distribute.get_strategy()
    details = tf.config.experimental.get_device_details(gpus[0])
    if details.get("compute_capability", (0, 0)) >= (7, 0):
        keras.mixed_precision.set_global_policy("mixed_float16")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def _build(config: TrainConfig) -> tuple[Any, str]:
    from .model import build_model

    return build_model(config.backbone, config.image_size, config.weights, config.freeze_backbone)


def _evaluate_test(model: Any, data: PreparedData, folder: RunFolder) -> dict[str, Any]:
    if len(data.images["test"]) == 0:
        raise PipelineError("The test subset is empty; add data or change the split.")
    folder.update_status(phase="evaluating on the test subset")
    prob_all = predict_probabilities(model, data.images["test"])
    table = predictions_table(data.split[data.split["subset"] == "test"], prob_all)
    metrics = {**metrics_from_predictions(table), "subset": "test"}
    folder.write_predictions(table)
    folder.write_metrics(metrics)
    return metrics


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


def sweep(config: TrainConfig, epochs: list[int], batch_sizes: list[int], runs_dir: Path | None = None,
          group: str = "") -> list[RunFolder]:
    """The paper's grid: one run per (epochs, batch size), queued together, trained one after another."""
    group = group or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    folders = [prepare_run(config.replace(epochs=e, batch_size=b), runs_dir, group)
               for e in epochs for b in batch_sizes]
    execute_runs(folders)
    return folders


def execute_runs(folders: list[RunFolder]) -> None:
    """Execute queued runs in order; a failed run does not stop the next, a cancel stops them all."""
    for index, folder in enumerate(folders):
        try:
            execute_run(folder)
        except KeyboardInterrupt:
            mark_cancelled(folders[index + 1:], "Cancelled with its sweep.")
            raise
        except Exception:  # noqa: BLE001 - recorded in the run's status; the sweep goes on
            continue
