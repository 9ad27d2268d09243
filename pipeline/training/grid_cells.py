"""The grid's one-pass runs: cells of one batch size taken from a single run at their epoch counts."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..core.config import TrainConfig
from ..core.errors import PipelineError
from ..data.datasets import PreparedData
from ..runs.contract import now_iso
from ..runs.folder import RunFolder
from .assess import evaluate_into

LOG = logging.getLogger(__name__)


def one_pass_possible(config: TrainConfig) -> bool:
    """Whether a grid's cells of one batch size can be taken from one run to the longest epoch count: full
    training whose schedule decays per step whatever the total (the paper's RMSprop with exponential decay; the
    data order is seeded per epoch either way). Adam's cosine decay depends on the total and fast mode trains a
    head in seconds: those grids run cell by cell."""
    return config.optimizer == "rmsprop" and not config.freeze_backbone


def grid_cells(folder: RunFolder) -> dict[int, RunFolder]:
    """The grid cells a one-pass run evaluates at their epoch counts, by epoch."""
    try:
        cells = folder.config().get("grid_cells") or {}
    except (OSError, ValueError, PipelineError):
        return {}
    return {int(epoch): RunFolder(folder.path.parent / run_id) for epoch, run_id in cells.items()}


def grid_cell_callback(cells: dict[int, RunFolder], data: PreparedData, trunk: RunFolder, weights_used: str) -> Any:
    """After each epoch that is a grid cell's epoch count, that cell's run folder gets what a run of its own would
    hold: the history so far, the model, its validation and test figures, `completed`."""
    import keras

    class GridCells(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            cell = cells.get(epoch + 1)
            if cell is None or cell.raw_status().get("state") == "completed":
                return
            cell.update_status(
                state="running",
                phase="evaluating (taken from the one-pass run)",
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=trunk.raw_status().get("started_at"),
            )
            trunk_config = trunk.config()
            cell.write_config(
                {
                    **trunk_config,
                    **{
                        key: value
                        for key, value in cell.config().items()
                        if key in ("run_id", "created", "epochs", "name")
                    },
                    "grid_cells": None,
                    "grid_source": trunk.run_id,
                }
            )
            cell.write_split(data.split)
            cell.write_history(trunk.history().head(epoch + 1).to_dict(orient="records"))
            cell.save_model(self.model)
            config = TrainConfig.from_dict(cell.config())
            metrics = evaluate_into(self.model, config, data, cell, weights_used)
            cell.update_status(
                state="completed",
                phase="done",
                ended_at=now_iso(),
                progress=1.0,
                epoch=epoch + 1,
                epochs=epoch + 1,
                epochs_done=epoch + 1,
            )
            LOG.info(
                "%s (grid cell at epoch %d of %s) completed: test balanced accuracy %s",
                cell.run_id,
                epoch + 1,
                trunk.run_id,
                figure(metrics.get("balanced_accuracy")),
            )

    return GridCells()


def figure(value: float | None) -> str:
    """A figure for the log: three decimals, or "undefined"."""
    return "undefined" if value is None else f"{value:.3f}"
