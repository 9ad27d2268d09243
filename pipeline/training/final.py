"""A final model on every patient (split `none`): its figures are the out-of-fold predictions of the completed
patient cross-validation of the same recipe (`oof_group`, in the same runs folder), each patient scored by the fold
model that held it out; one temperature is fitted on them all. The figures speak for the recipe trained without a
patient, not for this very model, which saw every patient: its metrics say so (`subset` "out_of_fold")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from ..core.config import TrainConfig
from ..core.errors import PipelineError
from ..data.splits import missing_subset_warning
from ..evaluation.evaluate import THRESHOLD, fitted_temperature, label_from_prob, with_temperature
from ..evaluation.metrics import OUT_OF_FOLD, Metrics
from ..evaluation.run_metrics import run_metrics, temperature_scaled
from ..runs.folder import RunFolder

SPLIT_SETTINGS = ("split", "cv_folds", "cv_fold", "oof_group", "name")
"""The settings a final model may differ in from its folds: which patients it trains on, and its name."""
THRESHOLDS = tuple(round(0.30 + 0.05 * step, 2) for step in range(9))
"""The thresholds a final model's out-of-fold predictions are scored at, 0.30 to 0.70 (the product calls at 0.5)."""


def final_config(config: TrainConfig, group: str) -> TrainConfig:
    """The final model of the cross-validation `group` whose folds have `config` (any fold's): the same settings on
    every patient."""
    return config.replace(split="none", cv_folds=0, cv_fold=0, oof_group=group)


def fold_runs(runs_dir: Path, group: str) -> list[RunFolder]:
    """The folds of the cross-validation `group` in `runs_dir`, by fold; refused unless every fold completed."""
    members = []
    for path in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        folder = RunFolder(path)
        try:
            config = folder.config() if path.is_dir() and folder.has_config() else {}
        except (OSError, ValueError):
            continue
        if config.get("group") == group and config.get("cv_folds"):
            members.append((config.get("cv_fold", 0), folder, config["cv_folds"]))
    if not members:
        raise PipelineError(f"No cross-validation {group!r} in {runs_dir}: run `pipeline crossval --final` instead.")
    folds = members[0][2]
    done = [folder for _, folder, _ in members if folder.status().get("state") == "completed"]
    if len(done) != folds or len(members) != folds:
        raise PipelineError(
            f"The cross-validation {group} has {len(done)} of {folds} folds completed (and {len(members)} fold runs); "
            "a final model takes its figures from all of them. Resume the others first."
        )
    return [folder for _, folder, _ in sorted(members, key=lambda member: member[0])]


def check_same_recipe(config: TrainConfig, folds: list[RunFolder]) -> None:
    """Refuse folds trained with other settings than `config` (but for `SPLIT_SETTINGS`): their figures would not
    speak for it."""
    ours = config.to_dict()
    for fold in folds:
        theirs = TrainConfig.from_dict(fold.config()).to_dict()
        differ = sorted(key for key in ours if key not in SPLIT_SETTINGS and ours[key] != theirs.get(key))
        if differ:
            raise PipelineError(
                f"The fold {fold.run_id} was trained with other settings ({', '.join(differ)}): its out-of-fold "
                "figures would not speak for this model. Train the final model with the folds' settings."
            )


def out_of_fold_predictions(folds: list[RunFolder]) -> pd.DataFrame:
    """Every fold's test predictions, its own temperature undone (P(ALL) as its model gave it)."""
    frames = []
    for fold in folds:
        table = fold.predictions()
        temperature = fitted_temperature(fold.metrics())
        if temperature:
            table = table.assign(prob_all=with_temperature(table["prob_all"].to_numpy(dtype=float), 1 / temperature))
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def check_same_images(folds: list[RunFolder], split: pd.DataFrame, group: str) -> None:
    """Refuse folds that tested other images than the final model trains on, or an image twice (compared by
    absolute path: the folds' split.csv holds them so, whatever folder they were started from)."""
    tested = pd.concat([fold.split().query("subset == 'test'")["path"] for fold in folds], ignore_index=True)
    scored, trained = set(tested), {str(Path(path).resolve()) for path in split["path"]}
    if tested.duplicated().any() or scored != trained:
        raise PipelineError(
            f"The cross-validation {group} scored other images than this run trains on ({len(trained - scored)} of "
            f"its images unscored, {len(scored - trained)} scored images not in its data, "
            f"{int(tested.duplicated().sum())} scored twice): train on the same data and settings."
        )


def _scaled(table: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the temperature's record, the predictions rescaled by it): fitted on every out-of-fold prediction."""
    record, _, scaled = temperature_scaled(table, table)
    record["fitted_on"], record["out_of_fold_images"] = "out-of-fold predictions", record.pop("validation_images")
    return record, scaled


def threshold_check(table: pd.DataFrame) -> dict[str, Any]:
    """The out-of-fold balanced accuracy at each of `THRESHOLDS` and the best of them. Every page, `predict` and
    `evaluate` call ALL at 0.5: the check says what another threshold would have given, it changes nothing."""
    scores = {
        threshold: float(balanced_accuracy_score(table["label"], label_from_prob(table["prob_all"], threshold)))
        for threshold in THRESHOLDS
    }
    best = max(scores, key=lambda threshold: (scores[threshold], -abs(threshold - THRESHOLD)))
    return {
        "used": THRESHOLD,
        "best": best,
        "balanced_accuracy": {f"{threshold:.2f}": score for threshold, score in scores.items()},
        "gain_at_best": scores[best] - scores[THRESHOLD],
    }


def _fold_means(folds: list[RunFolder]) -> dict[str, Any]:
    """The mean over the folds of each fold's own test figure (the cross-validation's headline)."""
    means = {}
    for name in ("balanced_accuracy", "roc_auc"):
        values = [Metrics.of(fold.metrics()).figure(name) for fold in folds]
        values = [value for value in values if value is not None]
        means[name] = float(np.mean(values)) if values else None
    return means


def out_of_fold_metrics(config: TrainConfig, split: pd.DataFrame, runs_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(metrics.json, predictions.csv) of a final model: the out-of-fold predictions of its cross-validation,
    rescaled by one temperature fitted on them, scored as one pooled set (every patient tested once)."""
    folds = check_final(config, runs_dir, split)
    table = out_of_fold_predictions(folds)
    scaling, table = _scaled(table)
    metrics = run_metrics(table, None, split.assign(subset="test"), config.tta, scaling)
    metrics["warnings"].remove(missing_subset_warning("validation"))  # a final model has none by design
    metrics["subset"] = OUT_OF_FOLD
    metrics["threshold_check"] = threshold_check(table)
    metrics["out_of_fold"] = {
        "group": config.oof_group,
        "folds": len(folds),
        "runs": [fold.run_id for fold in folds],
        "fold_mean": _fold_means(folds),
        "what": "each patient scored by the fold model that held it out (the same recipe, trained without that "
        "patient); the figures are pooled over the folds and speak for the recipe, not for this model, which "
        "trained on every patient",
    }
    return metrics, table


def check_final(config: TrainConfig, runs_dir: Path, split: pd.DataFrame | None = None) -> list[RunFolder]:
    """Refuse a final model whose cross-validation is not complete, of other settings or (given its `split`) of
    other images, before it trains and again when it is scored; its folds, in order."""
    folds = fold_runs(runs_dir, config.oof_group)
    check_same_recipe(config, folds)
    if split is not None:
        check_same_images(folds, split, config.oof_group)
    return folds


def out_of_fold_into(config: TrainConfig, data: Any, folder: RunFolder) -> dict[str, Any]:
    """Write a final model's out-of-fold predictions and metrics to its run folder; its metrics."""
    folder.update_status(phase="scoring out of fold")
    metrics, table = out_of_fold_metrics(config, data.split, folder.path.parent)
    folder.write_predictions(table)
    folder.write_metrics(metrics)
    return metrics
