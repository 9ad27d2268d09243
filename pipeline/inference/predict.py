"""Loading a finished run's model and predicting images with the run's own preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import ALL_INDEX
from ..core.config import TrainConfig
from ..core.errors import ImageReadError, PipelineError
from ..data.decode import decode_image, read_image
from ..data.preprocess import pad_to_square, preprocess
from ..evaluation.evaluate import fitted_temperature, with_temperature
from ..models.model import compiled_forward, feature_extractor, load_model
from ..runs.contract import HEAD, PREDICTIONS
from ..runs.folder import RunFolder
from .answers import CHECK_COLUMNS, InputCheck, Prediction, PreparedImage, check_columns
from .batches import class_probabilities, compiled_later, one_at_a_time


@dataclass
class Predictor:
    """A run's model with the settings it was trained with (image size, CLAHE)."""

    model: Any
    config: TrainConfig
    run_dir: Path
    temperature: float | None = None
    """The run's fitted temperature (`temperature_scaling`), applied to every P(ALL) as to its test figures."""
    release: Any = None
    """A released model's head and input checks (`pipeline.models.release.Release`); None for a trained run."""
    patient_folds: dict[str, int] | None = None
    """A released model's patient -> fold of the head that left that patient out."""

    def __post_init__(self) -> None:
        self.forward = compiled_forward(self.model)
        self.features = compiled_later(feature_extractor(self.model)) if self.release is not None else None
        # A released ensemble's members after the primary: each with its pooled-feature network and that network's
        # compiled forward pass; their class-score models are built when first asked for.
        pooled = [member.feature_model() for member in self.release.members[1:]] if self.release is not None else []
        self.other_members = [(model, compiled_later(model)) for model in pooled]
        self._member_models: list[Any] | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        """The predictor of a run folder: its model (or release), preprocessing and temperature."""
        folder = RunFolder(Path(run_dir))
        if folder.released:
            from ..models.release import Release

            release = Release.load(folder.file(HEAD))
            return cls(
                release.keras_model(), folder.record().config, folder.path, None, release, released_folds(folder)
            )
        if not folder.has_config() and folder.has_model():
            # A bare model.keras trained elsewhere: its input size is known, the rest are the defaults.
            model = load_model(folder.model_path)
            return cls(model, TrainConfig(data_dir="", image_size=int(model.input_shape[1])), folder.path)
        try:
            config = folder.record().config
        except PipelineError as error:
            raise PipelineError(f"{run_dir} is not a readable run folder ({error}).") from error
        return cls(load_model(folder.model_path), config, folder.path, fitted_temperature(folder.metrics()))

    def prepare(self, image_rgb: np.ndarray) -> np.ndarray:
        """The model input for an RGB image: resize + CLAHE as in training, uint8."""
        return preprocess(image_rgb, self.config.image_size, self.config.clahe)

    @one_at_a_time
    def predict_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Probability of ALL for preprocessed uint8 inputs (averaged over 8 views when the run uses TTA, then
        rescaled by the run's temperature when it fitted one)."""
        return with_temperature(
            class_probabilities(self.forward, inputs, self.config.tta)[:, ALL_INDEX], self.temperature
        )

    def prepare_image(self, image_rgb: np.ndarray) -> PreparedImage:
        """What the model reads of an RGB image: its input (resize + CLAHE, as in training), and for a released model
        each other member's input at its own size and what the format check found."""
        model_input = self.prepare(image_rgb)
        if self.release is None:
            return PreparedImage(model_input)
        member_inputs = tuple(
            preprocess(image_rgb, member.image_size, self.config.clahe) for member in self.release.members[1:]
        )
        return PreparedImage(model_input, member_inputs, self.release.format.problem(pad_to_square(image_rgb)))

    def predict_image(self, image_rgb: np.ndarray, patient: str | None = None) -> Prediction:
        """The prediction for an RGB image; a released model also checks the picture and its features, and
        answers a cell of a patient it was built from with the fold head that never saw that patient."""
        return self.predict_prepared([self.prepare_image(image_rgb)], [patient])[0]

    @one_at_a_time
    def predict_prepared(self, prepared: list[PreparedImage], patients: list[str | None]) -> list[Prediction]:
        """The predictions of prepared images, in one batch per network (the inference service gathers the images of
        many visitors into one call); `patients` as for `predict_image`."""
        inputs = np.stack([item.model_input for item in prepared])
        if self.release is None:
            return [
                Prediction.from_prob_all(float(prob), self.config.tta, item.model_input)
                for prob, item in zip(self.predict_inputs(inputs), prepared, strict=True)
            ]
        members = [np.stack(inputs) for inputs in zip(*(item.member_inputs for item in prepared), strict=True)]
        features = [self.pooled_features(inputs), *self.member_features(members)]
        folds = np.array([(self.patient_folds or {}).get(str(patient), 0) if patient else 0 for patient in patients])
        prob_all = np.zeros(len(prepared))
        for fold in np.unique(folds):  # each fold's heads answer the cells of the patients they never saw
            rows = folds == fold
            prob_all[rows] = self.release.prob_all([member[rows] for member in features], int(fold))
        distances = self.release.distance(features[0])
        return [
            Prediction.from_prob_all(
                float(prob),
                False,
                item.model_input,
                InputCheck(item.problem, float(distance), self.release.distance_threshold),
                self.release.band(float(prob)),
                int(fold),
                item.member_inputs,
            )
            for prob, item, distance, fold in zip(prob_all, prepared, distances, folds, strict=True)
        ]

    @one_at_a_time
    def pooled_features(self, inputs: np.ndarray) -> np.ndarray:
        """The backbone's pooled features of prepared inputs (a released model)."""
        return np.asarray(self.features(np.asarray(inputs, np.float32)), np.float64)

    @one_at_a_time
    def member_features(self, member_inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The pooled features through each member after the primary of a batch of its inputs (one batch per
        member)."""
        return [
            np.asarray(forward(np.asarray(inputs, np.float32)))
            for inputs, (_, forward) in zip(member_inputs, self.other_members, strict=True)
        ]

    def member_models(self) -> list[Any]:
        """Each member after the primary as a Keras model (its network and its head fit on everyone, softmax over
        HEM, ALL) for its Grad-CAM; built once, on the networks that answer."""
        if self._member_models is None:
            self._member_models = [
                self.release.keras_model(index, pooled) for index, (pooled, _) in enumerate(self.other_members, start=1)
            ]
        return self._member_models

    def predict_image_input(self, model_input: np.ndarray) -> Prediction:
        """The prediction for one prepared model input, as the run makes it (with TTA when it uses it); for a
        released ensemble, the primary member's answer (what Grad-CAM explains), not the ensemble's."""
        prob_all = float(self.predict_inputs(np.asarray(model_input)[None])[0])
        band = self.release.band(prob_all) if self.release is not None else None
        return Prediction.from_prob_all(prob_all, self.config.tta, model_input, band=band)

    def predict_bytes(self, data: bytes, name: str) -> Prediction:
        """Decode uploaded bytes and predict them; a bad file raises ImageReadError naming it."""
        return self.predict_image(decode_image(data, name))

    def predict_paths(self, paths: list[str | Path]) -> pd.DataFrame:
        """One row per path: predicted class and probability of ALL, or the reason it could not be read."""
        return self.predict_sources([(str(path), "", lambda path=path: read_image(path)) for path in paths])

    def predict_sources(self, sources: list[tuple[str, str, Callable[[], np.ndarray]]]) -> pd.DataFrame:
        """One row per (name, group, image reader): class and P(ALL) (with a released model's band and input
        check), or the reason the image could not be read."""
        rows = []
        for name, group, read in sources:
            try:
                result = self.predict_image(read())
            except ImageReadError as error:
                rows.append({"path": name, "group": group, "predicted": None, "prob_all": None, "error": str(error)})
                continue
            rows.append(
                {
                    "path": name,
                    "group": group,
                    "predicted": result.predicted,
                    "prob_all": round(result.prob_all, 6),
                    "error": None,
                    **check_columns(result),
                }
            )
        columns = ["path", "group", "predicted", "prob_all", "error"]
        return pd.DataFrame(rows, columns=columns + (list(CHECK_COLUMNS) if self.release is not None else []))


def released_folds(folder: RunFolder) -> dict[str, int]:
    """patient -> fold of a release's out-of-fold predictions (empty when they do not read)."""
    try:
        table = pd.read_csv(folder.file(PREDICTIONS), usecols=["patient", "fold"], dtype={"patient": str})
        return {str(patient): int(fold) for patient, fold in zip(table["patient"], table["fold"], strict=True)}
    except (OSError, ValueError, KeyError):
        return {}
