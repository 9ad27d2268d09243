"""Fitting a model: the paper's optimizer, callbacks that write progress and checkpoints, full fine-tune and
fast mode (head trained on cached backbone features)."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ALL_INDEX
from ..core.config import TrainConfig, default_cache_dir
from ..data.cache import cache_key, cached_array
from ..data.datasets import PreparedData, feature_dataset, make_dataset, training_steps
from ..inference.batches import PREDICT_BATCH, dihedral_views, extract_features
from ..models.model import adapt_feature_norm, backbone_fingerprint, feature_extractor, head_model, unfreeze_top_blocks
from ..runs.folder import RunFolder

LOG = logging.getLogger(__name__)


def keras_verbosity() -> int:
    """Keras' progress bar on a terminal; nothing in a log file (one line per epoch is logged instead)."""
    return 1 if sys.stdout.isatty() else 0


STATUS_INTERVAL_S = 2.0
LOSS = "sparse_categorical_crossentropy"


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
    folder: RunFolder, total_epochs: int, steps: int, epoch_offset: int = 0, phase: str = "training"
) -> Any:
    """A Keras callback writing the run's epoch, batch and history to its folder."""
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
            folder.update_status(
                phase=phase, epoch=self.epoch, epochs=total_epochs, step=0, steps=steps, progress=0.0, **changes
            )

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.monotonic() - self.last_write >= STATUS_INTERVAL_S:
                self.last_write = time.monotonic()
                folder.update_status(
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
            folder.write_history(self.rows)
            folder.update_status(epoch=self.epoch, step=steps, progress=1.0, epochs_done=self.epoch)
            figures = " ".join(
                f"{name} {value:.4f}"
                for name, value in row.items()
                if name != "epoch" and isinstance(value, float) and value == value
            )
            LOG.info("%s %s epoch %d/%d: %s", folder.run_id, phase, self.epoch, total_epochs, figures)

    return ProgressCallback()


def checkpoint_callback(folder: RunFolder) -> Any:
    """A Keras callback saving a checkpoint after each epoch."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """The whole model with its optimizer after each epoch, written atomically. Keras' BackupAndRestore
        writes its file in place, so a kill at the wrong moment leaves a backup that no longer loads."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            folder.save_checkpoint(self.model, epoch + 1)

    return EpochCheckpoint()


def tensorboard_callback(folder: RunFolder) -> Any:
    """Keras' TensorBoard logs in the run folder: `tensorboard --logdir artifacts/runs` shows every run."""
    import keras

    return keras.callbacks.TensorBoard(log_dir=str(folder.tensorboard_dir), write_graph=False)


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
    folder: RunFolder,
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
    # History first, then the checkpoint: a kill between the two never leaves a checkpoint ahead of the history.
    callbacks = [
        progress_callback(folder, config.epochs, steps),
        checkpoint_callback(folder),
        tensorboard_callback(folder),
        *extra_callbacks,
    ]
    model.fit(
        train,
        validation_data=validation,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=keras_verbosity(),
    )


def _augmented_features(
    model: Any, config: TrainConfig, images: np.ndarray, labels: np.ndarray, folder: RunFolder
) -> np.ndarray:
    """Pooled features of `augment_passes` augmented copies of `images`, one pass after another."""

    extractor = feature_extractor(model)
    parts = []
    for index in range(config.augment_passes):
        folder.update_status(phase=f"extracting augmented features ({index + 1}/{config.augment_passes})", progress=0.0)
        batches = make_dataset(images, labels, PREDICT_BATCH, False, config.seed + index, augment=True)
        parts.extend(np.asarray(extractor(batch, training=False)) for batch, _ in batches)
    return np.concatenate(parts)


def dataset_features(
    model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str, kind: str = "plain"
) -> np.ndarray:
    """Pooled backbone features of every image of the run, in the split's order (see `image_features`), keyed
    by all the run's images, so the folds and repeats of a cross-validation share one extraction."""
    return image_features(model, config, folder, weights_used, data.split["path"].tolist(), data.all_images, kind)


FEATURE_CODE_VERSION = 2
"""Changes whenever the code that computes features changes what it computes (pooling, views, augmentation), so
no feature cached by older code is read as if new. 2: the key holds the backbone's weights fingerprint."""


def feature_cache_key(
    model: Any, config: TrainConfig, weights_used: str, paths: list[str], kind: str
) -> dict[str, Any]:
    """What cached features depend on: the images and their preprocessing, the backbone and the very weights it
    holds (their fingerprint, not only their label), the kind of features and the feature code's version."""
    key = {
        "images": cache_key(paths, config.image_size, config.clahe),
        "backbone": config.backbone,
        "weights": weights_used,
        "weights_sha256": backbone_fingerprint(model),
        "kind": kind,
        "feature_code": FEATURE_CODE_VERSION,
    }
    if kind == "augmented":
        key.update(augment_passes=config.augment_passes, seed=config.seed)
    return key


def image_features(
    model: Any,
    config: TrainConfig,
    folder: RunFolder,
    weights_used: str,
    paths: list[str],
    images_of: Callable[[], np.ndarray],
    kind: str = "plain",
) -> np.ndarray:
    """Pooled backbone features of the images of `paths` (`images_of()` gives them, asked only when the cache
    has not): `plain`, `augmented` (the `augment_passes` passes one after another) or `views` (the 8 dihedral
    views of test-time augmentation, one after another). Cached when the backbone weights are fixed (ImageNet
    or a file); random weights change with every build and are computed afresh."""

    folder.update_status(phase=f"extracting {kind} features of {len(paths)} images", progress=0.0)

    def compute() -> np.ndarray:
        images = images_of()
        if kind == "augmented":
            return _augmented_features(model, config, images, np.zeros(len(images), np.int32), folder)
        if kind == "views":
            return np.concatenate([extract_features(model, view) for view in dihedral_views(images)])
        return extract_features(model, images, lambda fraction: folder.update_status(progress=round(fraction, 4)))

    if weights_used.startswith("none"):
        return compute()
    key = feature_cache_key(model, config, weights_used, paths, kind)
    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features


def frozen_probabilities(
    model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str, subset: str
) -> np.ndarray:
    """P(ALL) of a subset for a fast-mode model whose backbone never trained: its head on the cached features
    (of the 8 views, averaged as test-time augmentation averages them), the same figures as the whole model
    on the images. The folds of a cross-validation share one extraction of every image's views; a single run
    extracts the views of its validation and test images only."""

    mask = data.subset_mask(subset)
    if not config.tta:
        inputs = dataset_features(model, config, data, folder, weights_used)[mask]
    elif config.cv_folds:
        views = dataset_features(model, config, data, folder, weights_used, "views").reshape(8, len(mask), -1)
        inputs = views[:, mask].reshape(-1, views.shape[-1])
    else:
        inputs = image_features(
            model, config, folder, weights_used, data.paths(subset), lambda: data.images[subset], "views"
        )
    probabilities = np.asarray(head_model(model).predict(inputs, batch_size=1024, verbose=0))
    if config.tta:
        probabilities = probabilities.reshape(8, mask.sum(), -1).mean(axis=0)
    return probabilities[:, ALL_INDEX]


def fit_fast(
    model: Any, config: TrainConfig, data: PreparedData, folder: RunFolder, weights_used: str, jit_compile: bool = False
) -> None:
    """Fast mode: pooled backbone features computed once (and cached), standardised, then the head trained on
    them; with `augment`, on the features of the training images and of `augment_passes` augmented copies."""

    every = dataset_features(model, config, data, folder, weights_used)
    features = {subset: every[data.subset_mask(subset)] for subset in ("train", "val")}
    train_labels, train_patients = data.labels["train"], data.patients("train")
    if config.augment:
        passes = dataset_features(model, config, data, folder, weights_used, "augmented")
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
        callbacks=[progress_callback(folder, total_epochs, steps, phase="training head"), tensorboard_callback(folder)],
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
            callbacks=[
                progress_callback(folder, total_epochs, image_steps, epoch_offset=config.epochs, phase="fine-tuning"),
                tensorboard_callback(folder),
            ],
        )
