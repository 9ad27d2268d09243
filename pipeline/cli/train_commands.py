"""The command line's training commands: one run, cross-validation, the grid, runs prepared elsewhere, resume,
nested cross-validation and the release."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from typing import Any

from ..runs.folder import open_run
from .commands import DEFAULT_CV_FOLDS
from .options import config_from_args


def cmd_nested(args: argparse.Namespace) -> int:
    """`nested`: nested patient cross-validation of the frozen-feature candidates."""
    from ..core.files import write_json_atomic
    from ..training.candidates import MEMBER_VIEWS
    from ..training.nested import VIEWS, cell_table, nested_cross_validation, nested_lines

    def table_of(backbone: str, image_size: int, views: tuple[str, ...] = VIEWS) -> Any:
        return cell_table(
            args.data,
            backbone,
            image_size,
            args.folds,
            progress=lambda text: print(f"... {backbone}: {text}", file=sys.stderr, flush=True),
            views=() if args.no_views else views,
        )

    table = table_of(args.backbone, args.image_size)
    members = [name.strip() for name in args.ensemble.split(",") if name.strip()]
    if members:
        from ..models.lite import VARIANTS

        sizes = {name: VARIANTS[name].native_size if name in VARIANTS else args.image_size for name in members}
        others = {name: table_of(name, size, MEMBER_VIEWS) for name, size in sizes.items()}  # only what they serve
        table = dataclasses.replace(table, others=others)
    results = nested_cross_validation(table, args.folds, heads=not args.no_keras_head)
    print("\n".join(nested_lines(results)))
    if args.json:
        write_json_atomic(
            args.json,
            {
                "data": str(args.data),
                "backbone": args.backbone,
                "image_size": args.image_size,
                "ensemble": members,
                "cells": len(table.is_all),
                **results,
            },
        )
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """`release`: build the released model from a data set."""
    from ..core.config import RELEASE_DIR
    from ..training.release_build import build_release

    folder = build_release(
        str(args.data),
        args.out or RELEASE_DIR,
        args.folds,
        progress=lambda text: print(f"... {text}", file=sys.stderr, flush=True),
        c=None if args.choose_c else args.c,
        backbones=tuple(name.strip() for name in args.backbones.split(",") if name.strip()),
        perturbed_copies=args.perturbed_copies,
    )
    metrics = folder.metrics() or {}
    from ..evaluation.intervals import interval_line

    print(f"{folder.path}\nout of fold: {interval_line(metrics.get('intervals'))}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`train`: one run, in this process."""
    from ..training.train import train

    folder = train(config_from_args(args), args.runs_dir)
    print(folder.path)
    return 0


def _ray_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.engine != "ray":
        return {}
    return {"address": args.address, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run}


def cmd_crossval(args: argparse.Namespace) -> int:
    """`crossval`: patient cross-validation, repeated over seeds, with pooled intervals."""
    from ..evaluation.intervals import interval_line
    from ..runs.crossval import fold_table, summarize, summary_lines
    from ..training.engines import cross_validate

    folds = args.cv_folds or DEFAULT_CV_FOLDS
    base, completed, means, groups = config_from_args(args, cv_folds=folds), True, [], []
    for repeat in range(args.repeats):
        config = base.replace(seed=base.seed + repeat)
        folders, summary_path = cross_validate(config, folds, args.runs_dir, args.engine, **_ray_options(args))
        groups.append(folders[0].config()["group"])
        table = fold_table(folders)
        if args.repeats > 1:
            print(f"seed {config.seed}:")
        print(
            table[
                ["fold", "state", "test_patients", "test_images", "balanced_accuracy", "roc_auc", "weighted_f1"]
            ].to_string(index=False)
        )
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
                print(
                    f"over {len(values)} seeds: {name} {statistics.mean(values):.3f} ± "
                    f"{statistics.stdev(values):.3f} (sd of the cross-validation means)"
                )
    if args.final:
        return _final_model(args, base, groups[0]) if completed else 1
    return 0 if completed else 1


def _final_model(args: argparse.Namespace, base: Any, group: str, runs_dir: Any = None) -> int:
    """`crossval --final`: the recipe on every patient, scored by the (first seed's) folds out of fold."""
    from ..evaluation.intervals import interval_line
    from ..runs.display import threshold_line
    from ..training.engines import train_final

    folder = train_final(base, group, runs_dir or args.runs_dir, args.engine, **_ray_options(args))
    metrics, state = folder.metrics() or {}, folder.status().get("state")
    print(f"final model on every patient: {folder.path} ({state})")
    intervals, threshold = interval_line(metrics.get("intervals")), threshold_line(metrics.get("threshold_check"))
    if intervals:
        print(f"its figures, out of fold (pooled over the folds), 95 % CI: {intervals}")
    if threshold:
        print(threshold)
    return 0 if state == "completed" else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    """`sweep`: the paper's grid of epochs and batch sizes."""
    from ..training.engines import sweep

    folders = sweep(
        config_from_args(args),
        args.epoch_list,
        args.batch_sizes,
        args.runs_dir,
        args.engine,
        one_pass=not args.cell_by_cell,
        **_ray_options(args),
    )
    for folder in folders:
        print(f"{folder.path}\t{folder.status().get('state')}")
    return 0 if all(folder.status().get("state") == "completed" for folder in folders) else 1


def cmd_execute(args: argparse.Namespace) -> int:
    """`execute`: run prepared run folders through an engine."""
    from ..runs.folder import RunFolder
    from ..runs.lifecycle import mark_cancelled

    folders = [RunFolder(path) for path in args.run_dirs]
    try:
        from ..training.engines import run_all

        all_completed = run_all(folders, args.engine, **_ray_options(args))
    except KeyboardInterrupt:  # also a cancel that came while TensorFlow was still loading
        mark_cancelled(folders)
        raise
    if args.final and all_completed:
        from ..core.config import TrainConfig

        first = folders[0].config()
        return _final_model(args, TrainConfig.from_dict(first), first.get("group", ""), folders[0].path.parent)
    return 0 if all_completed else 1


def cmd_resume(args: argparse.Namespace) -> int:
    """`resume`: continue a cancelled or failed run from its last checkpoint."""
    from ..training.train import execute_run

    folder = open_run(args.run_dir)
    folder.check_resumable()
    execute_run(folder)
    print(folder.path)
    return 0
