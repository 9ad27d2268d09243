"""Loading a finished run's model and predicting images with the run's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import ALL_INDEX
from .config import TrainConfig
from .data import PRELIM_SUBSET, scan_dataset
from .errors import ImageReadError, PipelineError
from .evaluate import label_from_prob, metrics_from_predictions
from .inference import predict_probabilities, predictions_table, run_batches
from .preprocess import decode_image, preprocess, read_image
from .runs import RunFolder


@dataclass
class Predictor:
    """A run's model with the settings it was trained with (image size, CLAHE)."""

    model: Any
    config: TrainConfig
    run_dir: Path

    def __post_init__(self) -> None:
        from .model import compiled_forward

        self.forward = compiled_forward(self.model)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        from .model import load_model

        folder = RunFolder(Path(run_dir))
        if not folder.has_config() and folder.has_model():
            # A bare model.keras trained elsewhere: its input size is known, the rest are the defaults.
            model = load_model(folder.model_path)
            return cls(model, TrainConfig(data_dir="", image_size=int(model.input_shape[1])), folder.path)
        try:
            config = TrainConfig.from_dict(folder.config())
        except (OSError, ValueError) as error:
            raise PipelineError(f"{run_dir} is not a readable run folder ({error}).") from error
        return cls(load_model(folder.model_path), config, folder.path)

    def prepare(self, image_rgb: np.ndarray) -> np.ndarray:
        """The model input for an RGB image: resize + CLAHE as in training, uint8."""
        return preprocess(image_rgb, self.config.image_size, self.config.clahe)

    def predict_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Probability of ALL for preprocessed uint8 inputs."""
        return run_batches(self.forward, inputs)[:, ALL_INDEX]

    def predict_image(self, image_rgb: np.ndarray) -> dict[str, Any]:
        model_input = self.prepare(image_rgb)
        prob_all = float(self.predict_inputs(model_input[None])[0])
        predicted = str(label_from_prob(np.array([prob_all]))[0])
        return {"predicted": predicted, "prob_all": prob_all,
                "probability": prob_all if predicted == "ALL" else 1 - prob_all, "input": model_input}

    def predict_bytes(self, data: bytes, name: str) -> dict[str, Any]:
        return self.predict_image(decode_image(data, name))

    def predict_paths(self, paths: list[str | Path]) -> pd.DataFrame:
        """One row per path: predicted class and probability of ALL, or the reason it could not be read."""
        rows = []
        for path in paths:
            try:
                result = self.predict_image(read_image(path))
            except ImageReadError as error:
                rows.append({"path": str(path), "predicted": None, "prob_all": None, "error": str(error)})
                continue
            rows.append({"path": str(path), "predicted": result["predicted"],
                         "prob_all": round(result["prob_all"], 6), "error": None})
        return pd.DataFrame(rows, columns=["path", "predicted", "prob_all", "error"])


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Metrics of a run's model: on its test subset, or on the labelled images of `data_dir`
    (its prelim test set when it has one). Returns the metrics and the folder they were written to."""
    from .cache import load_images

    folder = RunFolder(Path(run_dir))
    predictor = Predictor.from_run(run_dir)
    if data_dir is None:
        table = folder.split()
        table = table[table["subset"] == "test"]
        out_dir, subset = folder.path, "test"
    else:
        dataset = scan_dataset(data_dir)
        records = [r for r in dataset.labelled if r.subset == PRELIM_SUBSET] or dataset.labelled
        table = pd.DataFrame({"path": [r.path for r in records], "patient": [r.patient for r in records],
                              "label": [r.label for r in records]})
        subset = PRELIM_SUBSET if records[0].subset == PRELIM_SUBSET else "all labelled"
        out_dir = folder.evaluation_dir(f"{Path(data_dir).name}-{subset}")
    if table.empty:
        raise PipelineError("No labelled images to evaluate on.")
    images, failed = load_images(table["path"].tolist(), predictor.config.image_size, predictor.config.clahe)
    keep = ~table["path"].isin(failed).to_numpy()
    table = table[keep].reset_index(drop=True)
    predictions = predictions_table(table, predict_probabilities(predictor.model, np.asarray(images)[keep]))
    metrics = {**metrics_from_predictions(predictions), "subset": subset, "data_dir": str(data_dir or ""),
               "skipped_images": len(failed)}
    target = RunFolder(out_dir)
    target.write_predictions(predictions)
    target.write_metrics(metrics)
    return metrics, out_dir
