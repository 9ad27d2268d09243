"""Command line: `python -m pipeline COMMAND ...` (installed: `cnmc COMMAND ...`). The parser is here, the
training options come from `TrainConfig` (`options`), and each command is one function (`commands`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..core.errors import PipelineError
from ..models.model import LAST_CONV_LAYER
from ..runs.lifecycle import cancel_on_sigterm
from .commands import (
    cmd_evaluate,
    cmd_explain,
    cmd_explain_eval,
    cmd_export,
    cmd_info,
    cmd_predict,
    cmd_report,
    cmd_runs,
    cmd_shortcuts,
    cmd_synth,
)
from .model_choice import add_check_argument, add_model_choice_commands
from .options import add_config_arguments
from .train_commands import (
    cmd_crossval,
    cmd_execute,
    cmd_resume,
    cmd_sweep,
    cmd_train,
)


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    engine = parser.add_argument_group("engine (many runs)")
    engine.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: one run after another in this process; ray: one Ray task per run",
    )
    engine.add_argument(
        "--address",
        default="local",
        help="the Ray cluster: auto (the one this machine belongs to), HOST:PORT, or local (a Ray "
        "started for this call)",
    )
    engine.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves for each run")
    engine.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs Ray reserves for each run")


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    """info, shortcuts, nested, release, synth: what a data set holds and what can be learnt from it."""
    info = commands.add_parser("info", help="what a dataset root holds")
    info.add_argument("--data", required=True)
    info.add_argument("--json", action="store_true")
    info.add_argument(
        "--no-decode",
        dest="decode",
        action="store_false",
        help="skip decoding every image (faster; a truncated image is then not found)",
    )
    info.set_defaults(func=cmd_info)

    shortcuts = commands.add_parser(
        "shortcuts",
        help="what cell size, brightness, sharpness or colour alone score (patient-grouped cross-validation)",
    )
    shortcuts.add_argument("--data", required=True)
    shortcuts.add_argument("--folds", type=int, default=3, help="patient folds (every class needs this many)")
    shortcuts.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    shortcuts.add_argument(
        "--run",
        type=Path,
        action="append",
        help="also measure how a run's saved P(ALL) (or the release's) follows cell size and brightness within each "
        "subject (repeatable)",
    )
    shortcuts.set_defaults(func=cmd_shortcuts)

    add_model_choice_commands(commands)

    synth = commands.add_parser("synth", help="write synthetic C-NMC-like demo data")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--per-class", type=int, default=150)
    synth.add_argument("--patients", type=int, default=6)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """train, sweep, crossval, execute, resume, runs: runs and their engines."""
    train = commands.add_parser("train", help="train one run (prints its folder)")
    add_config_arguments(train)
    train.set_defaults(func=cmd_train)

    sweep = commands.add_parser("sweep", help="the paper's grid of epochs x batch sizes")
    add_config_arguments(sweep, "sweep")
    sweep.add_argument(
        "--cell-by-cell",
        action="store_true",
        help="train every cell from scratch (default: one run per batch size to the longest epoch "
        "count, the shorter cells taken from it, when the schedule allows)",
    )
    _add_engine_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)

    crossval = commands.add_parser("crossval", help="patient-level K-fold cross-validation (the figure to quote)")
    add_config_arguments(crossval, "crossval")
    crossval.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="repeat the cross-validation over seeds seed, seed+1, ... (other patient folds)",
    )
    crossval.add_argument(
        "--final",
        action="store_true",
        help="then train the final model on every patient (split none): its figures and temperature come from the "
        "folds' out-of-fold predictions (the first seed's with --repeats)",
    )
    add_check_argument(crossval)
    _add_engine_arguments(crossval)
    crossval.set_defaults(func=cmd_crossval)

    execute = commands.add_parser("execute", help="train prepared run folders (used by the dashboard)")
    execute.add_argument("run_dirs", nargs="+", type=Path)
    execute.add_argument(
        "--final", action="store_true", help="the runs are one cross-validation's folds: then train its final model"
    )
    add_check_argument(execute)
    _add_engine_arguments(execute)
    execute.set_defaults(func=cmd_execute)

    resume = commands.add_parser("resume", help="continue a failed or cancelled run from its last epoch")
    resume.add_argument("run_dir", type=Path)
    resume.set_defaults(func=cmd_resume)

    runs = commands.add_parser("runs", help="list runs")
    runs.add_argument("--runs-dir", type=Path, default=None)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)


def _add_model_commands(commands: argparse._SubParsersAction) -> None:
    """evaluate, predict, explain, export, report, explain-eval: what a run's model does."""
    evaluate = commands.add_parser("evaluate", help="metrics of a run on its test subset or another data set")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--data", default=None)
    evaluate.add_argument(
        "--include-seen-patients",
        action="store_true",
        help="count other images of the run's training and validation patients in the headline "
        "(flattering; reported apart by default)",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser(
        "predict",
        help="class and probability of ALL per image; a folder or a zip of a patient's cells also gets a summary",
    )
    predict.add_argument("run_dir", type=Path)
    predict.add_argument("images", nargs="+", type=Path, help="images, folders of images or zips of images")
    predict.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="write the rows here and the per-folder summary beside it (NAME-summary.csv)",
    )
    predict.set_defaults(func=cmd_predict)

    explain = commands.add_parser("explain", help="CAM heatmaps, overlays and faithfulness per image")
    explain.add_argument("run_dir", type=Path)
    explain.add_argument("images", nargs="+", type=Path)
    explain.add_argument("--method", default="gradcam", help="gradcam, gradcam++, scorecam, layercam (comma list)")
    explain.add_argument("--layer", default=LAST_CONV_LAYER)
    explain.add_argument("--out", type=Path, required=True)
    explain.set_defaults(func=cmd_explain)

    export = commands.add_parser("export", help="the run's model as a SavedModel or TFLite file, with its card")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", default="savedmodel", help="savedmodel or tflite (onnx: not available, says why)")
    export.set_defaults(func=cmd_export)

    report = commands.add_parser("report", help="one self-contained HTML report of a run")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--out", type=Path, default=None, help="default: report.html in the run folder")
    report.set_defaults(func=cmd_report)

    explain_eval = commands.add_parser("explain-eval", help="rank explanation methods by ROAD on a run's test images")
    explain_eval.add_argument("run_dir", type=Path)
    explain_eval.add_argument(
        "--method", default="gradcam,gradcam++,layercam", help="comma list of gradcam, gradcam++, scorecam, layercam"
    )
    explain_eval.add_argument("--layer", default=LAST_CONV_LAYER)
    explain_eval.add_argument("--images", type=int, default=20, help="test images drawn at random (seeded)")
    explain_eval.add_argument("--seed", type=int, default=0)
    explain_eval.set_defaults(func=cmd_explain_eval)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one sub-command per job, options generated from TrainConfig."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="ALL vs HEM cell classification.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_training_commands(commands)
    _add_model_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become one line on stderr and an exit status."""
    cancel_on_sigterm()  # first, so a cancel that comes while TensorFlow loads is a clean cancel too
    # The package's lines on stderr (a background run's stderr is its log.txt); other libraries' logging is left
    # as it was, and a notebook configures the `pipeline` logger itself.
    logger = logging.getLogger("pipeline")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    # OpenCV's decoder messages name no file; the pipeline names each image that does not read (read by OpenCV when
    # it loads, and inherited by the runs this process starts)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter would hide our messages
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`runs --json | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not raise again
        return 141
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # a file a run must hold is gone: a damaged run, named, not a traceback
        print(f"error: {error.filename or error} is missing; the run folder is damaged or incomplete.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
