"""The check of an exported model: its P(ALL) on a run's first images against the run's own. A run's saved test
predictions are its model's; a final model's (split none) are its folds', so its own Keras model answers instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import ALL_INDEX
from ..core.config import ClaheSettings
from ..data.cache import load_images
from ..evaluation.metrics import Metrics
from ..runs.folder import RunFolder

CHECK_IMAGES = 16


def reference_probabilities(folder: RunFolder, model: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(the run's first images in predictions.csv, preprocessed; the P(ALL) an export must give them; what that
    P(ALL) is). `model` is the run's model as exported (test-time augmentation and temperature inside)."""
    config = folder.config()
    predictions = folder.predictions()
    paths = predictions["path"].tolist()[:CHECK_IMAGES]
    images, failed = load_images(paths, config["image_size"], ClaheSettings(**config.get("clahe", {})))
    kept = [path not in failed for path in paths]
    images = np.asarray(images)[kept].astype(np.float32)
    if Metrics.of(folder.metrics()).out_of_fold:
        own = np.asarray(model.predict(images, verbose=0))[:, ALL_INDEX] if len(images) else np.zeros(0)
        return (
            images,
            own,
            "the P(ALL) of the run's own model on its first images (its saved predictions are its folds')",
        )
    saved = predictions["prob_all"].to_numpy(dtype=float)[:CHECK_IMAGES][kept]
    return images, saved, "the P(ALL) the run saved for its first test images (predictions.csv)"


def exported_probabilities(path: Path, fmt: str, images: np.ndarray) -> np.ndarray:
    """The class probabilities of the exported model at `path` (`savedmodel` or `tflite`) for `images`."""
    import tensorflow as tf

    if fmt == "savedmodel":
        loaded = tf.saved_model.load(str(path))  # held while it runs: its variables go with it
        return np.asarray(loaded.serve(images))
    interpreter = tf.lite.Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, images)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
