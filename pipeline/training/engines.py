"""Many runs: the paper's grid (one pass per batch size where the schedule allows), patient cross-validation, and
the engines that execute prepared runs, one after another in this process (`local`) or as tasks on a Ray cluster
(`ray`). Above `train` (one run) and `cluster` (Ray), which never import this module."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from ..core.config import TrainConfig
from ..core.errors import PipelineError
from ..runs.crossval import crossval_configs, summary_path, write_summary_of_group
from ..runs.folder import RunFolder
from ..runs.lifecycle import mark_cancelled, record_failure
from .cluster import execute_on_ray
from .final import final_config
from .grid_cells import one_pass_possible
from .train import execute_run, prepare_run


def grid(base: TrainConfig, epochs: list[int], batch_sizes: list[int]) -> tuple[str, list[TrainConfig]]:
    """The paper's grid: a group name and one config per (epochs, batch size), epochs outermost."""
    group = f"grid-{time.strftime('%Y%m%d-%H%M%S')}"
    return group, [base.replace(epochs=e, batch_size=b) for e in epochs for b in batch_sizes]


def run_all(folders: list[RunFolder], engine: str = "local", **ray_options: Any) -> bool:
    """Execute prepared runs one after another in this process (`local`), or as tasks on a Ray cluster (`ray`:
    `address`, `cpus_per_run`, `gpus_per_run`); True if all completed. A cross-validation's summary is written
    from every fold of its group at the end either way."""
    if engine == "local":
        return execute_runs(folders)
    if engine != "ray":
        raise PipelineError(f"Unknown engine {engine!r}: local or ray.")

    completed = execute_on_ray(folders, **ray_options)
    write_summary_of_group(folders)
    return completed


def sweep(
    config: TrainConfig,
    epochs: list[int],
    batch_sizes: list[int],
    runs_dir: Path | None = None,
    engine: str = "local",
    one_pass: bool = True,
    **ray_options: Any,
) -> list[RunFolder]:
    """The paper's grid, trained in this process or spread over a Ray cluster. With `one_pass` (and a schedule
    that allows it, see `one_pass_possible`), one run per batch size trains to the longest epoch count and every
    shorter cell is taken from it at its epoch (the paper's 12 cells: 420 epochs become 120); otherwise cell by
    cell. Returns the cells' run folders in grid order (epochs outermost)."""
    group, configs = grid(config, epochs, batch_sizes)
    if not (one_pass and one_pass_possible(config) and len(set(epochs)) > 1):
        folders = [prepare_run(member, runs_dir, group) for member in configs]
        run_all(folders, engine, **ray_options)
        return folders
    longest, cells, trunks = max(epochs), {}, []
    for batch_size in batch_sizes:
        trunk = prepare_run(config.replace(epochs=longest, batch_size=batch_size), runs_dir, group)
        shorter = {
            epoch: prepare_run(config.replace(epochs=epoch, batch_size=batch_size), runs_dir, group)
            for epoch in sorted(set(epochs))
            if epoch != longest
        }
        trunk.write_config({**trunk.config(), "grid_cells": {str(e): cell.run_id for e, cell in shorter.items()}})
        for epoch, cell in shorter.items():
            cell.write_config({**cell.config(), "grid_source": trunk.run_id})
            cell.update_status(phase=f"waiting for epoch {epoch} of the one-pass run {trunk.run_id}")
        cells.update({(epoch, batch_size): cell for epoch, cell in shorter.items()})
        cells[(longest, batch_size)] = trunk
        trunks.append(trunk)
    run_all(trunks, engine, **ray_options)
    return [cells[(member.epochs, member.batch_size)] for member in configs]


def cross_validate(
    config: TrainConfig, folds: int, runs_dir: Path | None = None, engine: str = "local", **ray_options: Any
) -> tuple[list[RunFolder], Path | None]:
    """Patient-level K-fold cross-validation (in this process or on a Ray cluster): the fold runs and their
    summary file."""

    group, configs = crossval_configs(config, folds)
    folders = [prepare_run(member, runs_dir, group) for member in configs]
    run_all(folders, engine, **ray_options)
    return folders, summary_path(group)


def train_final(
    config: TrainConfig, group: str, runs_dir: Path | None = None, engine: str = "local", **ray_options: Any
) -> RunFolder:
    """The final model of the completed cross-validation `group` of `config`: the same settings on every patient
    (split `none`), its figures and temperature from the folds' out-of-fold predictions (`training.final`)."""
    folder = prepare_run(final_config(config, group), runs_dir, f"{group}-final")
    run_all([folder], engine, **ray_options)
    return folder


def execute_runs(folders: list[RunFolder]) -> bool:
    """Execute queued runs in order; True if all completed. A failed run does not stop the next (its
    traceback goes to stderr, the run's log); a cancel stops them all. The folds of a cross-validation
    get their summary written at the end."""

    all_completed = True
    for index, folder in enumerate(folders):
        try:
            execute_run(folder)
        except KeyboardInterrupt:
            mark_cancelled(folders[index + 1 :], "Cancelled with its sweep.")
            raise
        except Exception as error:  # noqa: BLE001 - recorded in the run's status and log; the sweep goes on
            traceback.print_exc()
            record_failure(folder, error)
            all_completed = False
    write_summary_of_group(folders)
    return all_completed
