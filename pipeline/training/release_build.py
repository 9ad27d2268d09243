"""Building the released model (`python -m pipeline release`): features of every labelled cell through each member
backbone, heads fit on patient folds and on everyone, the temperature, the out-of-distribution threshold and the bands
from out-of-fold scores, written as a run folder with its card (`pipeline.models.release` is what is built)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit

from ..core.config import (
    PROJECT_ROOT,
    RELEASE_BACKBONES,
    RELEASE_CELL_AREA,
    RELEASE_DIR,
    RELEASE_PERTURBED_COPIES,
    ClaheSettings,
    TrainConfig,
    recipe_config,
)
from ..core.errors import PipelineError
from ..data.decode import read_image
from ..data.layouts import scan_dataset
from ..data.preprocess import pad_to_square
from ..evaluation.evaluate import label_from_prob
from ..models.input_checks import DistanceScore, FormatCheck, cell_shape
from ..models.lite import VARIANTS
from ..models.release import (
    BAND_AGREEMENT,
    OOD_PASS_SHARE,
    RELEASE_FOLDS,
    LinearHead,
    Member,
    Release,
    mean_probability_logit,
    member_logits,
)
from ..runs.folder import RunFolder
from .release_features import member_features
from .release_folder import release_metrics, write_release

RELEASE_C = 1.0
"""The release's regularisation, fixed before looking (scikit-learn's default), not tuned on fold 1: fold-1
cross-validation prefers strong regularisation (C = 1e-4, a choice only fold-1 CV supports), which was measured to
cost about 0.13 ROC AUC on other folds' patients with as-imaged features (docs/methods.md)."""


def release_config(data_dir: str, cell_area: float = RELEASE_CELL_AREA, image_size: int | None = None) -> TrainConfig:
    """The settings the release is built with (recipe `release`): the `lite` recipe's backbone and size (or
    `image_size`), cells size-normalised, frozen (the recipe's fine-tuning and augmentation are not the release's: its
    heads are fit on frozen features), one view (no test-time averaging: a cold demo answers in seconds)."""
    config = recipe_config(
        "lite",
        data_dir,
        clahe=ClaheSettings(cell_area=cell_area),
        tta=False,
        augment=False,
        fine_tune_blocks=0,
        fine_tune_epochs=0,
    ).replace(recipe="release")
    return config.replace(image_size=image_size) if image_size else config


def members_weights(labels: list[str]) -> str:
    """One weights label for the members: `imagenet (package 1; package 2; ...)` when every member's is ImageNet's from
    a package (the converted file's name left out), else the labels joined."""
    if len(labels) > 1 and all(label.startswith("imagenet (") for label in labels):
        return (
            "imagenet ("
            + "; ".join(label[len("imagenet (") :].split(", converted")[0].rstrip(")") for label in labels)
            + ")"
        )
    return "; ".join(dict.fromkeys(labels))


def member_configs(config: TrainConfig, backbones: tuple[str, ...], image_size: int | None = None) -> list[TrainConfig]:
    """One configuration per member backbone, each at its native size (or `image_size` for all)."""
    unknown = [name for name in backbones if name not in VARIANTS]
    if unknown or not backbones:
        raise PipelineError(
            f"A release's backbones are EfficientNet-Lite: {', '.join(VARIANTS)} (got {unknown or 'none'})."
        )
    return [config.replace(backbone=name, image_size=image_size or VARIANTS[name].native_size) for name in backbones]


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


def fold_of(is_all: np.ndarray, patients: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each cell's patient fold, numbered from 1: the folds of `crossval --folds folds --seed seed` (and of `nested`),
    so the release's out-of-fold figures stand on the same patient folds as the candidates it was chosen among."""
    from ..data.splits import cross_validation_folds

    fold = np.zeros(len(is_all), np.int64)
    for index, test in enumerate(cross_validation_folds(np.where(is_all, "ALL", "HEM"), patients, folds, seed), 1):
        fold[test] = index
    return fold


def cross_fit(
    features: list[np.ndarray],
    is_all: np.ndarray,
    patients: np.ndarray,
    shapes: np.ndarray,
    configs: list[TrainConfig],
    folds: int = RELEASE_FOLDS,
    c: float | None = RELEASE_C,
    copies: list[np.ndarray] | None = None,
) -> tuple[Release, pd.DataFrame, dict[str, Any]]:
    """The release fit on every cell, its fold heads, and every cell's out-of-fold P(ALL) and distance. `features`
    and `configs`: one per member, the primary first (its features measure the distance); `shapes`: each cell's area
    and largest-part share, for the format check. `c`: the regularisation, fixed, or (None) chosen per member on inner
    patient folds of each head's own training patients. `copies`: per member, the features of one perturbed copy of
    every cell (same order), added to each head's training rows (a fold head gets only its training cells' copies)."""
    from .candidates import choose_c

    def head(index: int, rows: np.ndarray) -> tuple[LinearHead, float]:
        member, extra = features[index], None if copies is None else copies[index][rows]
        chosen = c if c is not None else choose_c(member[rows], is_all[rows], patients[rows], extra)
        if extra is None:
            return LinearHead.fit(member[rows], is_all[rows], chosen), chosen
        return LinearHead.fit(np.concatenate([member[rows], extra]), np.tile(is_all[rows], 2), chosen), chosen

    fold = fold_of(is_all, patients, folds, configs[0].seed)
    every = np.ones(len(is_all), bool)
    fits = [
        [head(index, rows) for rows in [every, *(fold != k for k in range(1, folds + 1))]]
        for index in range(len(features))
    ]
    members = [
        Member(cfg.backbone, cfg.image_size, [h for h, _ in fit]) for cfg, fit in zip(configs, fits, strict=True)
    ]
    logits, distances, first = np.zeros(len(is_all)), np.zeros(len(is_all)), np.zeros(len(is_all))
    for k in range(1, folds + 1):
        test = fold == k
        each = member_logits(members, [member[test] for member in features], k)
        first[test], logits[test] = each[0], mean_probability_logit(each)
        distances[test] = DistanceScore.fit(features[0][~test])(features[0][test])
    temperature = fit_temperature(logits, is_all)
    prob = expit(logits / temperature)
    release = Release(
        members,
        configs[0].clahe.cell_area,
        temperature,
        DistanceScore.fit(features[0]),
        float(np.quantile(distances, OOD_PASS_SHARE)),
        FormatCheck.of(shapes[:, 0], shapes[:, 1]),
        *choose_bands(prob, is_all),
    )
    table = pd.DataFrame({"fold": fold, "prob_all": np.round(prob, 6), "distance": np.round(distances, 4)})
    table["first_member_prob_all"] = expit(first)  # the first member alone, out of fold: the baseline beside it
    choices = {
        "C_full": [fit[0][1] for fit in fits],
        "C_folds": [[chosen for _, chosen in fit[1:]] for fit in fits],
        "C_choice": "fixed" if c is not None else "inner patient folds",
        "perturbed_copies": copies is not None,
        "members": [{"backbone": m.backbone, "image_size": m.image_size} for m in members],
    }
    return release, table, choices


def _shape_of(path: str) -> tuple[float, float]:
    return cell_shape(pad_to_square(read_image(path)))


def build_release(
    data_dir: str,
    out_dir: Path = RELEASE_DIR,
    folds: int = RELEASE_FOLDS,
    cell_area: float = RELEASE_CELL_AREA,
    progress: Callable[[str], None] | None = None,
    image_size: int | None = None,
    c: float | None = RELEASE_C,
    backbones: tuple[str, ...] = RELEASE_BACKBONES,
    perturbed_copies: bool = RELEASE_PERTURBED_COPIES,
) -> RunFolder:
    """Build the release from every labelled training cell of `data_dir` and write it as a run folder: config,
    status, split (every cell trained the heads that answer uploads), out-of-fold predictions, metrics with
    patient-bootstrap intervals and the per-subject table, `head.npz` and its card. `backbones`: the members, the
    primary first, each at its native size (or `image_size`); `perturbed_copies`: each head also trains on one
    perturbed copy of every cell it trains on."""
    say = progress or (lambda text: None)
    records = scan_dataset(data_dir).training_records()
    if not records:
        raise PipelineError(f"{data_dir} holds no labelled cell to build a release from.")
    configs = member_configs(release_config(data_dir, cell_area), backbones, image_size)
    paths = [record.path for record in records]
    labels = np.array([record.label for record in records])
    patients = np.array([record.patient for record in records]).astype(str)
    computed = [
        member_features(config, paths, lambda text, name=config.backbone: say(f"{name}: {text}"), perturbed_copies)
        for config in configs
    ]
    features, weights = [each.features for each in computed], [each.weights for each in computed]
    copies = [each.copies for each in computed] if perturbed_copies else None
    say("measuring cell shapes")
    with ThreadPoolExecutor(max_workers=4) as pool:
        shapes = np.array(list(pool.map(_shape_of, paths)))
    say("cross-fitting the heads")
    release, table, choices = cross_fit(features, labels == "ALL", patients, shapes, configs, folds, c, copies)
    members = [
        replace(member, reference=each.reference) for member, each in zip(release.members, computed, strict=True)
    ]
    release = replace(release, members=members)
    shown = [os.path.relpath(Path(path).resolve(), PROJECT_ROOT) for path in paths]
    predictions = pd.DataFrame(
        {
            "path": shown,
            "patient": patients,
            "label": labels,
            "predicted": label_from_prob(table["prob_all"].to_numpy()),
            "prob_all": table["prob_all"],
            "fold": table["fold"],
            "distance": table["distance"],
            "in_distribution": table["distance"] <= release.distance_threshold,
        }
    )
    metrics = release_metrics(
        predictions, release, choices, folds, table["fold"].to_numpy(), table["first_member_prob_all"].to_numpy()
    )
    folder = write_release(Path(out_dir), release, predictions, metrics, configs[0], data_dir, members_weights(weights))
    size = sum(file.stat().st_size for file in folder.path.iterdir() if file.is_file())
    say(f"release written to {folder.path} ({size / 1e6:.2f} MB)")
    return folder
