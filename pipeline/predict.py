"""Loading a finished run's model and predicting images with the run's own preprocessing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import ALL_INDEX, CLASS_NAMES
from .config import TrainConfig
from .data import PRELIM_SUBSET, scan_dataset
from .errors import ImageReadError, PipelineError
from .evaluate import label_from_prob, metrics_from_predictions
from .inference import class_probabilities, one_at_a_time, predict_probabilities, predictions_table
from .preprocess import decode_image, preprocess, read_image
from .runs import SPLIT, RunFolder


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: the class shown, its model output index (what an explanation must explain),
    P(ALL), the probability of the class shown, whether it averages the 8 TTA views, and the model input."""

    predicted: str
    class_index: int
    prob_all: float
    probability: float
    tta: bool
    input: np.ndarray

    @classmethod
    def from_prob_all(cls, prob_all: float, tta: bool, model_input: np.ndarray) -> Prediction:
        predicted = str(label_from_prob(np.array([prob_all]))[0])
        return cls(predicted, class_index_of(predicted), prob_all,
                   prob_all if predicted == "ALL" else 1 - prob_all, tta, model_input)


def class_index_of(label: str) -> int:
    """The model output index of a class name (ALL or HEM)."""
    return CLASS_NAMES.index(label)


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

    @one_at_a_time
    def predict_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Probability of ALL for preprocessed uint8 inputs (averaged over 8 views when the run uses TTA)."""
        return class_probabilities(self.forward, inputs, self.config.tta)[:, ALL_INDEX]

    def predict_image(self, image_rgb: np.ndarray) -> Prediction:
        return self.predict_image_input(self.prepare(image_rgb))

    def predict_image_input(self, model_input: np.ndarray) -> Prediction:
        """The prediction for one prepared model input, as the run makes it (with TTA when it uses it)."""
        prob_all = float(self.predict_inputs(np.asarray(model_input)[None])[0])
        return Prediction.from_prob_all(prob_all, self.config.tta, model_input)

    def predict_bytes(self, data: bytes, name: str) -> Prediction:
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
            rows.append({"path": str(path), "predicted": result.predicted,
                         "prob_all": round(result.prob_all, 6), "error": None})
        return pd.DataFrame(rows, columns=["path", "predicted", "prob_all", "error"])


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def drop_seen_images(table: pd.DataFrame, split: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """`table` without the images the run trained or validated on: the same path, or the same file content
    under another name (one cell can sit in two folders). Returns the rest and how many went, and why."""
    seen = split[split["subset"].isin(["train", "val"])]["path"]
    seen_paths = {str(Path(path).resolve()) for path in seen}
    same_path = table["path"].map(lambda path: str(Path(path).resolve()) in seen_paths).to_numpy()
    seen_digests = {digest for digest in map(_file_digest, seen) if digest}
    same_content = np.array([not known and _file_digest(path) in seen_digests
                             for path, known in zip(table["path"], same_path, strict=True)], dtype=bool)
    kept = table[~(same_path | same_content)].reset_index(drop=True)
    return kept, {"same_path": int(same_path.sum()), "same_content": int(same_content.sum())}


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Metrics of a run's model on its test subset again, or on the labelled images of `data_dir` (its prelim
    test set when it has one), never counting an image the run trained or validated on. Written to
    `evaluations/<name>/` of the run; returns the metrics and that folder."""
    from .cache import load_images

    folder = RunFolder(Path(run_dir))
    predictor = Predictor.from_run(run_dir)
    split = folder.split() if folder.file(SPLIT).is_file() else pd.DataFrame(columns=["path", "subset"])
    if data_dir is None:
        table = split[split["subset"] == "test"]
        subset, name = "test", "test-subset"
    else:
        dataset = scan_dataset(data_dir)
        records = [r for r in dataset.labelled if r.subset == PRELIM_SUBSET] or dataset.labelled
        if not records:
            raise PipelineError(f"{data_dir} holds no labelled image to evaluate on (unlabelled test images, or a "
                                f"prelim folder without its labels CSV).")
        table = pd.DataFrame({"path": [r.path for r in records], "patient": [r.patient for r in records],
                              "label": [r.label for r in records]})
        subset = PRELIM_SUBSET if records[0].subset == PRELIM_SUBSET else "all labelled"
        name = f"{Path(data_dir).name}-{subset}"
    if table.empty:
        raise PipelineError("No labelled images to evaluate on.")
    table, dropped = drop_seen_images(table, split)
    if table.empty:
        raise PipelineError(f"Every labelled image there was used to train or validate this run "
                            f"({dropped['same_path']} by path, {dropped['same_content']} by content): nothing is left "
                            f"to evaluate on.")
    images, failed = load_images(table["path"].tolist(), predictor.config.image_size, predictor.config.clahe)
    keep = ~table["path"].isin(failed).to_numpy()
    table = table[keep].reset_index(drop=True)
    prob_all = predict_probabilities(predictor.model, np.asarray(images)[keep], predictor.config.tta)
    predictions = predictions_table(table, prob_all)
    metrics = {**metrics_from_predictions(predictions), "subset": subset, "data_dir": str(data_dir or ""),
               "skipped_images": len(failed), "excluded_seen_images": dropped, "tta": predictor.config.tta}
    out_dir = folder.evaluation_dir(name)
    target = RunFolder(out_dir)
    target.write_predictions(predictions)
    target.write_metrics(metrics)
    return metrics, out_dir
