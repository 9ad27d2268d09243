"""Nested patient cross-validation of frozen-feature candidates beside the constant answer and the shortcut
baselines, with stress tests: every choice (a candidate's regularisation) is made on inner folds of the outer
training patients only; each outer fold's test patients are touched once, by the model chosen without them. The
outer folds are `crossval`'s (same folds and seed), so a fine-tuned recipe's cross-validation joins the same table.

Per candidate: the mean of the outer folds' ROC AUC and balanced accuracy (the cross-validation figure), the
patient-bootstrap interval of the pooled out-of-fold predictions (labelled pooled), the ROC AUC of the same test
cells zoomed to the other class's size, recoloured to its colour and blurred, and the paired difference to the
logistic regression on the same features, fold by fold. With an other-subject check: every candidate fit on every
cell, scored on the check's cells beside the same regression, and placed under the selection rule (`rule`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import CELL_AREA, ClaheSettings
from ..data.cache import cache_key, cached_array
from ..data.decode import read_image
from ..data.layouts import scan_dataset
from ..data.perturb import PERTURBATION_VERSION, perturbed_copy
from ..data.preprocess import preprocess, zoom_cell
from ..data.shortcuts import (
    DESCRIBED,
    STRESSES,
    describe,
    describe_files,
    fold_scores,
    fold_statistics,
    stressed,
)
from ..data.splits import cross_validation_folds
from ..evaluation.intervals import format_interval, patient_bootstrap
from ..evaluation.other_subjects import check_section
from ..inference.batches import extract_features
from ..models.model import backbone_fingerprint, build_model
from .candidates import (
    CANDIDATES,
    NEEDS,
    PERTURBED,
    PERTURBED_AS_IMAGED,
    RANDOM_ZOOM,
    REFERENCE,
    SIZE_NORMALISED,
    TEST_VIEWS,
    VIEWS,
    ZOOM_RANGE,
    CellTable,
)
from .features import FEATURE_CODE_VERSION
from .rule import KINDS, RULE, choose, gate

REFERENCE_NAME = "logistic regression (C = 1) on the backbone's features of the cells as imaged, fit on the same cells"

SEED = 42
"""The outer folds' seed: `crossval --seed`'s default, so the outer folds are the very folds of `crossval --folds K`
(a fine-tuned recipe's runs are scored on the same patients as the frozen candidates)."""


def nested_cross_validation(
    table: CellTable, folds: int = 3, seed: int = SEED, heads: bool = False, check: CellTable | None = None
) -> dict[str, Any]:
    """Every candidate on the same outer patient folds (those of `crossval --folds folds --seed seed`): per-fold
    figures, their mean, the pooled interval, the stress tests and the paired difference to `REFERENCE`; the outer
    test patients are used once, to score. With `check` (the other-subject check's cells, the same backbones and
    views), each candidate is also fit on every cell and scores them (`check_probabilities`; the check is never
    fit on). Candidates whose view the table lacks are left out, and the Keras head unless `heads`."""
    outer = cross_validation_folds(table.labels, table.patients, folds, seed)
    results: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "test_patients": [sorted(set(table.patients[test])) for test in outer],
        "candidates": {},
        "check_probabilities": {},
    }
    every = np.arange(len(table.is_all))
    for name, fit in CANDIDATES.items():
        if not _can_score(name, table, heads):
            continue
        prob = np.zeros(len(table.is_all))
        under = {stress: np.zeros(len(table.is_all)) for stress in _stresses_of(name, table)}
        chosen = []
        for test in outer:
            train = np.setdiff1d(every, test)
            predict, choice = fit(train, table.is_all, table, table.patients)
            prob[test] = predict(table, test, None)
            for stress in under:
                under[stress][test] = predict(table, test, stress)
            chosen.append(choice)
        constant = name == "constant answer"
        stressed = {stress: fold_scores(table.is_all, values, outer)["roc_auc"] for stress, values in under.items()}
        results["candidates"][name] = _scores(table, prob, outer, constant)
        results["candidates"][name].update(choices=chosen, stressed_roc_auc={} if constant else stressed)
        if check is not None:
            predict, _ = fit(every, table.is_all, table, table.patients)
            results["check_probabilities"][name] = predict(check, np.arange(len(check.is_all)), None).tolist()
    pair_with_reference(results)
    return results


def _scores(table: CellTable, prob: np.ndarray, outer: list[np.ndarray], constant: bool = False) -> dict[str, Any]:
    """A candidate's figures from its out-of-fold P(ALL): per fold and their mean, pooled with its interval."""
    scores = _constant_scores(outer) if constant else fold_scores(table.is_all, prob, outer)
    pooled = patient_bootstrap(pd.DataFrame({"label": table.labels, "patient": table.patients, "prob_all": prob}))
    return {**scores, "pooled": pooled, "choices": [], "stressed_roc_auc": {}}


def add_scored(
    results: dict[str, Any],
    table: CellTable,
    name: str,
    prob: np.ndarray,
    check_probabilities: np.ndarray | None = None,
    **facts: Any,
) -> None:
    """A candidate scored elsewhere (a fine-tuned recipe's cross-validation on the same outer folds, `prob` its
    out-of-fold P(ALL) of every row; its final model's P(ALL) of the check's cells) added to `results`."""
    outer = cross_validation_folds(table.labels, table.patients, results["folds"], results["seed"])
    results["candidates"][name] = {**_scores(table, prob, outer), **facts}
    if check_probabilities is not None:
        results["check_probabilities"][name] = np.asarray(check_probabilities, dtype=float).tolist()
    pair_with_reference(results)


def pair_with_reference(results: dict[str, Any]) -> None:
    """Each candidate's ROC AUC minus `REFERENCE`'s, fold by fold."""
    reference = results["candidates"][REFERENCE]["roc_auc_folds"]
    for scores in results["candidates"].values():
        differences = np.asarray(scores["roc_auc_folds"]) - np.asarray(reference)
        scores["minus_reference_roc_auc"] = {
            "mean": float(differences.mean()),
            "folds": differences.tolist(),
            "better_in": int((differences > 0).sum()),
        }


def attach_check(results: dict[str, Any], cells: pd.DataFrame, data_dir: str) -> None:
    """Each candidate's `check` section (`evaluation.other_subjects`) from its P(ALL) of the check's `cells` (path,
    patient, label), paired with `REFERENCE`'s, and its place under the selection rule (`rule.gate`)."""
    probabilities = results["check_probabilities"]
    reference = np.asarray(probabilities[REFERENCE])
    for name, values in probabilities.items():
        section = check_section(cells.assign(prob_all=np.asarray(values)), reference, data_dir, REFERENCE_NAME)
        results["candidates"][name]["check"] = section
        results["candidates"][name]["gate"] = gate(section)
    results["rule"] = {"text": RULE, **{kind: choose(results["candidates"], kind) for kind in KINDS}}


def _stresses_of(name: str, table: CellTable) -> list[str]:
    """The stresses candidate `name` is scored under: those of the table, and for an ensemble those every member
    was measured under (`nested --ensemble` measures its other backbones clean, to save their stressed passes)."""
    members = [table, *table.others.values()] if "others" in NEEDS.get(name, ()) else [table]
    return [stress for stress in table.stressed_features if all(stress in m.stressed_features for m in members)]


def _can_score(name: str, table: CellTable, heads: bool) -> bool:
    """Whether the table holds what candidate `name` needs (views of every member, other backbones) and Keras may
    be used."""
    needs = NEEDS.get(name, ())
    members = [table, *table.others.values()] if "others" in needs else [table]  # an ensemble reads every member
    for need in needs:
        if need == "keras" and not heads or need == "others" and not table.others:
            return False
        if need not in ("keras", "others") and any(need not in member.views for member in members):
            return False
    return True


def _constant_scores(outer: list[np.ndarray]) -> dict[str, Any]:
    return {
        "roc_auc": 0.5,
        "balanced_accuracy": 0.5,
        "roc_auc_folds": [0.5] * len(outer),
        "balanced_accuracy_folds": [0.5] * len(outer),
        "pooled_roc_auc": 0.5,
    }


def nested_lines(results: dict[str, Any]) -> list[str]:
    """The table as text: one line per candidate, then (with a check) its check figures, then the rule's choices."""
    stresses = [
        stress for stress in STRESSES if any(stress in c["stressed_roc_auc"] for c in results["candidates"].values())
    ]
    lines = [
        f"Nested patient cross-validation, {results['folds']} outer folds (seed {results.get('seed')}; test "
        "patients: " + "; ".join(", ".join(patients) for patients in results["test_patients"]) + ")",
        "  ROC AUC and balanced accuracy: mean of the outer folds; pooled: every cell's out-of-fold P(ALL), "
        "95 % patient bootstrap; then the ROC AUC with test cells " + ", ".join(stresses),
    ]
    for name, scores in results["candidates"].items():
        pooled = scores["pooled"]["roc_auc"]
        interval = "n/a" if pooled.get("low") is None else f"{pooled['low']:.2f}-{pooled['high']:.2f}"
        stressed = "  ".join(
            f"{scores['stressed_roc_auc'][stress]:.3f}" for stress in stresses if stress in scores["stressed_roc_auc"]
        )
        paired = scores["minus_reference_roc_auc"]
        lines.append(
            f"  {name:58s} ROC AUC {scores['roc_auc']:.3f}  BA {scores['balanced_accuracy']:.3f}  "
            f"pooled {scores['pooled_roc_auc']:.3f} ({interval})  stressed {stressed or '-'}  "
            f"vs reference {paired['mean']:+.3f} (better in {paired['better_in']} of {results['folds']})"
        )
        choices = [choice.get("C") for choice in scores["choices"] if choice.get("C") is not None]
        if choices and "chosen" in name:  # an ensemble chose one C per backbone
            shown = (
                "/".join(f"{c:g}" for c in choice) if isinstance(choice, list) else f"{choice:g}" for choice in choices
            )
            lines.append(f"  {'':58s} C chosen per fold: {', '.join(shown)}")
        if "check" in scores:
            lines.append(f"  {'':58s} {check_line(scores['check'], scores['gate'])}")
    for kind, choice in (results.get("rule") or {}).items():
        if kind != "text":
            lines.append(f"The rule's choice for the {kind}: {choice['chosen'] or 'none passes the check'}")
    return lines


def check_line(section: dict[str, Any], gated: dict[str, Any]) -> str:
    """A candidate's check figures in one line, with where it fell under the rule."""
    paired = section["reference"]["paired"]["roc_auc"]
    called = section["healthy_called_all"]
    return (
        f"check: ROC AUC {format_interval(section['roc_auc'])}  BA {format_interval(section['balanced_accuracy'])}  "
        f"healthy called ALL {called['cells']} of {called['of']}  vs reference {format_interval(paired, 3)}  "
        f"{'passes' if gated['passed'] else 'fails: ' + gated['why']}"
    )


def cell_table(
    data_dir: str,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    folds: int = 3,
    seed: int = SEED,
    progress: Callable[[str], None] | None = None,
    views: tuple[str, ...] = VIEWS,
    stresses: bool = True,
) -> CellTable:
    """Features (ImageNet `backbone`, frozen, pooled) and descriptors of every labelled training cell of `data_dir`,
    clean and (with `stresses`) under each stress, and the features of each of `views`; a test cell is moved to the
    statistics of the other class on the training patients of its own outer fold, so no stress uses what its fold
    tests."""
    records = scan_dataset(data_dir).training_records()
    cells = pd.DataFrame(
        {
            "path": [str(Path(record.path).resolve()) for record in records],
            "patient": [str(record.patient) for record in records],
            "label": [record.label for record in records],
        }
    )
    return _table(cells, backbone, image_size, (folds, seed), progress, views, stresses)


def check_table(
    cells: pd.DataFrame,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    progress: Callable[[str], None] | None = None,
    views: tuple[str, ...] = TEST_VIEWS,
) -> CellTable:
    """The check's `cells` (path, patient, label) as a table of the same backbone: features as imaged and in the
    `views` a candidate scores in, descriptors; no stress (the check is scored clean)."""
    return _table(cells, backbone, image_size, None, progress, tuple(view for view in views if view in TEST_VIEWS))


def _table(
    cells: pd.DataFrame,
    backbone: str,
    image_size: int,
    stress_folds: tuple[int, int] | None,
    progress: Callable[[str], None] | None,
    views: tuple[str, ...],
    stresses: bool = True,
) -> CellTable:
    """The table of `cells`: with `stress_folds` (folds, seed), the zoom and random-zoom draws of that seed and (with
    `stresses`) stressed versions moved to the statistics of each outer fold's training patients; without, clean
    only."""
    paths, labels = cells["path"].tolist(), cells["label"].to_numpy()
    patients = cells["patient"].to_numpy().astype(str)
    is_all = labels == "ALL"
    say = progress or (lambda text: None)
    descriptors = _descriptors(paths, say)
    folds, seed = stress_folds or (0, SEED)
    statistics_of = (
        fold_statistics(descriptors, labels, cross_validation_folds(labels, patients, folds, seed))
        if stress_folds
        else None
    )
    zoom = np.exp(np.random.default_rng(seed).uniform(*np.log(ZOOM_RANGE), len(paths)))
    model, weights = build_model(backbone, image_size, "imagenet", freeze_backbone=True)
    key = {
        "paths": cache_key(paths, image_size, ClaheSettings()),
        "backbone": backbone,
        "weights": weights,
        "weights_sha256": backbone_fingerprint(model),
        "feature_code": FEATURE_CODE_VERSION,
        "seed": seed,
    }

    def version(stress: str | None, view: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        columns = list(descriptors.columns)
        stress_key = {"folds": folds} if stress else {}
        return _cell_version(
            model, {**key, **stress_key}, paths, labels, statistics_of, zoom, image_size, columns, say, stress, view
        )

    measured = STRESSES if stress_folds and stresses else ()
    features, described = version(None)
    stressed_versions = {stress: version(stress) for stress in measured}
    other_views: dict[str, dict[str | None, np.ndarray]] = {}
    for view in views:
        of_view = (None, *measured) if view == SIZE_NORMALISED else (None,)
        other_views[view] = {stress: version(stress, view)[0] for stress in of_view}
    return CellTable(
        is_all,
        patients,
        features,
        described,
        {stress: found[0] for stress, found in stressed_versions.items()},
        {stress: found[1] for stress, found in stressed_versions.items()},
        other_views,
        paths=tuple(paths),
    )


def _descriptors(paths: list[str], say: Callable[[str], None]) -> pd.DataFrame:
    """`describe_files` of the cells, cached: every backbone of an ensemble describes the same cells."""

    def compute() -> np.ndarray:
        say(f"describing {len(paths)} cells")
        return describe_files(paths)[list(DESCRIBED)].to_numpy(float)

    values, _ = cached_array(
        "descriptors", {"paths": cache_key(paths, 0, ClaheSettings()), "columns": DESCRIBED}, compute
    )
    return pd.DataFrame(values, columns=list(DESCRIBED), index=paths)


def _cell_version(
    model: Any,
    key: dict[str, Any],
    paths: list[str],
    labels: np.ndarray,
    statistics_of: np.ndarray | None,
    zoom: np.ndarray,
    image_size: int,
    columns: list[str],
    say: Callable[[str], None],
    stress: str | None,
    view: str | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Features and descriptors of every cell, under `stress` (None: clean) and in `view` (None: as imaged),
    cached."""
    clahe = ClaheSettings(cell_area=CELL_AREA if view in (SIZE_NORMALISED, PERTURBED) else 0.0)

    def image(row: int) -> np.ndarray:
        raw = read_image(paths[row])
        raw = raw if stress is None else stressed(raw, labels[row], stress, statistics_of[row])
        if view in (PERTURBED, PERTURBED_AS_IMAGED):
            return perturbed_copy(raw, key["seed"], row)
        return zoom_cell(raw, float(zoom[row])) if view == RANDOM_ZOOM else raw

    def compute() -> np.ndarray:
        say(
            f"features of {len(paths)} cells{'' if stress is None else ', ' + stress}"
            f"{'' if view is None else ', ' + view}"
        )
        with ThreadPoolExecutor(max_workers=4) as pool:
            raws = list(pool.map(image, range(len(paths))))
        found = pd.DataFrame([describe(raw) for raw in raws]).to_numpy(float)
        inputs = np.stack([preprocess(raw, image_size, clahe) for raw in raws])
        return np.concatenate([extract_features(model, inputs), found], axis=1)

    extra = {} if view is None else {"view": view, "cell_area": CELL_AREA, "zoom_range": ZOOM_RANGE}
    if view in (PERTURBED, PERTURBED_AS_IMAGED):
        extra["perturbation"] = PERTURBATION_VERSION
    both, _ = cached_array("nested", {**key, "stress": stress, **extra}, compute)
    width = both.shape[1] - len(columns)
    return both[:, :width], pd.DataFrame(both[:, width:], columns=columns)
