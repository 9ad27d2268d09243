"""The commands of `python -m pipeline` (and `cnmc`): each reads its parsed arguments and calls one function of the
pipeline, imported when the command runs (TensorFlow loads only for commands that need it)."""

from __future__ import annotations

import argparse
import json
import sys

from ..core.config import default_runs_dir
from ..runs.folder import open_run

DEFAULT_CV_FOLDS = 3


def cmd_info(args: argparse.Namespace) -> int:
    """`info`: what a data set holds (classes, patients, layout, unreadable files)."""
    from ..data.layouts import scan_dataset, undecodable

    dataset = scan_dataset(args.data)
    info = dataset.info()
    if args.decode:
        info["undecodable"] = len(broken := undecodable(dataset))
        info["undecodable_files"] = [f"{path}: {reason}" for path, reason in broken]
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
    if args.decode:
        print(f"Images whose pixels do not decode (a run leaves them out): {info['undecodable']}")
        for line in info["undecodable_files"]:
            print(f"  {line}")
    else:
        print("Images not decoded (--no-decode): a truncated image is found only when a run reads it.")
    return 0


def cmd_shortcuts(args: argparse.Namespace) -> int:
    """`shortcuts`: one-feature baselines and stress tests on a data set."""
    from ..core.files import write_json_atomic
    from ..data.layouts import scan_dataset
    from ..data.shortcuts import dependence_lines, describe_files, shortcut_baselines, shortcut_lines

    records = scan_dataset(args.data).training_records()
    descriptors = describe_files([record.path for record in records])
    results = shortcut_baselines(
        descriptors, [record.label for record in records], [record.patient for record in records], args.folds
    )
    print("\n".join(shortcut_lines(results, args.folds)))
    dependence = {str(run): _run_dependence(run) for run in args.run or []}
    for run, result in dependence.items():
        print("\n".join(dependence_lines(result, f"Run {run}")))
    if args.json:
        write_json_atomic(
            args.json,
            {
                "data": str(args.data),
                "images": len(records),
                "folds": args.folds,
                "baselines": results,
                "within_subject_dependence": dependence,
            },
        )
    return 0


def _run_dependence(run: str) -> dict:
    """A run's (or the release's) saved predictions against the descriptors of the very cells they score."""
    from ..core.errors import ImageReadError, PipelineError
    from ..data.shortcuts import describe_files, within_subject_dependence
    from ..runs.folder import open_run
    from ..runs.readers import resolvable_all

    predictions = open_run(run).predictions()
    paths = resolvable_all(predictions["path"])
    try:
        descriptors = describe_files(paths)
    except ImageReadError as error:
        raise PipelineError(f"The cells {run} scored do not all read here ({error}).") from error
    return within_subject_dependence(predictions, descriptors)


def cmd_synth(args: argparse.Namespace) -> int:
    """`synth`: generate a synthetic C-NMC-like data set."""
    from ..data.synthetic import generate

    out = generate(args.out, per_class=args.per_class, patients=args.patients, seed=args.seed)
    print(out)
    return 0


def _figure(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) and value == value else "-"


def cmd_runs(args: argparse.Namespace) -> int:
    """`runs`: the run table, as text or JSON."""
    from ..runs.catalog import list_runs
    from ..runs.selection import run_flags

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
        flags, scored = run_flags(run), "out_of_fold" if run.get("out_of_fold") is True else "test"
        print(
            f"{run['run_id']}\t{run['state']}\tepochs={run.get('epochs')}\tbatch={run.get('batch_size')}\t"
            f"val_weighted_f1={_figure(run.get('val_weighted_f1'))}\t"
            f"{scored}_weighted_f1={_figure(run.get('weighted_f1'))}\t"
            f"{scored}_balanced_acc={_figure(run.get('balanced_accuracy'))}\t"
            f"weights={run.get('weights')}\tdata={run.get('data')}"
            + (
                f"\tother_subjects_roc_auc={_figure(run['check_roc_auc'])} (healthy called ALL "
                f"{run['check_healthy_called_all']})"
                if run.get("check_roc_auc") is not None
                else ""
            )
            + (f"\tflags: {flags}" if flags else "")
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`evaluate`: a finished run's model on other labelled data, images it saw left out."""
    open_run(args.run_dir, completed=True)
    from ..evaluation.metrics import Metrics
    from ..inference.evaluate_other import evaluate_run, seen_warning

    metrics, out_dir = evaluate_run(args.run_dir, args.data, args.include_seen_patients)
    summary = {
        key: metrics[key]
        for key in (
            "subset",
            "n",
            "accuracy",
            "balanced_accuracy",
            "roc_auc",
            "confusion_matrix",
            "labels",
            "excluded_seen_images",
        )
    }
    summary["weighted_f1"] = Metrics.of(metrics).figure("weighted_f1")
    if warning := seen_warning(metrics["excluded_seen_images"], metrics["include_seen_patients"]):
        print(warning, file=sys.stderr)
    if metrics.get("seen_patients"):
        apart = metrics["seen_patients"]
        summary["seen_patients"] = {key: apart.get(key) for key in ("n", "accuracy", "balanced_accuracy", "roc_auc")}
    print(json.dumps(summary, indent=2))
    print(f"written to {out_dir}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """`predict`: a run's class and P(ALL) for images, folders and zips (each zip's left-out members named)."""
    open_run(args.run_dir)
    import pandas as pd

    from ..core.files import write_csv_atomic
    from ..data.decode import decode_image, read_image
    from ..inference.cells import expand, group_summary, read_zip, skipped_rows, summary_lines
    from ..inference.predict import Predictor
    from ..runs.display import spreadsheet_safe

    sources, left_out = [], []
    for path in args.images:
        if path.is_file() and path.suffix.lower() == ".zip":
            contents = read_zip(path.read_bytes(), str(path))
            sources.extend(
                (f"{path}:{member}", str(path), lambda data=data, member=member: decode_image(data, member))
                for member, data in contents.images
            )
            left_out.extend(skipped_rows(contents.skipped, str(path)))
        else:
            sources.extend((image, group, lambda image=image: read_image(image)) for image, group in expand([path]))
    table = Predictor.from_run(args.run_dir).predict_sources(sources)
    for row in table.to_dict(orient="records"):
        if isinstance(row["error"], str):
            print(f"error: {row['error']}", file=sys.stderr)
            continue
        extra = (
            ""
            if "band" not in row
            else f"\t{row['band']}"
            + (
                ""
                if row["in_distribution"]
                else f"\tNOT RELIABLE: out of distribution (distance {row['distance']:.2f}"
                + (f"; {row['input_problem']})" if row["input_problem"] else ")")
            )
        )
        print(f"{row['path']}\t{row['predicted']}\tprob_all={row['prob_all']:.4f}{extra}")
    for row in left_out:
        print(f"skipped: {row['path']}: {row['error']}", file=sys.stderr)
    table = pd.concat([table, pd.DataFrame(left_out, columns=table.columns[:5])], ignore_index=True)
    summary = group_summary(table)
    if len(sources) > 1 or left_out:
        print("\n".join(summary_lines(summary)))
    if args.csv:  # text cells a spreadsheet would run as a formula are neutralised, as the page's downloads are
        write_csv_atomic(args.csv, spreadsheet_safe(table))
        write_csv_atomic(args.csv.with_name(args.csv.stem + "-summary.csv"), spreadsheet_safe(summary))
    return 1 if (summary["cells"] == 0).any() or table["error"].notna().sum() > len(left_out) else 0


def cmd_explain(args: argparse.Namespace) -> int:
    """`explain`: CAM heatmaps and feature maps of a run's model for images."""
    open_run(args.run_dir)
    from ..explain.pictures import explain_files

    methods = [method.strip() for method in args.method.split(",") if method.strip()]
    rows = explain_files(args.run_dir, args.images, methods, args.layer, args.out)
    for row in rows:
        if "error" in row:
            print(f"error: {row['error']}", file=sys.stderr)
        else:
            print(
                f"{row['image']}\t{row['method']}\t{row['predicted']} (prob_all={row['prob_all']})\t"
                f"ROAD={row['road']:+.3f} (random maps in the cell: {row['road_random_in_cell']:+.3f})"
            )
    return 1 if any("error" in row for row in rows) else 0


def cmd_export(args: argparse.Namespace) -> int:
    """`export`: a finished run's model as SavedModel or TFLite with its card."""
    open_run(args.run_dir, completed=True)
    from ..inference.export import export_run

    print(export_run(args.run_dir, args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`report`: a finished run's self-contained HTML report."""
    open_run(args.run_dir, completed=True)
    from ..explain.report import write_report

    print(write_report(args.run_dir, args.out))
    return 0


def cmd_explain_eval(args: argparse.Namespace) -> int:
    """`explain-eval`: rank explanation methods by ROAD on a run's test images."""
    open_run(args.run_dir, completed=True)
    from ..explain.explain_eval import evaluate_explanations

    methods = [method.strip() for method in args.method.split(",") if method.strip()]
    _, summary, out = evaluate_explanations(args.run_dir, methods, args.layer, args.images, args.seed)
    print(f"ROAD at {summary['layer']} over {summary['images']} test images (higher: more faithful)")
    for figure in sorted(summary["methods"].values(), key=lambda figure: -figure["road_mean"]):
        spread = f" ± {figure['road_std']:.3f}" if figure["road_std"] is not None else ""
        print(f"{figure['computed']:40s} {figure['road_mean']:+.3f}{spread}")
    print(f"written to {out}", file=sys.stderr)
    return 0
