"""The training options of the command line, generated from `TrainConfig`: every field has a flag, named after it,
typed by it, with the recipe's (or a rerun run's) value unless given."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from ..core.config import (
    AUGMENT_STRENGTHS,
    BACKBONES,
    BAD_IMAGE_POLICIES,
    OPTIMIZERS,
    PAPER_BATCH_SIZES,
    PAPER_EPOCHS,
    RECIPES,
    SPLITS,
    VALIDATION_FROM,
    ClaheSettings,
    TrainConfig,
    recipe_config,
)
from ..core.errors import PipelineError
from ..core.files import read_json
from ..models.weights import default_recipe
from ..runs.folder import RunFolder

CHOICES: dict[str, tuple[str, ...]] = {
    "backbone": BACKBONES,
    "split": SPLITS,
    "optimizer": OPTIMIZERS,
    "validation_from": VALIDATION_FROM,
    "on_bad_image": BAD_IMAGE_POLICIES,
    "augment_strength": AUGMENT_STRENGTHS,
}
HELP: dict[str, str] = {
    "data_dir": "dataset root (C-NMC layout or <root>/<class>/)",
    "weights": "imagenet, none, auto (ImageNet when it can be had, else random), or a weights file",
    "decay_steps": "rmsprop: steps per decay of the learning rate (the paper: 900)",
    "decay_rate": "rmsprop: factor per decay (the paper: 0.95)",
    "split": "patient (whole patients in one subset), image (the paper's random split), folds (C-NMC folds) or none "
    "(every patient trains: a final model, scored by --oof-group's folds)",
    "oof_group": "split none: the completed cross-validation (its group, in the same runs folder, the same settings) "
    "whose out-of-fold predictions give the final model's figures and temperature (`crossval --final` sets it)",
    "test_fraction": "share of patients (or images) held out for the test",
    "val_fraction": "share of the rest drawn for validation",
    "val_fold": "split folds: the C-NMC fold used for validation",
    "folds": "C-NMC training folds to use, e.g. 0 (default: all)",
    "cv_folds": "K: patient-level folds (every class needs at least K patients)",
    "cv_fold": "with --cv-folds: which fold (0-based) this run tests",
    "bn_momentum": "backbone BatchNorm momentum (0: Keras' 0.99)",
    "freeze_backbone": "fast mode: cache backbone features once, train the head on them",
    "fine_tune_blocks": "fast mode: then unfreeze the top N blocks",
    "augment": "flips, 90-degree rotations, small scale and shift, stain jitter",
    "augment_passes": "fast mode with --augment: augmented feature passes",
    "augment_strength": "standard (zoom 0.9-1.1, stain jitter) or strong (zoom 0.7-1.4, twice the stain and "
    "brightness jitter, a random defocus)",
    "class_weight": "balanced class weights",
    "balance_patients": "every patient of a class weighs the same in training, however many images it has",
    "head_l2": "L2 penalty on the head's Dense kernels (0: none)",
    "validation_from": "patient split: validation patients of both classes, or of ALL only (every healthy subject "
    "outside the test subset then trains)",
    "tta": "test-time augmentation: average over the 8 flips and rotations",
    "temperature_scaling": "rescale P(ALL) by a temperature fitted on the validation subset (needs both classes "
    "there); the class called never changes",
    "max_images": "use a random subset of this many images",
    "random_features": "allow fast mode on a backbone with random weights (a baseline; labelled 'random features')",
    "on_bad_image": "an image that does not read: skip it (listed in the run's skipped.csv and log) or fail the "
    "run before training",
}
CLAHE_FLAGS = {
    "clip_limit": "--clahe-clip",
    "tile_grid": "--clahe-grid",
    "enabled": "--clahe",
    "cell_area": "--cell-area",
}
CLAHE_HELP = {
    "cell_area": "size normalisation: zoom every cell to cover this share of the image before "
    "resizing (0: as imaged; see the README on shortcuts)"
}
NOT_FLAGS = ("data_dir", "clahe", "recipe")
"""Fields with a flag of their own: --data, the CLAHE flags, --recipe."""
PER_COMMAND = {
    "crossval": {"cv_folds": "--folds", "folds": "--cnmc-folds", "split": None, "cv_fold": None, "oof_group": None},
    "sweep": {"epochs": None, "batch_size": None},
}
"""Flags renamed (or left out: None) by a command: crossval sets the split and the fold itself, sweep takes lists."""


def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _add_field(parser: argparse._ActionsContainer, flag: str, name: str, kind: Any, help_text: str | None) -> None:
    if kind is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        parser.add_argument(flag, dest=name, type=kind, choices=CHOICES.get(name), default=None, help=help_text)


def int_list(text: str) -> list[int]:
    """Comma-separated integers, for argparse."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def add_config_arguments(parser: argparse.ArgumentParser, command: str = "train") -> None:
    """A flag for every `TrainConfig` field (renamed or left out per `PER_COMMAND`), `--recipe`, `--config` and
    `--runs-dir`; each flag left out takes its value from the recipe, or from the run given by `--config`."""
    parser.add_argument("--data", dest="data_dir", help=HELP["data_dir"] + " (required unless --config gives it)")
    parser.add_argument(
        "--recipe",
        choices=["auto", *RECIPES],
        default=None,
        help="starting settings: paper (B3 at 224 px on ImageNet weights), lite (ImageNet "
        "EfficientNet-Lite0 from its installed package, cells as imaged: a head on cached features, then its top 2 "
        "stages fine-tuned with strong augmentation, 8 test-time views) or scratch (B0 from random "
        "weights); auto (default): paper when B3's ImageNet weights can be had, else lite, else "
        "scratch",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="start from a run's settings (RUN or RUN/config.json) instead of a recipe: a rerun, "
        "with any flag given on top",
    )
    renamed = PER_COMMAND.get(command, {})
    if command == "sweep":
        parser.add_argument("--epochs", type=int_list, dest="epoch_list", default=list(PAPER_EPOCHS))
        parser.add_argument("--batch-sizes", type=int_list, default=list(PAPER_BATCH_SIZES))
    types = _types(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name in NOT_FLAGS:
            continue
        flag = renamed.get(field.name, "--" + field.name.replace("_", "-"))
        if flag is not None:
            _add_field(parser, flag, field.name, types[field.name], HELP.get(field.name))
    clahe_types = _types(ClaheSettings)
    for field in dataclasses.fields(ClaheSettings):
        _add_field(
            parser,
            CLAHE_FLAGS[field.name],
            f"clahe_{field.name}",
            clahe_types[field.name],
            CLAHE_HELP.get(field.name, f"CLAHE {field.name.replace('_', ' ')}"),
        )
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: $ARTIFACTS_DIR/runs")


def _run_config(path: Path) -> TrainConfig:
    """The settings of the run folder at `path`, or of the config file `path` itself."""
    folder = RunFolder(path)
    if not (folder.has_config() if path.is_dir() else path.is_file()):
        raise PipelineError(f"{path} holds no config.json of a run.")
    try:
        return TrainConfig.from_dict(folder.config() if path.is_dir() else read_json(path))
    except ValueError as error:
        raise PipelineError(f"{path} is not a readable run config ({error}).") from error


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The recipe's settings (or those of the run given by `--config`), then every flag given, then `overrides`."""

    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if field.name not in NOT_FLAGS and getattr(args, field.name, None) is not None
    }
    clahe = {
        field.name: getattr(args, f"clahe_{field.name}")
        for field in dataclasses.fields(ClaheSettings)
        if getattr(args, f"clahe_{field.name}", None) is not None
    }
    if args.config is not None:
        if args.recipe not in (None, "auto"):
            raise PipelineError("Give --config or --recipe, not both: --config starts from a run's own settings.")
        base = _run_config(args.config)
        if args.data_dir:
            given["data_dir"] = str(args.data_dir)
    else:
        if not args.data_dir:
            raise PipelineError("--data is required (or --config RUN to rerun a run's settings).")
        recipe = default_recipe() if args.recipe in (None, "auto") else args.recipe
        base = recipe_config(recipe, str(args.data_dir))
    if clahe:
        given["clahe"] = dataclasses.replace(base.clahe, **clahe)
    return base.replace(**{**given, **overrides})
