"""What some candidates do to frozen features before their logistic regression: weigh patients equally, or remove
the directions along which the training subjects differ within a class."""

from __future__ import annotations

from typing import Any

import numpy as np


def patient_weights(is_all: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Sample weights under which every patient of a class weighs the same and, once the regression's balanced class
    weights are applied, both classes weigh the same; they sum to the number of cells (C keeps its meaning)."""
    weights = np.zeros(len(is_all))
    for label in (True, False):
        of_class = is_all == label
        names, counts = np.unique(patients[of_class], return_counts=True)
        per_cell = dict(zip(names, of_class.sum() / (counts * len(names)), strict=True))
        weights[of_class] = [per_cell[name] for name in patients[of_class]]
    return weights


def subject_directions(features: np.ndarray, is_all: np.ndarray, patients: np.ndarray) -> tuple[Any, np.ndarray]:
    """(the standardiser, orthonormal directions): the directions along which the training subjects' mean features
    differ *within* a class (each patient's mean minus its class's mean of patient means, standardised features),
    every one the training subjects span; removing them leaves what the subjects of a class share."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    deviations = []
    for label in (True, False):
        names = np.unique(patients[is_all == label])
        means = np.array([scaled[(patients == name) & (is_all == label)].mean(axis=0) for name in names])
        deviations.extend(means - means.mean(axis=0))
    _, singular, directions = np.linalg.svd(np.asarray(deviations), full_matrices=False)
    return scaler, directions[singular > singular.max() * 1e-6]


def without_directions(features: np.ndarray, scaler: Any, directions: np.ndarray) -> np.ndarray:
    """`features` standardised, with their components along `directions` removed."""
    scaled = scaler.transform(features)
    return scaled - (scaled @ directions.T) @ directions
