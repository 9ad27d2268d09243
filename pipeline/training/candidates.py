"""The candidates of nested patient cross-validation, each a function that fits on training cells and scores others:
the constant answer, descriptor baselines, logistic regression on features (C chosen on inner folds or fixed, trained
also on augmented copies, patients weighed equally, subjects' directions removed, two views side by side), ensembles
over backbones, the product's Keras head; `CANDIDATES` names them, `NEEDS` says which views of the cells (`VIEWS`) each
needs (`rule.kind_of` says what the product would serve of each)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data.shortcuts import (
    BASELINES,
    fold_scores,
    linear_model,
    patient_folds,
)
from .feature_transforms import patient_weights, subject_directions, without_directions

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The logistic regression's inverse regularisation strengths the inner folds choose among."""
FIXED_C = 1.0
"""The regularisation of the untuned logistic regression: chosen before looking (scikit-learn's default)."""
INNER_FOLDS = 2


@dataclass(frozen=True)
class CellTable:
    """Everything nested cross-validation reads, one row per cell: class, patient, backbone features and simple
    descriptors, clean and under each stress (the same cells, the same order)."""

    is_all: np.ndarray
    patients: np.ndarray
    features: np.ndarray
    descriptors: pd.DataFrame
    stressed_features: dict[str, np.ndarray]
    stressed_descriptors: dict[str, pd.DataFrame]
    views: dict[str, dict[str | None, np.ndarray]] = field(default_factory=dict)
    """Features of other views of the same cells (`VIEWS`): view -> stress (None: clean) -> features."""
    others: dict[str, CellTable] = field(default_factory=dict)
    """The same cells (same order, stresses and views) through other backbones, by name: an ensemble's members."""
    paths: tuple[str, ...] = ()
    """The cells' files (absolute), in row order: how a fine-tuned recipe's predictions find their rows."""

    @property
    def labels(self) -> np.ndarray:
        """Each cell's class name (ALL or HEM)."""
        return np.where(self.is_all, "ALL", "HEM")

    def features_of(self, view: str | tuple[str | None, ...] | None, stress: str | None) -> np.ndarray:
        """Features of every cell in `view` (None: as imaged; a tuple: those views side by side), clean or under
        `stress`."""
        if isinstance(view, tuple):
            return np.concatenate([self.features_of(part, stress) for part in view], axis=1)
        if view is None:
            return self.features if stress is None else self.stressed_features[stress]
        return self.views[view][stress]


Predict = Callable[[CellTable, np.ndarray, "str | None"], np.ndarray]
"""A fitted candidate: P(ALL) of rows of a table (the one it was fit on, or another of the same backbones and views:
the check's cells), clean or under a stress."""


def _constant(
    train: np.ndarray,
    is_all: np.ndarray,
    table: CellTable,
    patients: np.ndarray,
) -> tuple[Predict, dict[str, Any]]:
    majority = float(is_all[train].mean() >= 0.5)  # the best constant answer: the training majority, every time
    return (lambda source, rows, stress: np.full(len(rows), majority)), {}


def _descriptor_model(columns: tuple[str, ...]) -> Callable[..., Any]:
    def fit(train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray) -> tuple[Predict, dict]:
        model = linear_model().fit(table.descriptors[list(columns)].to_numpy(float)[train], is_all[train])

        def predict(source: CellTable, rows: np.ndarray, stress: str | None) -> np.ndarray:
            described = source.descriptors if stress is None else source.stressed_descriptors[stress]
            return model.predict_proba(described[list(columns)].to_numpy(float)[rows])[:, 1]

        return predict, {}

    return fit


def _feature_model(
    c: float | None,
    view: str | tuple[str | None, ...] | None = None,
    augment: str | None = None,
    balance_patients: bool = False,
    remove_subjects: bool = False,
) -> Callable[..., Any]:
    """A logistic regression on the backbone's features: with `c` fixed, or (None) chosen on inner patient folds
    of the training rows by mean ROC AUC; on the features of `view` (None: cells as imaged; a tuple: views side by
    side), trained also on the rows of the `augment` view (one augmented copy of every training cell); with
    `balance_patients`, every training patient of a class weighs the same; with `remove_subjects`, the directions
    that separate the training subjects within a class are removed first (`subject_directions`)."""

    def fit(train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray) -> tuple[Predict, dict]:
        features = table.features_of(view, None)
        extra = table.features_of(augment, None) if augment else None
        chosen = (
            c
            if c is not None
            else choose_c(features[train], is_all[train], patients[train], None if extra is None else extra[train])
        )
        rows, labels, owners = features[train], is_all[train], patients[train]
        if extra is not None:
            rows, labels, owners = np.concatenate([rows, extra[train]]), np.tile(labels, 2), np.tile(owners, 2)
        prepare: Callable[[np.ndarray], np.ndarray] = lambda values: values  # noqa: E731
        if remove_subjects:
            scaler, directions = subject_directions(rows, labels, owners)
            prepare = lambda values: without_directions(values, scaler, directions)  # noqa: E731
        weights = {"logisticregression__sample_weight": patient_weights(labels, owners)} if balance_patients else {}
        model = linear_model(chosen).fit(prepare(rows), labels, **weights)

        def predict(source: CellTable, test: np.ndarray, stress: str | None) -> np.ndarray:
            return model.predict_proba(prepare(source.features_of(view, stress)[test]))[:, 1]

        return predict, {"C": chosen}

    return fit


def _ensemble_model(view: str | None = None, c: float | None = None, augment: str | None = None) -> Callable[..., Any]:
    """The mean P(ALL) of one logistic regression per backbone (this table's and `others'`), each with `c` fixed or
    (None) its C chosen on inner patient folds of the training rows, on the features of `view`, trained also on
    the rows of each member's `augment` view."""

    def fit(train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray) -> tuple[Predict, dict]:
        members = [table, *table.others.values()]
        models = [_feature_model(c, view, augment)(train, is_all, member, patients) for member in members]

        def predict(source: CellTable, test: np.ndarray, stress: str | None) -> np.ndarray:
            sources = [source, *source.others.values()]
            return np.mean(
                [member(of, test, stress) for (member, _), of in zip(models, sources, strict=True)],
                axis=0,
            )

        return predict, {"C": [choice["C"] for _, choice in models]}

    return fit


def _keras_head(view: str | None = None) -> Callable[..., Any]:
    """The product's fast-mode head (the `lite` recipe: variance-floored normalisation, BN, Dense 256, dropout,
    L2, Adam, balanced classes and patients) trained on the features of `view` (one view, no test-time
    averaging)."""

    def fit(
        train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray
    ) -> tuple[Predict, dict[str, Any]]:
        import keras

        from ..core.config import recipe_config
        from ..inference.batches import run_batches
        from ..models.model import adapt_feature_norm, compiled_forward, head
        from .fit import LOSS, sample_weights

        config = recipe_config("lite", "")
        keras.utils.set_random_seed(config.seed)
        features = table.features_of(view, None)
        inputs = keras.Input(shape=(features.shape[1],))
        model = keras.Model(inputs, head(inputs, True, config.head_l2))
        adapt_feature_norm(model, features[train])
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=LOSS)
        labels = is_all[train].astype(np.int32)  # the product's class order: ALL is 1
        model.fit(
            features[train],
            labels,
            sample_weight=sample_weights(config, labels, patients[train]),
            batch_size=config.batch_size,
            epochs=config.epochs,
            verbose=0,
            shuffle=True,
        )

        def predict(source: CellTable, test: np.ndarray, stress: str | None) -> np.ndarray:
            inputs = source.features_of(view, stress)[test].astype(np.float32)
            return run_batches(compiled_forward(model), inputs, 1024)[:, 1]

        return predict, {}

    return fit


def choose_c(features: np.ndarray, is_all: np.ndarray, patients: np.ndarray, extra: np.ndarray | None = None) -> float:
    """The C of `C_GRID` with the best mean ROC AUC over inner patient folds of these rows alone (with `extra`,
    augmented copies of the same rows, added to each inner fold's training rows)."""
    folds = patient_folds(is_all, patients, INNER_FOLDS)
    scores = {}
    for c in C_GRID:
        prob = np.zeros(len(is_all))
        for test in folds:
            train = np.setdiff1d(np.arange(len(is_all)), test)
            rows, labels = features[train], is_all[train]
            if extra is not None:
                rows, labels = np.concatenate([rows, extra[train]]), np.tile(labels, 2)
            prob[test] = linear_model(c).fit(rows, labels).predict_proba(features[test])[:, 1]
        scores[c] = fold_scores(is_all, prob, folds)["roc_auc"]
    return max(C_GRID, key=lambda c: (scores[c], c))


SIZE_NORMALISED = "size-normalised"
RANDOM_ZOOM = "random zoom"
PERTURBED = "size-normalised, perturbed"
PERTURBED_AS_IMAGED = "perturbed"
VIEWS = (SIZE_NORMALISED, RANDOM_ZOOM, PERTURBED, PERTURBED_AS_IMAGED)
"""Other views of the same cells: every cell zoomed to `CELL_AREA` (at training and at test time, so size says
nothing); one copy of every cell zoomed by a random factor in `ZOOM_RANGE` whatever its class (augmentation); one
copy of every cell rotated, flipped, stain-jittered and defocused at random (`data.perturb`), then size-normalised
(augmentation of the size-normalised cells), or as imaged (augmentation of the cells as imaged)."""
TEST_VIEWS = (SIZE_NORMALISED,)
"""The views a candidate scores cells in (the others are training copies only): all a check's cells need."""
ZOOM_RANGE = (0.75, 1.33)
"""Random zoom: a factor on the cell's width, log-uniform; its area then varies 0.56-1.77x, about the ratio of fold
1's ALL to healthy mean cell areas (1.47) either way."""


REFERENCE = "logistic regression on features, C fixed"
"""The baseline every candidate is paired with: one logistic regression (C = 1) on the backbone's features of the
cells as imaged."""
RELEASE_RECIPE = "ensemble: a logistic regression per backbone, C fixed, size-normalised cells (the release's recipe)"
CANDIDATES: dict[str, Callable[..., Any]] = {
    "constant answer": _constant,
    "cell area alone (shortcut)": _descriptor_model(BASELINES["cell area"]),
    "size, brightness, sharpness, colour (shortcuts)": _descriptor_model(BASELINES["all of these"]),
    REFERENCE: _feature_model(FIXED_C),
    "logistic regression on features, C = 0.1": _feature_model(0.1),
    "logistic regression on features, C chosen on inner folds": _feature_model(None),
    "logistic regression, C fixed, patients weighed equally": _feature_model(FIXED_C, balance_patients=True),
    "logistic regression, C fixed, within-class subject directions removed": _feature_model(
        FIXED_C, remove_subjects=True
    ),
    "logistic regression, C fixed, + random-zoom copies": _feature_model(FIXED_C, augment=RANDOM_ZOOM),
    "logistic regression, C fixed, + perturbed copies": _feature_model(FIXED_C, augment=PERTURBED_AS_IMAGED),
    "logistic regression, C fixed, as imaged and size-normalised side by side": _feature_model(
        FIXED_C, (None, SIZE_NORMALISED)
    ),
    "the product's head (lite recipe) on features": _keras_head(),
    "the product's head (lite recipe), size-normalised cells": _keras_head(SIZE_NORMALISED),
    "logistic regression, C chosen on inner folds, size-normalised cells": _feature_model(None, SIZE_NORMALISED),
    "logistic regression, C chosen on inner folds, + random-zoom copies": _feature_model(None, augment=RANDOM_ZOOM),
    "logistic regression, C fixed, size-normalised cells (one member of the release)": _feature_model(
        FIXED_C, SIZE_NORMALISED
    ),
    "logistic regression, C fixed, size-normalised cells + perturbed copies": _feature_model(
        FIXED_C, SIZE_NORMALISED, augment=PERTURBED
    ),
    "ensemble: a logistic regression per backbone, C fixed": _ensemble_model(c=FIXED_C),
    "ensemble: a logistic regression per backbone, C fixed, + perturbed copies": _ensemble_model(
        c=FIXED_C, augment=PERTURBED_AS_IMAGED
    ),
    "ensemble: a logistic regression per backbone, C chosen on inner folds": _ensemble_model(),
    RELEASE_RECIPE: _ensemble_model(SIZE_NORMALISED, FIXED_C),
    "ensemble: a logistic regression per backbone, C chosen on inner folds, size-normalised cells": _ensemble_model(
        SIZE_NORMALISED
    ),
    "ensemble: a logistic regression per backbone, C fixed, size-normalised cells + perturbed copies": (
        _ensemble_model(SIZE_NORMALISED, FIXED_C, augment=PERTURBED)
    ),
}
NEEDS: dict[str, tuple[str, ...]] = {
    "logistic regression, C fixed, + random-zoom copies": (RANDOM_ZOOM,),
    "logistic regression, C fixed, + perturbed copies": (PERTURBED_AS_IMAGED,),
    "logistic regression, C fixed, as imaged and size-normalised side by side": (SIZE_NORMALISED,),
    "the product's head (lite recipe) on features": ("keras",),
    "the product's head (lite recipe), size-normalised cells": ("keras", SIZE_NORMALISED),
    "logistic regression, C chosen on inner folds, size-normalised cells": (SIZE_NORMALISED,),
    "logistic regression, C chosen on inner folds, + random-zoom copies": (RANDOM_ZOOM,),
    "logistic regression, C fixed, size-normalised cells (one member of the release)": (SIZE_NORMALISED,),
    "logistic regression, C fixed, size-normalised cells + perturbed copies": (SIZE_NORMALISED, PERTURBED),
    "ensemble: a logistic regression per backbone, C fixed": ("others",),
    "ensemble: a logistic regression per backbone, C fixed, + perturbed copies": ("others", PERTURBED_AS_IMAGED),
    "ensemble: a logistic regression per backbone, C chosen on inner folds": ("others",),
    RELEASE_RECIPE: ("others", SIZE_NORMALISED),
    "ensemble: a logistic regression per backbone, C chosen on inner folds, size-normalised cells": (
        "others",
        SIZE_NORMALISED,
    ),
    "ensemble: a logistic regression per backbone, C fixed, size-normalised cells + perturbed copies": (
        "others",
        SIZE_NORMALISED,
        PERTURBED,
    ),
}
"""What a candidate needs beyond the as-imaged features: views of the table (of every member's table, for an
ensemble), Keras (`heads=True`), or other backbones' tables (`others`, an ensemble)."""
MEMBER_VIEWS = tuple(view for view in VIEWS if any(view in need and "others" in need for need in NEEDS.values()))
"""The views an ensemble candidate reads from its other backbones' tables (the rest are read from the first's only)."""
