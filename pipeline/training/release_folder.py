"""A built release written as a run folder: metrics with out-of-fold intervals, head, split, predictions, config,
status and card, each written whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import (
    PROJECT_ROOT,
)
from ..core.errors import PipelineError
from ..core.files import atomic_write, write_csv_atomic, write_json_atomic
from ..evaluation.evaluate import metrics_from_predictions
from ..evaluation.intervals import patient_bootstrap
from ..evaluation.metrics import RELEASE_OUT_OF_FOLD
from ..models.release import (
    BAND_AGREEMENT,
    MAX_BYTES,
)
from ..runs.contract import HEAD, PREDICTIONS, RELEASE_CARD, SPLIT, STATUS, now_iso
from ..runs.folder import RunFolder
from ..runs.release_card import card_text


def release_metrics(
    predictions: pd.DataFrame,
    release: Any,
    choices: dict[str, Any],
    folds: int,
    fold: np.ndarray,
    first_member: np.ndarray,
) -> dict[str, Any]:
    """metrics.json of the release: out-of-fold figures with intervals, what the release chose, and for an ensemble
    its first member alone on the same folds (`first_member`: its out-of-fold P(ALL)) with the paired gain."""
    patients = predictions["patient"].to_numpy()
    metrics = {
        **metrics_from_predictions(predictions),
        "subset": RELEASE_OUT_OF_FOLD,
        "intervals": patient_bootstrap(predictions),
        "tta": False,
        "figures": "out-of-fold: every cell scored by the fold head that never saw its patient",
        "release": {
            "folds": folds,
            "temperature": release.temperature,
            **choices,
            "distance_threshold": release.distance_threshold,
            "bands": [release.band_low, release.band_high],
            "test_patients": [sorted(set(patients[fold == k])) for k in range(1, folds + 1)],
        },
    }
    if len(release.members) > 1:
        alone = patient_bootstrap(predictions.assign(prob_all=first_member))
        metrics["release"]["first_member_alone"] = {
            "backbone": release.backbone,
            **{name: figure["value"] for name, figure in alone.items()},
            "intervals": alone,
            "gain": patient_bootstrap(predictions, baseline=first_member),
        }
    return metrics


def write_release(
    out: Path,
    release: Any,
    predictions: pd.DataFrame,
    metrics: dict[str, Any],
    config: Any,
    data_dir: str,
    weights: str,
) -> RunFolder:
    """The release as a run folder: head, split, predictions, metrics, config, status and card, each written whole;
    refused when the head is over the size a commit may hold."""
    out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out)
    release.save(folder.file(HEAD))
    write_csv_atomic(folder.file(SPLIT), predictions[["path", "patient", "label"]].assign(subset="train"))
    write_csv_atomic(folder.file(PREDICTIONS), predictions)
    folder.write_metrics(metrics)
    folder.write_config(
        {
            **config.replace(data_dir=os.path.relpath(Path(data_dir).resolve(), PROJECT_ROOT)).to_dict(),
            "weights_used": weights,
            "data_kind": "real",
            "created": now_iso(),
            "images": len(predictions),
            "release": True,
            "members": [{"backbone": m.backbone, "image_size": m.image_size} for m in release.members],
        }
    )
    write_json_atomic(
        folder.file(STATUS),
        {"state": "completed", "phase": "released", "finished_at": now_iso(), "updated_at": now_iso()},
    )
    write_card(folder, release, metrics)
    if folder.file(HEAD).stat().st_size > MAX_BYTES:
        raise PipelineError(f"The head is {folder.file(HEAD).stat().st_size} bytes, over {MAX_BYTES}.")
    return folder


def write_card(folder: RunFolder, release: Any, metrics: dict[str, Any]) -> None:
    """The release's MODEL_CARD.md from its head and metrics, written whole."""
    atomic_write(
        folder.file(RELEASE_CARD), lambda target: target.write_text(card_text(folder, release, metrics, BAND_AGREEMENT))
    )


def rewrite_card(folder: RunFolder) -> None:
    """The card of a written release again, from its files (after its metrics gained a section)."""
    from ..models.release import Release

    write_card(folder, Release.load(folder.file(HEAD)), folder.metrics() or {})
