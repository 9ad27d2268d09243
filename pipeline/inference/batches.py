"""Running a model over images: the one batch loop shared by evaluation, fast mode, prediction and explanations."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from .. import ALL_INDEX
from ..evaluation.evaluate import label_from_prob
from ..models.model import compiled_forward, feature_extractor

_MODEL_LOCK = threading.RLock()
_Function = TypeVar("_Function", bound=Callable[..., Any])


def one_at_a_time(function: _Function) -> _Function:
    """Run model calls of this process one after another. On a small server every call already uses all cores;
    concurrent visitors then queue for a few hundred milliseconds each instead of slowing one another down and
    holding several sets of activations in memory at once. Reentrant: a call may make others."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _MODEL_LOCK:
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


PREDICT_BATCH = 32
TTA_BATCH = 4
"""Images per call with test-time augmentation: each becomes 8 views, so a call still sees 32 inputs."""


def compiled_later(model: Any) -> Any:
    """`model` in inference mode, eager on its first call and compiled from the second: a cold server's first answer
    skips the tracing (about 0.7 s for a Lite backbone here, against 0.2-0.3 s for one eager call), later calls are
    as fast as `compiled_forward`'s."""
    compiled = compiled_forward(model)
    calls = 0

    def forward(images: Any) -> Any:
        nonlocal calls
        calls += 1
        return model(images, training=False) if calls == 1 else compiled(images)

    return forward


def run_batches(
    function: Callable[[Any], Any],
    images: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """`function` over `images` (uint8 or float, 0-255) in float32 batches; the outputs concatenated."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
        outputs.append(np.asarray(function(batch)))
        if progress:
            progress(min(1.0, (start + len(batch)) / len(images)))
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


def dihedral_views(images: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of a batch (N, H, W, C): the views test-time augmentation averages."""
    views = []
    for flipped in (images, images[:, :, ::-1]):
        views.extend(np.rot90(flipped, k, axes=(1, 2)) for k in range(4))
    return views


def averaged_over_views(forward: Callable[[Any], Any], batch: np.ndarray) -> np.ndarray:
    """Class probabilities of `batch` averaged over its 8 dihedral views, computed in one call."""
    views = np.concatenate(dihedral_views(np.asarray(batch, np.float32)))
    return np.asarray(forward(views)).reshape(8, len(batch), -1).mean(axis=0)


def class_probabilities(
    forward: Callable[[Any], Any], images: np.ndarray, tta: bool = False, batch_size: int | None = None
) -> np.ndarray:
    """Class probabilities (N, 2) of preprocessed images; with `tta`, averaged over the 8 dihedral views."""
    if tta:
        return run_batches(lambda batch: averaged_over_views(forward, batch), images, batch_size or TTA_BATCH)
    return run_batches(forward, images, batch_size or PREDICT_BATCH)


def predict_probabilities(model: Any, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """Probability of ALL for each preprocessed image (averaged over 8 views with `tta`), through one compiled
    forward pass (an eager call per batch costs more than the batch itself for small images)."""

    probabilities = class_probabilities(compiled_forward(model), images, tta)
    return probabilities[:, ALL_INDEX] if len(probabilities) else np.zeros(0, np.float32)


def extract_features(model: Any, images: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Pooled backbone features of `model` for each image (fast mode)."""

    extractor = feature_extractor(model)
    features = run_batches(compiled_forward(extractor), images, progress=progress)
    return features if len(features) else np.zeros((0, extractor.output_shape[-1]), np.float32)


def predictions_table(split: pd.DataFrame, prob_all: np.ndarray) -> pd.DataFrame:
    """path, patient, label of `split` with the predicted class and probability of ALL."""
    table = split[["path", "patient", "label"]].copy().reset_index(drop=True)
    table["predicted"] = label_from_prob(prob_all)
    table["prob_all"] = np.round(prob_all.astype(float), 6)
    return table
