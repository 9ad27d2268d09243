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
    """`nested`: nested patient cross-validation of the candidates, with the other-subject check and the rule."""
    from ..core.files import write_json_atomic
    from ..data.check_cells import check_cells
    from ..training.candidates import MEMBER_VIEWS, VIEWS
    from ..training.cell_tables import cell_table, check_table
    from ..training.nested import attach_check, nested_cross_validation, nested_lines

    def say(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    def tables_of(backbone: str, image_size: int, views: tuple[str, ...] = VIEWS, stresses: bool = True) -> tuple:
        views = () if args.no_views else views
        progress = lambda text: say(f"{backbone}: {text}")  # noqa: E731
        table = cell_table(args.data, backbone, image_size, args.folds, args.seed, progress, views, stresses)
        check = None if cells is None else check_table(cells, backbone, image_size, progress, views)
        return table, check

    cells = None
    if args.check:
        from ..data.layouts import scan_dataset

        cells = check_cells(args.check, {str(r.patient) for r in scan_dataset(args.data).training_records()})
    recipes = [_recipe_config(args, spec) for spec in args.recipe or []]  # refused before hours of features
    table, check = tables_of(args.backbone, args.image_size)
    members = [name.strip() for name in args.ensemble.split(",") if name.strip()]
    if members:
        from ..models.lite import VARIANTS

        sizes = {name: VARIANTS[name].native_size if name in VARIANTS else args.image_size for name in members}
        # only what they serve, and clean unless --ensemble-stresses (3 or 4 passes each, not 10)
        pairs = {name: tables_of(name, size, MEMBER_VIEWS, args.ensemble_stresses) for name, size in sizes.items()}
        table = dataclasses.replace(table, others={name: pair[0] for name, pair in pairs.items()})
        if check is not None:
            check = dataclasses.replace(check, others={name: pair[1] for name, pair in pairs.items()})
    results = nested_cross_validation(table, args.folds, args.seed, heads=not args.no_keras_head, check=check)
    for config in recipes:
        _add_recipe(results, table, config, args, cells, say)
    if cells is not None:
        attach_check(results, cells, str(args.check))
    print("\n".join(nested_lines(results)))
    if args.json:
        write_json_atomic(
            args.json,
            {
                "data": str(args.data),
                "check": str(args.check or ""),
                "backbone": args.backbone,
                "image_size": args.image_size,
                "ensemble": members,
                "recipes": [dataclasses.asdict(config) for config in recipes],
                "cells": len(table.is_all),
                **results,
            },
        )
    return 0


def _recipe_config(args: argparse.Namespace, spec: str) -> Any:
    """A `--recipe` of `nested` ("lite --cell-area 0"): `crossval`'s settings for it on the same data, folds, seed."""
    import shlex

    from .options import add_config_arguments

    parser = argparse.ArgumentParser(prog=f"nested --recipe {spec!r}")
    add_config_arguments(parser, "crossval")
    words = ["--data", str(args.data), "--folds", str(args.folds), "--seed", str(args.seed), "--recipe"]
    return config_from_args(parser.parse_args(words + shlex.split(spec)), cv_folds=args.folds)


def _add_recipe(results: dict, table: Any, config: Any, args: argparse.Namespace, cells: Any, say: Any) -> None:
    """One recipe's cross-validation (found or trained) on nested's outer folds, and its final model on the check."""
    from ..data.splits import cross_validation_folds
    from ..training.nested import add_scored
    from ..training.recipe_candidates import check_probabilities, out_of_fold_rows, recipe_name, recipe_runs

    folds, final = recipe_runs(config, args.folds, args.runs_dir, say)
    outer = cross_validation_folds(table.labels, table.patients, args.folds, args.seed)
    add_scored(
        results,
        table,
        recipe_name(config),
        out_of_fold_rows(table, folds, outer),
        None if cells is None else check_probabilities(final, cells),
        runs=[fold.run_id for fold in folds],
        final_model=final.run_id,
    )


def cmd_release(args: argparse.Namespace) -> int:
    """`release`: build the released model from a data set."""
    from ..core.config import RELEASE_DIR
    from ..training.release_build import build_release

    _check_before_training(args.check, args.data)
    folder = build_release(
        str(args.data),
        args.out or RELEASE_DIR,
        args.folds,
        args.cell_area,
        progress=lambda text: print(f"... {text}", file=sys.stderr, flush=True),
        c=None if args.choose_c else args.c,
        backbones=tuple(name.strip() for name in args.backbones.split(",") if name.strip()),
        perturbed_copies=args.perturbed_copies,
    )
    metrics = folder.metrics() or {}
    from ..evaluation.intervals import interval_line

    print(f"{folder.path}\nout of fold: {interval_line(metrics.get('intervals'))}")
    if args.check:
        _print_check(folder.path, args.check)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`check`: a completed run (a final model, the release) scored on an other-subject check."""
    open_run(args.run_dir, completed=True)
    _print_check(args.run_dir, args.check)
    return 0


def _check_before_training(check_dir: Any, data_dir: Any) -> None:
    """Refuse a check that shares a subject with the data about to be trained on, before any training."""
    if check_dir:
        from ..data.check_cells import check_cells
        from ..data.layouts import scan_dataset

        check_cells(check_dir, {str(record.patient) for record in scan_dataset(data_dir).training_records()})


def _print_check(run_dir: Any, check_dir: Any) -> None:
    """Score a run on the check (written to its metrics.json) and print the section."""
    from ..evaluation.other_subjects import OtherSubjects
    from ..training.check import score_on_check

    section = score_on_check(run_dir, check_dir, lambda text: print(f"... {text}", file=sys.stderr, flush=True))
    print("\n".join(OtherSubjects(section).lines()))


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
    _check_before_training(args.check if args.final else None, base.data_dir)
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
    if args.check:
        print("--check scores a final model: add --final", file=sys.stderr)
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
    if state == "completed" and args.check:
        _print_check(folder.path, args.check)
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
