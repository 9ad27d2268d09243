"""The data a run trains on: scanned, split and preprocessed subsets, and their tf.data input pipelines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .cache import load_images
from .config import TrainConfig, default_cache_dir
from .data import Dataset, prelim_records, scan_dataset, split_records
from .errors import PipelineError

SUBSETS = ("train", "val", "test")


@dataclass
class PreparedData:
    dataset: Dataset
    split: pd.DataFrame
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    skipped_images: list[str]

    def paths(self, subset: str) -> list[str]:
        return self.split.loc[self.split["subset"] == subset, "path"].tolist()


def prepare_data(config: TrainConfig, progress: Callable[[float], None] | None = None) -> PreparedData:
    """Scan, split and preprocess (through the cache) the data of `config`."""
    dataset = scan_dataset(config.data_dir)
    records = dataset.training_records(config.folds)
    if config.max_images and len(records) > config.max_images:
        chosen = np.random.default_rng(config.seed).choice(len(records), config.max_images, replace=False)
        records = [records[index] for index in sorted(chosen)]
    test_records = prelim_records(dataset) if config.split == "folds" else None
    split = split_records(records, config.split, config.seed, config.test_fraction, config.val_fraction,
                          config.val_fold, test_records)
    images, failed = load_images(split["path"].tolist(), config.image_size, config.clahe, default_cache_dir(),
                                 progress)
    keep = ~split["path"].isin(failed).to_numpy()
    split = split[keep].reset_index(drop=True)
    images = np.asarray(images)[keep]
    by_subset, labels = {}, {}
    for subset in SUBSETS:
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
