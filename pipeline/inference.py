"""Running a model over images: the one batch loop shared by evaluation, fast mode, prediction and explanations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from . import ALL_INDEX
from .evaluate import label_from_prob

PREDICT_BATCH = 32


def run_batches(function: Callable[[Any], Any], images: np.ndarray, batch_size: int = PREDICT_BATCH,
                progress: Callable[[float], None] | None = None) -> np.ndarray:
    """`function` over `images` (uint8 or float, 0-255) in float32 batches; the outputs concatenated."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
        outputs.append(np.asarray(function(batch)))
        if progress:
            progress(min(1.0, (start + len(batch)) / len(images)))
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


def predict_probabilities(model: Any, images: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Probability of ALL for each preprocessed image."""
    probabilities = run_batches(lambda batch: model(batch, training=False), images, batch_size)
    return probabilities[:, ALL_INDEX] if len(probabilities) else np.zeros(0, np.float32)


def extract_features(model: Any, images: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Pooled backbone features of `model` for each image (fast mode)."""
    from .model import feature_extractor

    extractor = feature_extractor(model)
    features = run_batches(lambda batch: extractor(batch, training=False), images, progress=progress)
    return features if len(features) else np.zeros((0, extractor.output_shape[-1]), np.float32)


def predictions_table(split: pd.DataFrame, prob_all: np.ndarray) -> pd.DataFrame:
    """path, patient, label of `split` with the predicted class and probability of ALL."""
    table = split[["path", "patient", "label"]].copy().reset_index(drop=True)
    table["predicted"] = label_from_prob(prob_all)
    table["prob_all"] = np.round(prob_all.astype(float), 6)
    return table
