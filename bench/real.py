"""Real cells: the from-scratch recipe trained on C-NMC fold 1 with a patient split, figures on patients it never
saw (validation and test), and optionally a patient-level cross-validation. No ImageNet weights needed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.config import recipe_config
from pipeline.crossval import FOLD_METRICS, summary_lines

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "cnmc-fold1"
FIGURES = ("balanced_accuracy", "roc_auc", "accuracy", "mcc", "patient_accuracy", "weighted_f1")


def _figures(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The figures this bench reports, read as cross-validation reads them, and the number of images."""
    metrics = metrics or {}
    return {**{name: FOLD_METRICS[name](metrics) for name in FIGURES}, "images": metrics.get("n")}


def run(data: Path, runs_dir: Path, crossval: int = 0, **overrides: Any) -> dict[str, Any]:
    """One patient-split run (and a K-fold cross-validation when asked); wall time of each."""
    from pipeline.catalog import model_card
    from pipeline.crossval import fold_table, summarize
    from pipeline.train import crossval as run_crossval
    from pipeline.train import train

    config = recipe_config("scratch", str(data), **overrides)
    start = time.perf_counter()
    folder = train(config, runs_dir)
    seconds = time.perf_counter() - start
    metrics = folder.metrics()
    card = model_card(folder)
    result: dict[str, Any] = {
        "data": str(data), "recipe": "scratch", "config": {key: getattr(config, key) for key in (
            "backbone", "image_size", "epochs", "batch_size", "learning_rate", "optimizer", "bn_momentum",
            "augment", "class_weight", "tta", "split", "seed")},
        "weights": folder.config().get("weights_used"), "run": folder.run_id, "train_seconds": round(seconds),
        "held_out": card["held_out"], "trained_on_images": card.get("trained_on"),
        "validation": _figures(metrics.get("validation")), "test": _figures(metrics),
        "warnings": metrics.get("warnings")}
    if crossval:
        start = time.perf_counter()
        folders, _ = run_crossval(config, crossval, runs_dir)
        table = fold_table(folders)
        result["crossval"] = {"folds": crossval, "seconds": round(time.perf_counter() - start),
                              **summarize(table), "per_fold": table[["fold", "test_patients", "balanced_accuracy",
                                                                     "roc_auc"]].to_dict(orient="records")}
    return result


def report(result: dict[str, Any]) -> list[str]:
    lines = [f"from-scratch recipe on {result['data']} ({result['weights']}), patient split: trained in "
             f"{result['train_seconds']} s on {result['trained_on_images']} images",
             f"held out: validation {', '.join(result['held_out'].get('val', []))}; test "
             f"{', '.join(result['held_out'].get('test', []))}"]
    for subset in ("validation", "test"):
        figures = result[subset]
        lines.append(f"{subset:10s} " + "  ".join(f"{name} {value:.3f}" for name, value in figures.items()
                                                  if isinstance(value, float)) + f"  ({figures['images']} images)")
    if "crossval" in result:
        cv = result["crossval"]
        lines.append(f"{cv['folds']}-fold patient cross-validation ({cv['seconds']} s):")
        lines += [f"  {line}" for line in summary_lines(cv, ("balanced_accuracy", "roc_auc", "weighted_f1",
                                                              "patient_accuracy"))]
    return lines
