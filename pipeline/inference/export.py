"""Taking a model away: a run's model as a TensorFlow SavedModel or a TFLite file, with its card (settings,
data, metrics, the preprocessing to apply) and a check that it gives the run's probabilities.

ONNX is left out: tf2onnx, the converter of the ecosystem, pins protobuf 3.20 while TensorFlow 2.21 needs
protobuf 6.31 or newer, so the two cannot be installed together.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import ALL_INDEX, CLASS_NAMES
from ..core.errors import PipelineError
from ..core.files import atomic_write, write_json_atomic
from ..evaluation.evaluate import fitted_temperature
from ..evaluation.intervals import NAMES, format_interval, interval_line
from ..models.model import load_model
from ..runs.catalog import model_card
from ..runs.display import final_sentence
from ..runs.folder import RunFolder
from .export_check import exported_probabilities, reference_probabilities

FORMATS = ("savedmodel", "tflite")
UNSUPPORTED = {
    "onnx": "tf2onnx pins protobuf 3.20 and TensorFlow 2.21 needs protobuf 6.31 or newer: they cannot be "
    "installed together. Export a SavedModel and convert it where tf2onnx runs."
}
TOLERANCE = 1e-4
"""Largest difference in P(ALL) allowed between the exported model and the run's model."""


def export_card(folder: RunFolder, fmt: str) -> dict[str, Any]:
    """What goes with an exported model: how to feed it and what it was measured to do."""
    config = folder.config()
    card = model_card(folder)
    temperature = fitted_temperature(folder.metrics())
    fitted_on = ((folder.metrics() or {}).get("temperature_scaling") or {}).get("fitted_on", "validation")
    meaning = "softmax probabilities" + (
        f", rescaled inside the model by temperature {temperature:.3f} (fitted on {fitted_on})" if temperature else ""
    )
    return {
        "format": fmt,
        "run_id": folder.run_id,
        "backbone": config.get("backbone"),
        "input": {
            "shape": [None, config["image_size"], config["image_size"], 3],
            "dtype": "float32",
            "range": "0-255 RGB (the network rescales its own input)",
        },
        "output": {"shape": [None, 2], "classes": list(CLASS_NAMES), "meaning": meaning},
        "preprocessing": {
            "resize": f"{config['image_size']}x{config['image_size']} (OpenCV, INTER_AREA when "
            "shrinking, INTER_CUBIC when enlarging)",
            "clahe": {**config.get("clahe", {}), "on": "L channel of LAB (OpenCV)"},
            "test_time_augmentation": "inside the exported model: it averages the 8 flips and "
            "90-degree rotations itself"
            if config.get("tta")
            else "none",
        },
        "weights": card["weights"],
        "data": card["data"],
        "data_dir": card["data_dir"],
        "split": card["split"],
        "held_out_patients": card["held_out"],
        "test_metrics": card["test"],
        "out_of_fold": card.get("out_of_fold"),  # a final model: test_metrics are its folds', pooled
        "warnings": card["warnings"],
        "training": {
            key: config.get(key)
            for key in ("epochs", "batch_size", "learning_rate", "optimizer", "augment", "class_weight", "seed")
        },
    }


def readme_card(folder: RunFolder, card: dict[str, Any]) -> str:
    """The export's README.md: a model card in the Hugging Face format (YAML front matter: licence, library, data
    set, metrics with their intervals), then its intended use, data, figures, preprocessing, citation and the code
    and library versions that made it."""
    config, run = folder.config(), model_card(folder)
    intervals = run.get("intervals") or {}
    metrics = [
        {
            "type": name,
            "value": round(figure["value"], 4),
            "name": f"{NAMES[name]} ({format_interval(figure).split(', ', 1)[1]}, patient bootstrap)",
        }
        for name, figure in intervals.items()
        if name in NAMES and figure.get("value") is not None
    ]
    real = not str(config.get("data_kind", "")).startswith("synthetic")
    held_out = card["held_out_patients"]
    scored = "every patient, out of fold" if run.get("out_of_fold") else None
    front = _front_matter(folder.run_id, metrics, real, held_out, scored)
    lines = ["---"] + [f"{key}: {json.dumps(value)}" for key, value in front.items()] + ["---", ""]
    warnings = "".join(f"- {warning}\n" for warning in card["warnings"]) or "- none\n"
    lines += [
        f"# {card['backbone']} at {config['image_size']} px: ALL vs HEM ({folder.run_id})",
        "",
        "**Intended use: research on the C-NMC 2019 data, not diagnosis.** This model must never guide the care of a "
        "patient. It classifies one segmented white-blood-cell image as ALL (leukemic blast) or HEM (normal).",
        "",
        "## Training data and held-out patients",
        "",
        f"{'Real C-NMC 2019 cells' if real else 'Synthetic cells (not clinical images)'}; split {card['split']}; "
        f"{_held_out(run)} Weights: {card['weights']}.",
        "",
        "## Figures out of fold (every patient)" if run.get("out_of_fold") else "## Figures on the test patients",
        "",
        (interval_line(intervals) or "No interval (the test subset lacks a class).") + ".",
        "",
        "Warnings:",
        "",
        warnings,
        "## How to feed it",
        "",
        f"RGB, 0-255 floats, {config['image_size']}x{config['image_size']}: resize (OpenCV), then CLAHE on the L "
        f"channel of LAB ({json.dumps(config.get('clahe', {}))}). Output: softmax over {list(CLASS_NAMES)}. "
        f"Test-time augmentation in the run: {card['preprocessing']['test_time_augmentation']}.",
        "",
        "## Data set attribution and citation",
        "",
        "C-NMC 2019 (ISBI 2019 challenge), The Cancer Imaging Archive, CC BY 3.0: Gupta, A., & Gupta, R. (2019). "
        "ALL Challenge dataset of ISBI 2019 [Data set]. https://doi.org/10.7937/tcia.2019.dc64i46r. The method "
        "reproduces Fata & Hapsari (2026), EfficientNet-B3 transfer learning; cite the software with its "
        "CITATION.cff.",
        "",
        "## Made by",
        "",
        f"all-hem-dashboard, code version {config.get('git_commit') or 'unknown'}; Python {config.get('python')}, "
        f"TensorFlow {config.get('tensorflow_version')}, Keras {config.get('keras_version')}.",
        "",
    ]
    return "\n".join(lines)


def _held_out(run: dict[str, Any]) -> str:
    """Whom the run's model never saw: its validation and test patients, or (a final model) nobody."""
    if run.get("out_of_fold"):
        sentence = final_sentence(run["out_of_fold"])
        return sentence[0].lower() + sentence[1:]
    held_out = run["held_out"]
    return (
        f"validation patients {', '.join(held_out.get('val', [])) or 'none'}; test patients "
        f"{', '.join(held_out.get('test', [])) or 'none'}."
    )


def _front_matter(
    run_id: str, metrics: list[dict[str, Any]], real: bool, held_out: dict[str, Any], scored: str | None = None
) -> dict[str, Any]:
    """The Hugging Face card's YAML front matter: licence, library, tags, data set, metrics with intervals."""
    return {
        "license": "apache-2.0",
        "library_name": "keras",
        "tags": [
            "image-classification",
            "medical-imaging",
            "acute-lymphoblastic-leukemia",
            "c-nmc-2019",
            "efficientnet",
            "research-only",
        ],
        "datasets": ["c-nmc-2019"] if real else [],
        "metrics": [metric["type"] for metric in metrics],
        "model-index": [
            {
                "name": run_id,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "ALL vs HEM single-cell classification"},
                        "dataset": {
                            "name": f"{'C-NMC 2019' if real else 'synthetic'}: "
                            + (scored or f"test patients {', '.join(held_out.get('test', [])) or 'none'}"),
                            "type": "c-nmc-2019",
                        },
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }


def with_test_time_augmentation(model: Any) -> Any:
    """`model` wrapped to average its softmax over the 8 flips and 90-degree rotations of its input, as the run's
    figures were computed, so the exported model reproduces its card."""
    import keras
    from keras import ops

    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    views = []
    for flipped in (inputs, ops.flip(inputs, axis=2)):
        view = flipped
        for _ in range(4):
            views.append(model(view))
            view = ops.flip(ops.transpose(view, (0, 2, 1, 3)), axis=1)  # the next 90-degree rotation
    outputs = ops.mean(ops.stack(views, axis=0), axis=0)
    return keras.Model(inputs, outputs, name=f"{model.name}_tta")


def with_temperature_scaling(model: Any, temperature: float) -> Any:
    """`model` with its class probabilities rescaled by the run's fitted temperature: softmax(log p / T), which
    for two classes is sigmoid(logit(P(ALL)) / T), as the run's figures were computed."""
    import keras
    from keras import ops

    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    probabilities = ops.clip(model(inputs), 1e-7, 1 - 1e-7)
    outputs = ops.softmax(ops.log(probabilities) / temperature, axis=-1)
    return keras.Model(inputs, outputs, name=f"{model.name}_t")


def export_run(run_dir: str | Path, fmt: str) -> Path:
    """`exports/<run_id>-<fmt>.zip` in the run folder: the model (`saved_model/` or `model.tflite`) and
    `model_card.json`, whose `check` records how far the exported probabilities are from the run's on its first
    test images. Refused above `TOLERANCE`."""
    import tensorflow as tf

    if fmt in UNSUPPORTED:
        raise PipelineError(f"No {fmt} export: {UNSUPPORTED[fmt]}")
    if fmt not in FORMATS:
        raise PipelineError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    folder = RunFolder(Path(run_dir))
    config = folder.config()
    model = load_model(folder.model_path)
    if config.get("tta"):
        model = with_test_time_augmentation(model)
    temperature = fitted_temperature(folder.metrics())
    if temperature:
        model = with_temperature_scaling(model, temperature)
    work = folder.exports_dir() / f".{fmt}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        model.export(str(work / "saved_model"), format="tf_saved_model", verbose=False)
        if fmt == "tflite":
            tflite = tf.lite.TFLiteConverter.from_saved_model(str(work / "saved_model")).convert()
            shutil.rmtree(work / "saved_model")
            (work / "model.tflite").write_bytes(tflite)
        exported = work / ("saved_model" if fmt == "savedmodel" else "model.tflite")
        images, saved, against = reference_probabilities(folder, model)
        exported_all = exported_probabilities(exported, fmt, images)[:, ALL_INDEX] if len(images) else saved
        difference = float(np.abs(exported_all - saved).max()) if len(images) else None
        if difference is not None and difference > TOLERANCE:
            raise PipelineError(
                f"The {fmt} export differs from {against} by "
                f"{difference:.2e} (more than {TOLERANCE:.0e}); it was not kept."
            )
        card = {
            **export_card(folder, fmt),
            "check": {
                "images": int(len(images)),
                "max_abs_difference": difference,
                "tolerance": TOLERANCE,
                "against": against,
                "test_time_augmentation_inside": bool(config.get("tta")),
                "temperature_inside": temperature,
            },
        }
        write_json_atomic(work / "model_card.json", card)
        (work / "README.md").write_text(readme_card(folder, card))
        target = folder.exports_dir() / f"{folder.run_id}-{fmt}.zip"
        atomic_write(target, lambda tmp: _zip(work, tmp))
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _zip(source: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source))
