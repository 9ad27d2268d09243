"""Explanations as pictures: heatmaps laid over the cell, feature maps coloured, and whole explanations of a
prediction or of image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.errors import ImageReadError
from ..core.files import save_npy_atomic, write_bytes_atomic, write_json_atomic
from ..data.decode import read_image
from ..inference.answers import class_index_of
from ..inference.predict import Predictor
from ..runs.contract import slug
from .cams import DEFAULT_LAYER, Explainer
from .maps import upsample


def explainer_of(predictor: Predictor) -> Explainer:
    """The explainer of a predictor's model; a released model's Grad-CAM is drawn against its average training cell
    (without it the linear heads' maps of ALL calls mostly lie on the background: docs/methods.md)."""
    release = predictor.release
    reference = None if release is None else release.members[0].reference
    return Explainer(predictor.model, forward=predictor.forward, reference=reference)


def member_explainers(predictor: Predictor) -> list[Explainer]:
    """The explainers of a released ensemble's networks after the first, each against its own average cell."""
    members = predictor.release.members[1:] if predictor.release is not None else []
    models = predictor.member_models() if members else []
    return [Explainer(model, reference=member.reference) for model, member in zip(models, members, strict=True)]


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """The heatmap over the image (viridis, colour-vision safe); RGB uint8 at the image's size. Each pixel's colour
    weighs `opacity` x its map value: where the map is low the image shows through unchanged, so a map that is
    flat or lies on the background reads as such instead of washing the whole picture in one colour."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    heat = np.clip(cv2.resize(np.asarray(heatmap, np.float32), (image.shape[1], image.shape[0])), 0, 1)
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32)
    alpha = (float(opacity) * heat)[:, :, None]
    return np.clip(image * (1 - alpha) + colored * alpha + 0.5, 0, 255).astype(np.uint8)


def colorize(plane: np.ndarray, size: int | None = None) -> np.ndarray:
    """A [0, 1] plane as a viridis RGB image, optionally scaled so its longer side is `size`."""
    image = cv2.cvtColor(
        cv2.applyColorMap((np.clip(plane, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB
    )
    if size:
        scale = size / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return image


def saved_row_overlay(predictor: Predictor, explainer: Explainer, path: str, predicted: str) -> np.ndarray:
    """Grad-CAM of a saved prediction (a row of a run's predictions): its image read and prepared again, the map
    for the class the run called (its test-time-augmented call, not one plain pass), laid over the model's input.
    `ImageReadError` when the image no longer reads."""
    model_input = predictor.prepare(read_image(path))
    return overlay(model_input, explainer.heatmap(model_input, "gradcam", class_index=class_index_of(predicted)))


def explain_prediction(
    explainer: Explainer, prediction: Any, method: str = "gradcam", layer: str = DEFAULT_LAYER, **options: Any
) -> np.ndarray:
    """The heatmap of `prediction` (a `predict.Prediction`) for the class it shows: with test-time augmentation
    that class can differ from what one plain forward pass would pick, and a map must explain what is shown."""
    return explainer.heatmap(prediction.input, method, layer, prediction.class_index, **options)


def averaged_gradcam(explainers: Sequence[Explainer], inputs: Sequence[np.ndarray], class_index: int) -> np.ndarray:
    """The mean of each network's Grad-CAM (at its last convolutional stage, for `class_index`, on its own input),
    each map resized to the first input's size: the map of an ensemble that averages its members' answers."""
    height, width = np.asarray(inputs[0]).shape[:2]
    maps = [
        upsample(explainer.heatmap(model_input, "gradcam", DEFAULT_LAYER, class_index), height, width)
        for explainer, model_input in zip(explainers, inputs, strict=True)
    ]
    return np.clip(np.mean(maps, axis=0), 0.0, 1.0).astype(np.float32)


def explain_files(
    run_dir: Path, paths: Sequence[Path], methods: Sequence[str], layer: str, out_dir: Path
) -> list[dict[str, Any]]:
    """For each image, `out_dir/<image name>/` gets input.npy, <method>.npy, <method>.png and <method>_road.json.
    Returns one summary row per image and method (or the read error)."""

    predictor = Predictor.from_run(run_dir)
    explainer = explainer_of(predictor)
    rows = []
    for path in paths:
        try:
            result = predictor.predict_image(read_image(path))
        except ImageReadError as error:
            rows.append({"image": str(path), "error": str(error)})
            continue
        folder = Path(out_dir) / slug(Path(path).stem)
        folder.mkdir(parents=True, exist_ok=True)
        model_input = result.input.astype(np.float32)
        save_npy_atomic(folder / "input.npy", model_input)
        for method in methods:
            heatmap = explain_prediction(explainer, result, method, layer)
            faithfulness = explainer.road(model_input, heatmap, result.class_index)
            save_npy_atomic(folder / f"{method}.npy", heatmap)
            png = cv2.imencode(".png", cv2.cvtColor(overlay(result.input, heatmap), cv2.COLOR_RGB2BGR))[1]
            write_bytes_atomic(folder / f"{method}.png", png.tobytes())
            write_json_atomic(
                folder / f"{method}_road.json",
                {
                    "method": method,
                    "computed": explainer.label(method, layer),
                    "layer": layer,
                    "predicted": result.predicted,
                    "prob_all": result.prob_all,
                    **faithfulness,
                },
            )
            rows.append(
                {
                    "image": str(path),
                    "method": method,
                    "predicted": result.predicted,
                    "prob_all": round(result.prob_all, 4),
                    "folder": str(folder),
                    "road": round(faithfulness["combined"], 4),
                    "road_random_in_cell": round(faithfulness["random_in_cell"], 4),
                }
            )
    return rows
