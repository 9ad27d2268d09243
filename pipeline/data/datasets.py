"""The data a run trains on: scanned, split and preprocessed subsets, and their tf.data input pipelines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import DISPLAY_ORDER
from ..core.config import TrainConfig, default_cache_dir
from ..core.errors import PipelineError
from .cache import load_images
from .layouts import Dataset, prelim_records, scan_dataset
from .splits import SUBSETS, split_records


@dataclass
class PreparedData:
    """A run's data: the scanned data set, its split, labels and preprocessed images."""

    dataset: Dataset
    split: pd.DataFrame
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    skipped_images: dict[str, str]
    """Images that did not decode, each with the reason (the scan's own skipped files are in `dataset.skipped`)."""

    def skipped(self) -> list[tuple[str, str]]:
        """Every file of the data that was left out, with the reason: at the scan, then at decoding."""
        return [*self.dataset.skipped, *self.skipped_images.items()]

    def subset_mask(self, subset: str) -> np.ndarray:
        """Which rows of the split belong to `subset`."""
        return (self.split["subset"] == subset).to_numpy()

    def paths(self, subset: str) -> list[str]:
        """The image paths of `subset`, in split order."""
        return self.split.loc[self.subset_mask(subset), "path"].tolist()

    def all_images(self) -> np.ndarray:
        """Every image of the run in the split's order (the subsets put back together)."""
        images = np.zeros((len(self.split), *self.images["train"].shape[1:]), self.images["train"].dtype)
        for subset in SUBSETS:
            images[self.subset_mask(subset)] = self.images[subset]
        return images

    def patients(self, subset: str) -> np.ndarray:
        """The patient of each image of `subset`, in the order of `images[subset]`."""
        return self.split.loc[self.subset_mask(subset), "patient"].astype(str).to_numpy()


def check_trainable(config: TrainConfig, dataset: Dataset | None = None) -> Dataset:
    """The scanned data of `config` when a run can train on it, found before anything heavy loads: labelled
    images of both classes in the folds it uses, and no unreadable file when unreadable images fail the run. A
    `PipelineError` says what was found."""
    dataset = dataset or scan_dataset(config.data_dir)
    records = dataset.training_records(config.folds)
    counts = {label: sum(record.label == label for record in records) for label in DISPLAY_ORDER}
    if not all(counts.values()):
        unlabelled = len(dataset.records) - len(dataset.labelled)
        found = ", ".join(f"{count} {label}" for label, count in counts.items())
        found += f"; {unlabelled} unlabelled" if unlabelled else ""
        raise PipelineError(
            f"{dataset.root} holds {len(dataset.records)} image(s) ({found} to train on): a run "
            "needs labelled images of both classes (all/ and hem/ folders, or the C-NMC layout)."
        )
    if config.on_bad_image == "fail" and dataset.skipped:
        raise PipelineError(unreadable_message(dataset.skipped))
    return dataset


def unreadable_message(skipped: list[tuple[str, str]]) -> str:
    """What `on_bad_image="fail"` says: how many images did not read, and the first few with their reasons."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return (
        f"{len(skipped)} image(s) do not read, and unreadable images fail this run (on_bad_image=fail): {shown}{more}."
    )


def prepare_data(config: TrainConfig, progress: Callable[[float], None] | None = None) -> PreparedData:
    """Scan, split and preprocess (through the cache) the data of `config`; images that do not decode are left
    out with their reasons, or fail the run (`on_bad_image="fail"`)."""
    dataset = check_trainable(config)
    records = dataset.training_records(config.folds)
    if config.max_images and len(records) > config.max_images:
        chosen = np.random.default_rng(config.seed).choice(len(records), config.max_images, replace=False)
        records = [records[index] for index in sorted(chosen)]
    test_records = prelim_records(dataset) if config.split == "folds" else None
    split = split_records(
        records,
        config.split,
        config.seed,
        config.test_fraction,
        config.val_fraction,
        config.val_fold,
        test_records,
        config.cv_folds,
        config.cv_fold,
        config.validation_from,
    )
    images, failed = load_images(split["path"].tolist(), config.image_size, config.clahe, default_cache_dir(), progress)
    if failed and config.on_bad_image == "fail":
        raise PipelineError(unreadable_message(list(failed.items())))
    keep = ~split["path"].isin(list(failed)).to_numpy()
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


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment: bool = False,
    drop_remainder: bool = False,
    weights: np.ndarray | None = None,
    strength: str = "standard",
) -> Any:
    """tf.data over preprocessed uint8 images: shuffle, augment, batch as 0-255 floats, prefetch.

    `drop_remainder` drops the last, smaller batch (a training set of 2,257 images in batches of 16 would end
    with a batch of one image, which BatchNormalization cannot normalise); the shuffle changes which images
    are left out from epoch to epoch. `weights` (one per image) become Keras' sample weights; `strength`: how far
    augmentation moves a cell (`AUGMENTATIONS`)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(_slices(images, labels, weights))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda x, *rest: (tf.cast(x, tf.float32), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        dataset = dataset.map(
            lambda x, *rest: (augment_cell(x, rest[0], strength)[0], *rest), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def training_steps(images: int, batch_size: int) -> tuple[int, bool]:
    """(steps per epoch, drop the remainder) for a shuffled training set: whole batches only, unless the set
    is smaller than one batch."""
    if images < 2:
        raise PipelineError("The training subset needs at least 2 images.")
    return (images // batch_size, True) if images >= batch_size else (1, False)


def _slices(inputs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> tuple:
    if weights is None:
        return inputs, labels
    return inputs, labels, np.asarray(weights, np.float32)


def feature_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int | None = None,
    weights: np.ndarray | None = None,
) -> Any:
    """tf.data over cached features, held in memory; shuffled each epoch (whole batches only) when a seed is
    given; `weights` become Keras' sample weights."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(_slices(features, labels, weights)).cache()
    drop_remainder = False
    if seed is not None:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
        drop_remainder = training_steps(len(features), batch_size)[1]
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class Augmentation:
    """How far a training cell may be moved: zoom of its width, shift, stain jitter (hue, saturation, brightness added,
    brightness multiplied, contrast) and a Gaussian defocus of up to `blur_sigma` px; every change is
    class-independent."""

    scale: tuple[float, float]
    shift: float
    hue: float
    saturation: tuple[float, float]
    brightness: float
    gain: tuple[float, float]
    contrast: tuple[float, float]
    blur_sigma: float


AUGMENTATIONS = {
    "standard": Augmentation((0.9, 1.1), 0.08, 0.04, (0.75, 1.25), 0.08, (1.0, 1.0), (0.8, 1.2), 0.0),
    "strong": Augmentation((0.7, 1.4), 0.08, 0.08, (0.6, 1.4), 0.0, (0.75, 1.25), (0.8, 1.2), 2.0),
}
"""`standard`: a small zoom and stain jitter. `strong`: a zoom of 0.7-1.4 (about fold 1's ALL to healthy size ratio
either way), twice the hue jitter, a wider saturation range, the cell's brightness multiplied by 0.75-1.25 (the
black background stays black) and a random defocus (sigma 0-2 px at the network's size)."""
BLUR_RADIUS = 4


def _defocus(x: Any, sigma: Any) -> Any:
    """`x` (height, width, 3) blurred by a Gaussian of `sigma` px (no change at 0), its edges padded by reflection."""
    import tensorflow as tf

    offsets = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / tf.maximum(sigma, 1e-3)))
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(x[None], [[0, 0], [BLUR_RADIUS] * 2, [BLUR_RADIUS] * 2, [0, 0]], mode="REFLECT")
    across = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    down = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(padded, across, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, down, [1, 1, 1, 1], "VALID")[0]


def augment_cell(image: Any, label: Any, strength: str = "standard") -> tuple[Any, Any]:
    """Augmentation that fits a segmented cell on black: any of the 8 flips and 90-degree rotations (a cell
    has no up or left), a zoom and shift, a stain jitter in hue, saturation, brightness and contrast (patients'
    smears differ in staining) and, when `strength` asks for it (`AUGMENTATIONS`), a defocus. One image, 0-255
    floats in and out; the label is kept."""
    import tensorflow as tf

    settings = AUGMENTATIONS[strength]
    size = tf.shape(image)[0]
    x = tf.image.random_flip_left_right(image / 255.0)
    x = tf.image.rot90(x, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    scaled = tf.cast(tf.cast(size, tf.float32) * tf.random.uniform([], *settings.scale), tf.int32)
    x = tf.image.resize(x, [scaled, scaled])
    margin = tf.cast(tf.cast(size, tf.float32) * settings.shift, tf.int32)
    frame = tf.maximum(size + 2 * margin, scaled)
    x = tf.image.resize_with_crop_or_pad(x, frame, frame)
    x = tf.image.random_crop(x, tf.stack([size, size, 3]))
    x = tf.image.random_hue(x, settings.hue)
    x = tf.image.random_saturation(x, *settings.saturation)
    x = tf.image.random_brightness(x, settings.brightness) if settings.brightness else x
    x = x * tf.random.uniform([], *settings.gain) if settings.gain != (1.0, 1.0) else x
    x = tf.image.random_contrast(x, *settings.contrast)
    if settings.blur_sigma:
        x = _defocus(x, tf.random.uniform([], 0.0, settings.blur_sigma))
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0, label
