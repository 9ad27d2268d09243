"""Real cells: a recipe trained on C-NMC fold 1 and judged on patients it never saw.

`python -m bench --real` trains one patient-split run; `--crossval K --repeats R` adds a patient-level K-fold
cross-validation repeated over R seeds, with every fold's figures and the pooled out-of-fold predictions of each
repeat (ROC AUC and balanced accuracy with a patient-bootstrap 95 % interval); `--levers` measures the recipe's
steps one after another, each as that repeated cross-validation, so each step's figure comes from patients that
no choice was made on. Nothing here looks at another fold of C-NMC.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import recipe_config
from pipeline.evaluation.intervals import format_interval, patient_bootstrap
from pipeline.evaluation.metrics import Metrics
from pipeline.runs.crossval import summary_lines

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "cnmc-fold1"
FIGURES = ("balanced_accuracy", "roc_auc", "accuracy", "mcc", "patient_accuracy", "weighted_f1")
LEVERS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "lite": [
        (
            "ImageNet Lite0 features, the paper's head (Adam 1e-3, 30 epochs), class weights, TTA",
            {"validation_from": "both", "balance_patients": False, "head_l2": 0.0, "augment": False},
        ),
        (
            "+ validation from ALL patients only (both other healthy subjects train)",
            {"validation_from": "ALL", "balance_patients": False, "head_l2": 0.0, "augment": False},
        ),
        ("+ patients balanced within each class", {"balance_patients": True, "head_l2": 0.0, "augment": False}),
        ("+ L2 0.1 on the head", {"head_l2": 0.1, "augment": False}),
        ("+ L2 1.0 on the head", {"head_l2": 1.0, "augment": False}),
        ("+ cell augmentation (4 feature passes)", {"augment": True}),
    ],
}
"""Each recipe's steps: a label and the settings changed on top of the recipe (and of the steps before)."""


def _figures(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The figures this bench reports, read as cross-validation reads them, and the number of images."""
    metrics = metrics or {}
    return {**Metrics.of(metrics).figures(FIGURES), "images": metrics.get("n")}


def repeated_crossval(config: Any, folds: int, repeats: int, runs_dir: Path) -> dict[str, Any]:
    """K-fold patient cross-validation over `repeats` seeds: per fold its figures, per repeat the pooled
    out-of-fold predictions with patient-bootstrap intervals, and mean ± std over all folds."""
    from pipeline.runs.crossval import fold_table
    from pipeline.training.engines import cross_validate

    tables, pooled, start = [], [], time.perf_counter()
    for repeat in range(repeats):
        folders, _ = cross_validate(config.replace(seed=config.seed + repeat), folds, runs_dir)
        tables.append(fold_table(folders).assign(repeat=repeat))
        predictions = pd.concat([folder.predictions() for folder in folders], ignore_index=True)
        pooled.append(patient_bootstrap(predictions, seed=repeat))
    table = pd.concat(tables, ignore_index=True)
    figures = {}
    for name in ("roc_auc", "balanced_accuracy", "patient_accuracy", "weighted_f1"):
        values = pd.to_numeric(table[name], errors="coerce").dropna().to_numpy(dtype=float)
        figures[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "folds": int(len(values)),
        }
    return {
        "folds": folds,
        "repeats": repeats,
        "seconds": round(time.perf_counter() - start),
        "metrics": figures,
        "pooled": pooled,
        "per_fold": table[["repeat", "fold", "test_patients", "balanced_accuracy", "roc_auc"]]
        .replace({np.nan: None})
        .to_dict(orient="records"),
    }


def run(
    data: Path,
    runs_dir: Path,
    recipe: str = "lite",
    crossval: int = 0,
    repeats: int = 1,
    levers: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """One patient-split run, and a repeated K-fold cross-validation when asked (for every lever with `levers`)."""
    from pipeline.runs.catalog import model_card
    from pipeline.training.train import train

    config = recipe_config(recipe, str(data), **overrides)
    result: dict[str, Any] = {"data": str(data), "recipe": recipe, "config": config.to_dict()}
    if levers:
        steps, settings = [], {}
        for label, changes in LEVERS[recipe]:
            settings.update(changes)
            step = repeated_crossval(config.replace(**settings), crossval or 3, repeats, runs_dir)
            steps.append({"step": label, **step})
            print("\n".join(_crossval_lines(label, step)), flush=True)
        result["levers"] = steps
        return result
    start = time.perf_counter()
    folder = train(config, runs_dir)
    card = model_card(folder)
    metrics = folder.metrics()
    result.update(
        {
            "weights": folder.config().get("weights_used"),
            "run": folder.run_id,
            "train_seconds": round(time.perf_counter() - start),
            "held_out": card["held_out"],
            "trained_on_images": card.get("trained_on"),
            "validation": _figures(metrics.get("validation")),
            "test": _figures(metrics),
            "test_intervals": patient_bootstrap(folder.predictions()),
            "warnings": metrics.get("warnings"),
        }
    )
    if crossval:
        result["crossval"] = repeated_crossval(config, crossval, repeats, runs_dir)
    return result


def protocol_comparison(data: Path, runs_dir: Path, recipe: str = "lite", **overrides: Any) -> dict[str, Any]:
    """The paper's protocol (a random image split) beside the same recipe on a patient split: the figures the
    paper reports (accuracy, precision, recall, F1, confusion matrix) for each, so the share of a random
    split's figure that is patient leakage shows."""
    from pipeline.training.train import train

    result: dict[str, Any] = {"data": str(data), "recipe": recipe, "splits": {}}
    for split in ("image", "patient"):
        folder = train(recipe_config(recipe, str(data), split=split, **overrides), runs_dir)
        metrics = folder.metrics()
        result["splits"][split] = {
            "run": folder.run_id,
            "weights": folder.config().get("weights_used"),
            "images": metrics["n"],
            "accuracy": metrics["accuracy"],
            "roc_auc": metrics["roc_auc"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            **Metrics.of(metrics).figures(
                ("weighted_precision", "weighted_recall", "weighted_f1", "sensitivity", "specificity")
            ),
            "confusion_matrix": metrics["confusion_matrix"],
            "leaked_patients": metrics["leakage"]["train_test_patients"],
            "test_patients": int(folder.split().query("subset == 'test'")["patient"].nunique()),
            "intervals": patient_bootstrap(folder.predictions()),
        }
    return result


def _protocol_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"{result['recipe']} recipe on {result['data']}: the paper's image split beside a patient split"]
    for split, figures in result["splits"].items():
        lines.append(
            f"  {split:7s} split: {figures['images']} test images of {figures['test_patients']} patients "
            f"({figures['leaked_patients']} also in training): accuracy {figures['accuracy']:.3f}, precision "
            f"{figures['weighted_precision']:.3f}, recall {figures['weighted_recall']:.3f}, F1 "
            f"{figures['weighted_f1']:.3f} (weighted); ALL recall {figures['sensitivity']:.3f}, HEM recall "
            f"{figures['specificity']:.3f}; confusion matrix [ALL, HEM] {figures['confusion_matrix']}; "
            f"ROC AUC {format_interval(figures['intervals']['roc_auc'], 3)}"
        )
    return lines


def _crossval_lines(label: str, cv: dict[str, Any]) -> list[str]:
    lines = [f"{label}: {cv['folds']}-fold patient cross-validation x {cv['repeats']} seeds ({cv['seconds']} s)"]
    lines += [f"  {line}" for line in summary_lines(cv)]
    for repeat, pooled in enumerate(cv["pooled"]):
        lines.append(
            f"  seed +{repeat}, pooled out-of-fold: ROC AUC {format_interval(pooled['roc_auc'])}; "
            f"balanced accuracy {format_interval(pooled['balanced_accuracy'])}"
        )
    return lines


def report(result: dict[str, Any]) -> list[str]:
    """Lines of the real-cell figures (or of the split protocol's comparison)."""
    if "splits" in result:
        return _protocol_lines(result)
    if "levers" in result:
        return [line for step in result["levers"] for line in _crossval_lines(step["step"], step)]
    lines = [
        f"{result['recipe']} recipe on {result['data']} ({result['weights']}), patient split: trained in "
        f"{result['train_seconds']} s on {result['trained_on_images']} images",
        f"held out: validation {', '.join(result['held_out'].get('val', []))}; test "
        f"{', '.join(result['held_out'].get('test', []))}",
    ]
    for subset in ("validation", "test"):
        figures = result[subset]
        lines.append(
            f"{subset:10s} "
            + "  ".join(f"{name} {value:.3f}" for name, value in figures.items() if isinstance(value, float))
            + f"  ({figures['images']} images)"
        )
    intervals = result["test_intervals"]
    lines.append(
        f"test, patient bootstrap: ROC AUC {format_interval(intervals['roc_auc'])}; balanced accuracy "
        f"{format_interval(intervals['balanced_accuracy'])}"
    )
    if "crossval" in result:
        lines += _crossval_lines("cross-validation", result["crossval"])
    return lines
