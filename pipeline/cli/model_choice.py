"""The command line's model-choice commands: `nested` (every candidate on the same patient folds, the other-subject
check and the rule), `release` (the released model) and `check` (a finished model on other subjects' cells)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.config import RELEASE_BACKBONES, RELEASE_CELL_AREA, RELEASE_PERTURBED_COPIES
from .train_commands import cmd_check, cmd_nested, cmd_release

ENSEMBLE_HELP = (
    "other frozen backbones, comma-separated (e.g. efficientnet_lite1,efficientnet_lite2), each at its native size: "
    "adds an ensemble of one logistic regression per backbone"
)


def add_model_choice_commands(commands: argparse._SubParsersAction) -> None:
    """nested, release, check: which model to serve, and how it does on subjects it never saw."""
    nested = commands.add_parser(
        "nested",
        help="nested patient cross-validation of every candidate beside the constant answer and shortcut "
        "baselines, with stress tests, the other-subject check and the selection rule",
    )
    nested.add_argument("--data", required=True)
    nested.add_argument("--folds", type=int, default=3, help="outer patient folds (every class needs this many)")
    nested.add_argument("--backbone", default="efficientnet_lite0", help="an ImageNet backbone (frozen)")
    nested.add_argument("--image-size", type=int, default=224)
    nested.add_argument(
        "--no-views",
        action="store_true",
        help="leave out the size-normalised and random-zoom candidates (they extract 5 more feature sets)",
    )
    nested.add_argument("--no-keras-head", action="store_true", help="leave out the product's head (loads Keras)")
    nested.add_argument("--ensemble", default="", metavar="BACKBONES", help=ENSEMBLE_HELP)
    nested.add_argument(
        "--ensemble-stresses",
        action="store_true",
        help="also measure the ensemble's other backbones under every stress (about 2.5x their feature passes)",
    )
    nested.add_argument("--seed", type=int, default=42, help="the outer folds' seed: crossval's --seed (default 42)")
    add_check_argument(nested)
    nested.add_argument(
        "--recipe",
        action="append",
        metavar="SETTINGS",
        help='a training recipe as a candidate, in crossval\'s words (e.g. "lite --cell-area 0"; repeatable): its '
        "cross-validation on the same outer folds (a completed one of the same settings in --runs-dir is used, else "
        "it is trained), and its final model on every patient for the check",
    )
    nested.add_argument("--runs-dir", type=Path, default=None, help="where the recipes' runs are found or trained")
    nested.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    nested.set_defaults(func=cmd_nested)
    _add_release_command(commands)


CHECK_HELP = (
    "an other-subject check: a folder of labelled cells (C-NMC names) of subjects the training data does not hold "
    "(refused when it shares one); scored, beside the logistic regression on as-imaged features, never fitted on"
)


def add_check_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`--check DIR`: the other-subject check."""
    parser.add_argument("--check", type=Path, default=None, required=required, metavar="DIR", help=CHECK_HELP)


def _add_release_command(commands: argparse._SubParsersAction) -> None:
    """release: the released model, built from a data set."""
    release = commands.add_parser(
        "release",
        help="build the released model (artifacts/release): cross-fitted logistic-regression heads on Lite0, Lite1 "
        "and Lite2 features of the cells as imaged, their probabilities averaged, with input checks",
    )
    release.add_argument("--data", required=True)
    release.add_argument("--folds", type=int, default=3, help="patient folds of the cross-fitted heads")
    release.add_argument("--out", type=Path, default=None, help="default: the project's artifacts/release")
    release.add_argument("--c", type=float, default=1.0, help="the logistic regression's C, fixed (default 1)")
    release.add_argument(
        "--cell-area",
        type=float,
        default=RELEASE_CELL_AREA,
        help="size normalisation: every cell zoomed to cover this share of the picture (0: as imaged; default "
        "%(default)s)",
    )
    release.add_argument("--choose-c", action="store_true", help="choose C on inner patient folds instead")
    release.add_argument(
        "--backbones",
        default=",".join(RELEASE_BACKBONES),
        metavar="BACKBONES",
        help="the members, comma-separated, the first shown by Grad-CAM (default: %(default)s)",
    )
    release.add_argument(
        "--perturbed-copies",
        action=argparse.BooleanOptionalAction,
        default=RELEASE_PERTURBED_COPIES,
        help="each head also trains on one copy of every cell rotated, flipped, stain-jittered and defocused at "
        "random, whatever its class (default: %(default)s)",
    )
    add_check_argument(release)
    release.set_defaults(func=cmd_release)

    check = commands.add_parser(
        "check",
        help="score a completed run, final model or release on an other-subject check (written to its metrics)",
    )
    check.add_argument("run_dir", type=Path)
    add_check_argument(check, required=True)
    check.set_defaults(func=cmd_check)
