"""Fitting a model: the paper's optimizer, callbacks that write progress and checkpoints, full fine-tune and
fast mode (head trained on cached backbone features)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .cache import cache_key, cached_array
from .config import TrainConfig, default_cache_dir
from .datasets import PreparedData, feature_dataset, make_dataset
from .inference import extract_features
from .runs import RunFolder

STATUS_INTERVAL_S = 2.0
LOSS = "sparse_categorical_crossentropy"


def optimizer(config: TrainConfig, learning_rate: float | None = None) -> Any:
    """RMSprop with ExponentialDecay (900 steps, rate 0.95), as in the paper."""
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate or config.learning_rate, decay_steps=config.decay_steps, decay_rate=config.decay_rate)
    return keras.optimizers.RMSprop(learning_rate=schedule)


def progress_callback(folder: RunFolder, total_epochs: int, steps: int, epoch_offset: int = 0,
                      phase: str = "training") -> Any:
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Writes status.json at batch ends, at most every few seconds, and history.csv after each epoch."""

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


def checkpoint_callback(folder: RunFolder) -> Any:
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """The whole model with its optimizer after each epoch, written atomically. Keras' BackupAndRestore
        writes its file in place, so a kill at the wrong moment leaves a backup that no longer loads."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            folder.save_checkpoint(self.model, epoch + 1)

    return EpochCheckpoint()


def image_datasets(config: TrainConfig, data: PreparedData) -> tuple[Any, Any]:
    """The shuffled (and optionally augmented) training set and the validation set, or None without one."""
    train = make_dataset(data.images["train"], data.labels["train"], config.batch_size, True, config.seed,
                         config.augment)
    validation = (make_dataset(data.images["val"], data.labels["val"], config.batch_size, False, config.seed)
                  if len(data.images["val"]) else None)
    return train, validation


def fit_full(model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, initial_epoch: int) -> None:
    """Train the whole network; resumes at `initial_epoch` from a checkpointed (compiled) model."""
    if initial_epoch == 0:
        model.compile(optimizer=optimizer(config), loss=LOSS, metrics=["accuracy"])
    train, validation = image_datasets(config, data)
    steps = math.ceil(len(data.images["train"]) / config.batch_size)
    # History first, then the checkpoint: a kill between the two never leaves a checkpoint ahead of the history.
    callbacks = [progress_callback(folder, config.epochs, steps), checkpoint_callback(folder)]
    model.fit(train, validation_data=validation, epochs=config.epochs, initial_epoch=initial_epoch,
              callbacks=callbacks, shuffle=False, verbose=0)


def subset_features(model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder,
                    weights_used: str, subset: str) -> np.ndarray:
    """Pooled backbone features of a subset, cached across runs when the backbone weights are fixed
    (ImageNet or a file); random weights are computed afresh, since they change with every build."""
    folder.update_status(phase=f"extracting {subset} features", progress=0.0)

    def compute() -> np.ndarray:
        return extract_features(model, data.images[subset],
                                lambda fraction: folder.update_status(progress=round(fraction, 4)))

    if weights_used.startswith("none"):
        return compute()
    key = {"images": cache_key(data.paths(subset), config.image_size, config.clahe), "backbone": config.backbone,
           "weights": weights_used}
    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features


def fit_fast(model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str) -> None:
    """Fast mode: pooled backbone features computed once (and cached), then the head trained on them."""
    from .model import head_model, unfreeze_top_blocks

    features = {subset: subset_features(model, config, data, folder, weights_used, subset)
                for subset in ("train", "val")}
    head = head_model(model)
    head.compile(optimizer=optimizer(config), loss=LOSS, metrics=["accuracy"])
    steps = math.ceil(len(features["train"]) / config.batch_size)
    total_epochs = config.epochs + (config.fine_tune_epochs if config.fine_tune_blocks else 0)
    train_features = feature_dataset(features["train"], data.labels["train"], config.batch_size, config.seed)
    validation = (feature_dataset(features["val"], data.labels["val"], config.batch_size) if len(features["val"])
                  else None)
    head.fit(train_features, validation_data=validation, epochs=config.epochs, shuffle=False, verbose=0,
             callbacks=[progress_callback(folder, total_epochs, steps, phase="training head")])
    if config.fine_tune_blocks and config.fine_tune_epochs:
        unfreeze_top_blocks(model, config.fine_tune_blocks)
        model.compile(optimizer=optimizer(config, config.learning_rate / 10), loss=LOSS, metrics=["accuracy"])
        train, validation_set = image_datasets(config, data)
        model.fit(train, validation_data=validation_set, epochs=config.fine_tune_epochs, shuffle=False, verbose=0,
                  callbacks=[progress_callback(folder, total_epochs, steps, epoch_offset=config.epochs,
                                               phase="fine-tuning")])
