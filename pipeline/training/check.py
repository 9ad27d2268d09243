"""A finished model (a run, a final model, the release) scored on the other-subject check (`--check DIR`): its P(ALL)
of every check cell, beside the reference, a logistic regression (C = 1) on Lite0 features of the cells as imaged
fit on the very cells the model trained on; written as metrics.json's `other_subjects` section (and, for the release,
into its card). The check's cells reach predictions only: no fit, threshold, temperature or choice reads them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import PROJECT_ROOT, ClaheSettings, recipe_config
from ..core.errors import PipelineError
from ..data.check_cells import check_cells
from ..data.shortcuts import linear_model
from ..evaluation.other_subjects import SECTION, check_section
from ..runs.folder import RunFolder
from .candidates import FIXED_C
from .release_features import member_features

REFERENCE_BACKBONE = "efficientnet_lite0"


def reference_probabilities(
    trained: pd.DataFrame, cells: pd.DataFrame, progress: Callable[[str], None] | None = None
) -> np.ndarray:
    """P(ALL) of `cells` (path) by the reference: a logistic regression (C = 1, standardised, balanced classes) on
    ImageNet Lite0 features at 224 px of the cells as imaged (CLAHE, no size normalisation), fit on `trained` (path,
    label) alone, in float64 as nested's (the solver stops elsewhere on float32)."""
    say = progress or (lambda text: None)
    config = recipe_config("lite", "", clahe=ClaheSettings(cell_area=0.0)).replace(backbone=REFERENCE_BACKBONE)
    fit_on = member_features(config, trained["path"].tolist(), say, mean_activation=False).features
    model = linear_model(FIXED_C).fit(fit_on.astype(np.float64), (trained["label"] == "ALL").to_numpy())
    scored = member_features(config, cells["path"].tolist(), say, mean_activation=False).features
    return model.predict_proba(scored.astype(np.float64))[:, 1]


def model_probabilities(run_dir: Path, cells: pd.DataFrame) -> np.ndarray:
    """The run's own P(ALL) of every check cell, as `predict` gives it (a release: the heads fit on everyone)."""
    from ..inference.predict import Predictor

    answers = Predictor.from_run(run_dir).predict_paths(cells["path"].tolist())
    failed = answers[answers["error"].notna()]
    if not failed.empty:
        raise PipelineError(
            f"{len(failed)} cell(s) of the check do not read (first: {failed['error'].iloc[0]}); fix or remove them."
        )
    return answers["prob_all"].to_numpy(dtype=float)


def score_on_check(
    run_dir: str | Path, check_dir: str | Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Score a completed run on the check's cells, beside the reference fit on the run's training cells, and write
    the `other_subjects` section into its metrics.json (the release's card too; a committed release names the check's
    folder relative to the project, as its data); the section. Refused when the check shares a subject with the run's
    data."""
    folder = RunFolder(Path(run_dir))
    split = folder.split()
    cells = check_cells(check_dir, split["patient"].astype(str))
    say = progress or (lambda text: None)
    say(f"the check: {len(cells)} cells of {cells['patient'].nunique()} subjects")
    predictions = cells.assign(prob_all=model_probabilities(folder.path, cells))
    trained = split[split["subset"] == "train"]  # the split's paths are resolved as it is read
    say(f"the reference on {len(trained)} training cells")
    shown = os.path.relpath(Path(check_dir).resolve(), PROJECT_ROOT) if folder.released else Path(check_dir).resolve()
    section = check_section(predictions, reference_probabilities(trained, cells, say), shown)
    metrics = folder.metrics() or {}
    metrics[SECTION] = section
    folder.write_metrics(metrics)
    if folder.released:
        from .release_folder import rewrite_card

        rewrite_card(folder)
    return section
