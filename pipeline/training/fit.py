"""Fitting a model: the paper's optimizer, sample weights, full fine-tune and fast mode (head trained on cached
backbone features). A fit writes no file: it reports through the caller's `FitHooks` (train.py connects them to
the run folder)."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import TrainConfig
from ..data.datasets import PreparedData, feature_dataset, make_dataset, training_steps
from ..models.model import adapt_feature_norm, head_model, unfreeze_top_blocks
from .features import dataset_features

LOG = logging.getLogger(__name__)


def keras_verbosity() -> int:
    """Keras' progress bar on a terminal; nothing in a log file (one line per epoch is logged instead)."""
    return 1 if sys.stdout.isatty() else 0


STATUS_INTERVAL_S = 2.0
"""Batch-end progress is reported at most this often."""
LOSS = "sparse_categorical_crossentropy"


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


@dataclass
class FitHooks:
    """Where a fit reports, given by its caller; every hook may be left out (a fit in a notebook reports nothing).

    `report(**changes)` gets the run's status changes (phase, epoch, step, progress, ...); `history` holds the
    epochs already done (a resumed run) and `on_history(rows)` gets the whole history after each epoch;
    `on_checkpoint(model, epochs_done)` saves a resumable model after each epoch of full training;
    `tensorboard_dir` takes Keras' TensorBoard logs; `label` names the run in the log."""

    report: Callable[..., None] = _ignore
    history: list[dict[str, Any]] = field(default_factory=list)
    on_history: Callable[[list[dict[str, Any]]], None] = _ignore
    on_checkpoint: Callable[[Any, int], None] | None = None
    tensorboard_dir: Path | None = None
    label: str = "run"


def optimizer(config: TrainConfig, total_steps: int, learning_rate: float | None = None) -> Any:
    """`rmsprop`: RMSprop with ExponentialDecay (900 steps, rate 0.95), as in the paper; `adam`: Adam with a
    cosine decay to zero over the whole run (training from scratch)."""
    import keras

    learning_rate = learning_rate or config.learning_rate
    if config.optimizer == "adam":
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps)))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=config.decay_steps, decay_rate=config.decay_rate
    )
    return keras.optimizers.RMSprop(learning_rate=schedule)


def sample_weights(config: TrainConfig, labels: np.ndarray, patients: np.ndarray) -> np.ndarray | None:
    """One weight per training image, or None when every image counts the same.

    `balance_patients`: every patient of a class weighs the same, however many images it has (one patient
    can be a fifth of a fold). `class_weight`: each class weighs half (n / (2 n_class) per image without
    patient balancing). Class weights shift the model's prior towards 50 % ALL: its probabilities are
    calibrated for balanced classes, not for the training data's 2:1."""
    if not (config.class_weight or config.balance_patients):
        return None
    labels, patients = np.asarray(labels), np.asarray(patients).astype(str)
    weights = np.ones(len(labels), np.float64)
    if config.balance_patients:
        _, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
    for label in np.unique(labels):
        in_class = labels == label
        share = len(labels) / 2 if config.class_weight else in_class.sum()
        weights[in_class] *= share / weights[in_class].sum()
    return weights.astype(np.float32)


def progress_callback(
    hooks: FitHooks, total_epochs: int, steps: int, epoch_offset: int = 0, phase: str = "training"
) -> Any:
    """A Keras callback reporting the epoch, the batch and the history through `hooks`."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Reports at batch ends, at most every few seconds, and the history after each epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.rows = list(hooks.history)
            self.last_write = 0.0
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            first = not self.epoch
            self.epoch = epoch_offset + epoch + 1
            changes = {"first_epoch_this_process": self.epoch} if first else {}
            hooks.report(
                phase=phase, epoch=self.epoch, epochs=total_epochs, step=0, steps=steps, progress=0.0, **changes
            )

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.monotonic() - self.last_write >= STATUS_INTERVAL_S:
                self.last_write = time.monotonic()
                hooks.report(
                    step=batch + 1,
                    progress=round((batch + 1) / steps, 4),
                    batch_accuracy=float((logs or {}).get("accuracy", math.nan)),
                )

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            learning_rate = float(np.asarray(self.model.optimizer.learning_rate))
            row = {
                "epoch": self.epoch,
                "accuracy": logs.get("accuracy"),
                "loss": logs.get("loss"),
                "val_accuracy": logs.get("val_accuracy"),
                "val_loss": logs.get("val_loss"),
                "learning_rate": learning_rate,
            }
            self.rows = [r for r in self.rows if int(r["epoch"]) < self.epoch] + [row]
            hooks.history = list(self.rows)  # a later phase of the same fit (fine-tuning) goes on from here
            hooks.on_history(self.rows)
            hooks.report(epoch=self.epoch, step=steps, progress=1.0, epochs_done=self.epoch)
            figures = " ".join(
                f"{name} {value:.4f}"
                for name, value in row.items()
                if name != "epoch" and isinstance(value, float) and value == value
            )
            LOG.info("%s %s epoch %d/%d: %s", hooks.label, phase, self.epoch, total_epochs, figures)

    return ProgressCallback()


def _callbacks(hooks: FitHooks, progress: Any, checkpoints: bool = False) -> list[Any]:
    """The run's own Keras callbacks: progress, then (full training) the checkpoint after the history, so a kill
    between the two never leaves a checkpoint ahead of the history; TensorBoard's logs where the caller wants them."""
    import keras

    callbacks = [progress]
    if checkpoints and hooks.on_checkpoint is not None:
        save = hooks.on_checkpoint

        class EpochCheckpoint(keras.callbacks.Callback):
            """The whole model with its optimizer after each epoch (the caller writes it atomically; Keras'
            BackupAndRestore writes in place, so a kill at the wrong moment leaves a backup that no longer loads)."""

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                save(self.model, epoch + 1)

        callbacks.append(EpochCheckpoint())
    if hooks.tensorboard_dir is not None:  # `tensorboard --logdir artifacts/runs` shows every run
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(hooks.tensorboard_dir), write_graph=False))
    return callbacks


def image_datasets(config: TrainConfig, data: PreparedData, initial_epoch: int = 0) -> tuple[Any, Any, int]:
    """The shuffled (and optionally augmented) training set, the validation set (None without one) and the
    training steps per epoch. A run resumed at `initial_epoch` shuffles from another seed: replaying the
    first epochs' exact batches and dropout masks on a model that has learnt them reads as accuracy 1.0."""
    steps, drop_remainder = training_steps(len(data.images["train"]), config.batch_size)
    weights = sample_weights(config, data.labels["train"], data.patients("train"))
    train = make_dataset(
        data.images["train"],
        data.labels["train"],
        config.batch_size,
        True,
        config.seed + initial_epoch,
        config.augment,
        drop_remainder,
        weights,
        config.augment_strength,
    )
    validation = (
        make_dataset(data.images["val"], data.labels["val"], config.batch_size, False, config.seed)
        if len(data.images["val"])
        else None
    )
    return train, validation, steps


def fit_full(
    model: Any,
    config: TrainConfig,
    data: PreparedData,
    hooks: FitHooks,
    initial_epoch: int,
    jit_compile: bool = False,
    extra_callbacks: tuple[Any, ...] = (),
) -> None:
    """Train the whole network; resumes at `initial_epoch` from a checkpointed (compiled) model. `extra_callbacks`
    run after the run's own (the one-pass grid's cells)."""
    train, validation, steps = image_datasets(config, data, initial_epoch)
    if initial_epoch == 0:
        model.compile(
            optimizer=optimizer(config, steps * config.epochs), loss=LOSS, metrics=["accuracy"], jit_compile=jit_compile
        )
    callbacks = [*_callbacks(hooks, progress_callback(hooks, config.epochs, steps), checkpoints=True), *extra_callbacks]
    model.fit(
        train,
        validation_data=validation,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=keras_verbosity(),
    )


def fit_fast(
    model: Any, config: TrainConfig, data: PreparedData, hooks: FitHooks, weights_used: str, jit_compile: bool = False
) -> None:
    """Fast mode: pooled backbone features computed once (and cached), standardised, then the head trained on
    them; with `augment`, on the features of the training images and of `augment_passes` augmented copies."""

    every = dataset_features(model, config, data, hooks.report, weights_used)
    features = {subset: every[data.subset_mask(subset)] for subset in ("train", "val")}
    train_labels, train_patients = data.labels["train"], data.patients("train")
    if config.augment:
        passes = dataset_features(model, config, data, hooks.report, weights_used, "augmented")
        extra = passes.reshape(config.augment_passes, len(every), -1)[:, data.subset_mask("train")]
        features["train"] = np.concatenate([features["train"], extra.reshape(-1, every.shape[-1])])
        train_labels = np.tile(train_labels, 1 + config.augment_passes)
        train_patients = np.tile(train_patients, 1 + config.augment_passes)
    adapt_feature_norm(model, features["train"])
    head = head_model(model)
    steps = training_steps(len(features["train"]), config.batch_size)[0]
    head.compile(
        optimizer=optimizer(config, steps * config.epochs), loss=LOSS, metrics=["accuracy"], jit_compile=jit_compile
    )
    total_epochs = config.epochs + (config.fine_tune_epochs if config.fine_tune_blocks else 0)
    train_features = feature_dataset(
        features["train"],
        train_labels,
        config.batch_size,
        config.seed,
        sample_weights(config, train_labels, train_patients),
    )
    validation = (
        feature_dataset(features["val"], data.labels["val"], config.batch_size) if len(features["val"]) else None
    )
    head.fit(
        train_features,
        validation_data=validation,
        epochs=config.epochs,
        shuffle=False,
        verbose=keras_verbosity(),
        callbacks=_callbacks(hooks, progress_callback(hooks, total_epochs, steps, phase="training head")),
    )
    if config.fine_tune_blocks and config.fine_tune_epochs:
        unfreeze_top_blocks(model, config.fine_tune_blocks)
        train, validation_set, image_steps = image_datasets(config, data)
        model.compile(
            optimizer=optimizer(config, image_steps * config.fine_tune_epochs, config.learning_rate / 10),
            loss=LOSS,
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
        model.fit(
            train,
            validation_data=validation_set,
            epochs=config.fine_tune_epochs,
            shuffle=False,
            verbose=keras_verbosity(),
            callbacks=_callbacks(
                hooks,
                progress_callback(hooks, total_epochs, image_steps, epoch_offset=config.epochs, phase="fine-tuning"),
            ),
        )
