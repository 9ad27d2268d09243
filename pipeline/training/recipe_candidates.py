"""Training recipes (a fine-tuned network, the product's head) as candidates of nested cross-validation: the recipe's
patient cross-validation on the very outer folds of `nested` (`crossval --folds K --seed S`), then its final model on
every patient, which alone answers the other-subject check. A completed cross-validation of the same settings in the
runs folder (and its final model) is used as it is; what is missing is trained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import TrainConfig, default_runs_dir
from ..core.errors import PipelineError
from ..runs.folder import RunFolder
from .candidates import CellTable
from .final import SPLIT_SETTINGS, fold_runs, out_of_fold_predictions


def recipe_name(config: TrainConfig) -> str:
    """A recipe candidate's name in the table: what it trains and how it sees cells."""
    seen = "as imaged" if config.clahe.cell_area == 0 else f"size-normalised ({config.clahe.cell_area:.0%})"
    if config.freeze_backbone and config.fine_tune_blocks and config.fine_tune_epochs:
        what = f"fine-tuned {config.backbone.replace('efficientnet_', '')} ({config.fine_tune_blocks} stages"
        what += f", {config.fine_tune_epochs} epochs)"
    elif config.freeze_backbone:
        what = f"the product's head, trained on {config.backbone.replace('efficientnet_', '')} features"
    else:
        what = f"fine-tuned {config.backbone.replace('efficientnet_', '')} (whole network)"
    extra = [
        "strong augmentation" if config.augment and config.augment_strength == "strong" else "",
        "augmentation" if config.augment and config.augment_strength != "strong" else "",
        "8 test-time views" if config.tta else "",
    ]
    return f"{what}, {seen}" + "".join(f", {part}" for part in extra if part) + f" (recipe {config.recipe or 'custom'})"


def _settings(config: dict[str, Any] | TrainConfig) -> dict[str, Any]:
    """The settings that make two cross-validations the same recipe: all but the split's and the name, with the
    data folder resolved."""
    values = (config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)).to_dict()
    values["data_dir"] = str(Path(values["data_dir"]).resolve())
    return {key: value for key, value in values.items() if key not in SPLIT_SETTINGS}


def completed_group(config: TrainConfig, folds: int, runs_dir: Path) -> str | None:
    """The group of a completed `folds`-fold cross-validation of `config`'s settings in `runs_dir` (the newest), or
    None."""
    wanted, groups = _settings(config), []
    for path in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        folder = RunFolder(path)
        try:
            found = folder.config() if folder.has_config() else {}
            same = found.get("cv_folds") == folds and found.get("cv_fold") == 0 and _settings(found) == wanted
        except (OSError, ValueError, PipelineError):
            continue
        if same:
            groups.append(found["group"])
    for group in reversed(groups):
        try:
            fold_runs(runs_dir, group)
            return group
        except PipelineError:
            continue
    return None


def final_of(group: str, runs_dir: Path) -> RunFolder | None:
    """The completed final model of the cross-validation `group`, or None."""
    for path in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        folder = RunFolder(path)
        try:
            found = folder.config() if folder.has_config() else {}
            if found.get("oof_group") == group and folder.status().get("state") == "completed":
                return folder
        except (OSError, ValueError, PipelineError):
            continue
    return None


def recipe_runs(
    config: TrainConfig, folds: int, runs_dir: Path | None = None, progress: Callable[[str], None] | None = None
) -> tuple[list[RunFolder], RunFolder]:
    """(the folds, the final model) of `config`'s cross-validation: found complete in `runs_dir`, else trained."""
    from .engines import cross_validate, train_final

    runs_dir = Path(runs_dir or default_runs_dir())
    say = progress or (lambda text: None)
    group = completed_group(config, folds, runs_dir)
    if group is None:
        say(f"training a {folds}-fold cross-validation of {recipe_name(config)}")
        folders, _ = cross_validate(config, folds, runs_dir)
        group = folders[0].config()["group"]
    final = final_of(group, runs_dir)
    if final is None:
        say(f"training the final model of {group} on every patient")
        final = train_final(config, group, runs_dir)
        if final.status().get("state") != "completed":
            raise PipelineError(f"The final model {final.run_id} did not complete; see its log.")
    say(f"{recipe_name(config)}: the cross-validation {group}, its final model {final.run_id}")
    return fold_runs(runs_dir, group), final


def out_of_fold_rows(table: CellTable, folds: list[RunFolder], outer: list[np.ndarray]) -> np.ndarray:
    """Every row's out-of-fold P(ALL) from the fold runs (matched by absolute path); refused unless each fold tested
    exactly the rows of the outer fold in the same place (the same patients, the same cells)."""
    row_of = {path: row for row, path in enumerate(table.paths)}
    prob = np.full(len(table.paths), np.nan)
    for index, (fold, rows) in enumerate(zip(folds, outer, strict=True)):
        predicted = out_of_fold_predictions([fold])
        found = np.array([row_of.get(str(Path(path).resolve()), -1) for path in predicted["path"]])
        if (found < 0).any() or set(found) != set(rows.tolist()):
            raise PipelineError(
                f"The fold {fold.run_id} tested other cells than outer fold {index + 1} of nested cross-validation "
                "(another data folder, --folds or --seed?)."
            )
        prob[found] = predicted["prob_all"].to_numpy(dtype=float)
    return prob


def check_probabilities(final: RunFolder, cells: pd.DataFrame) -> np.ndarray:
    """The final model's P(ALL) of the check's cells (as `predict` gives it)."""
    from .check import model_probabilities

    return model_probabilities(final.path, cells)
