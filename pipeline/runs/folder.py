"""The run folder: the only module that knows its file names.

Every file is written to a temporary name and renamed into place, so any process can read a run
while another writes it and never sees half a file.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import TrainConfig
from ..core.errors import PipelineError
from ..core.files import atomic_write, write_csv_atomic, write_json_atomic
from ..evaluation.metrics import metrics_problem
from ..models.model import check_model_file
from .contract import (
    ACTIVE_STATES,
    CONFIG,
    HEAD,
    HISTORY,
    HISTORY_COLUMNS,
    LOG,
    METRICS,
    MODEL,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    RELEASE_CARD,
    RESUMABLE_STATES,
    SKIPPED,
    SKIPPED_COLUMNS,
    SPLIT,
    SPLIT_COLUMNS,
    STALE_AFTER_S,
    STATUS,
    STATUS_LOCK,
    age_s,
    now_iso,
    process_alive,
)
from .outputs import RunOutputs
from .readers import file_lock, read_object, read_table, resolvable_all
from .record import TRAINED_ELSEWHERE, RunRecord

_STATUS_LOCK = threading.Lock()  # the heartbeat thread and the training thread write one status file in turn


def open_run(path: str | Path, completed: bool = False) -> RunFolder:
    """The run folder at `path`; `PipelineError` when there is no folder there, it holds no run (neither a
    config nor a model), or, with `completed`, a run of this project lacks what a completed run must hold."""
    folder = RunFolder(Path(path))
    if not folder.path.is_dir():
        raise PipelineError(f"There is no run folder at {path}.")
    if not (folder.exists() or folder.has_model()):
        raise PipelineError(f"{path} is not a run folder (it holds neither config.json nor a model).")
    if completed and folder.exists():
        problem = folder.completeness_problem()
        if problem:
            raise PipelineError(f"{path} is not a complete run: {problem}")
    return folder


@dataclass
class RunFolder(RunOutputs):
    """Reads and writes one run folder: its own files here, checkpoints and outputs of later commands in
    `RunOutputs`."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def run_id(self) -> str:
        """The run's id: its folder's name."""
        return self.path.name

    @property
    def model_path(self) -> Path:
        """The trained model (model.keras)."""
        return self.file(MODEL)

    @property
    def log_path(self) -> Path:
        """The run's log file."""
        return self.file(LOG)

    def save_model(self, model: Any) -> None:
        """Save the model whole or not at all."""
        atomic_write(self.model_path, model.save)

    def has_config(self) -> bool:
        """Whether config.json is there."""
        return self.file(CONFIG).is_file()

    def has_status(self) -> bool:
        """Whether status.json is there."""
        return self.file(STATUS).is_file()

    def exists(self) -> bool:
        """Whether this is a run folder (a config or a status)."""
        return self.has_config() or self.has_status()

    # -- config ----------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Write config.json whole or not at all."""
        write_json_atomic(self.file(CONFIG), config)

    def config(self) -> dict[str, Any]:
        """The run's settings (config.json), checked."""
        return read_object(self.file(CONFIG), self.run_id)

    def record(self) -> RunRecord:
        """The run's `RunRecord`; a bare model (no config.json) reads as trained elsewhere, and a config that
        exists but does not read is a `PipelineError`, never mistaken for a model from elsewhere."""
        if not self.has_config():
            return RunRecord(self.run_id, None, dict(TRAINED_ELSEWHERE))
        try:
            settings = self.config()
            config = TrainConfig.from_dict(settings)
        except (OSError, ValueError) as error:
            raise PipelineError(f"The settings of {self.run_id} (config.json) do not read: {error}") from error
        fields = set(config.to_dict())
        return RunRecord(self.run_id, config, {key: value for key, value in settings.items() if key not in fields})

    # -- status ----------------------------------------------------------------------------
    def raw_status(self) -> dict[str, Any]:
        """status.json as written (`status` reads a run whose process is gone as failed)."""
        return read_object(self.file(STATUS), self.run_id)

    def status(self) -> dict[str, Any]:
        """The run's status; a run whose process is gone is reported `failed`, never `running`: on this host by
        its pid, on another host by its heartbeat (`updated_at` older than `STALE_AFTER_S`)."""
        status = self.raw_status()
        if status.get("state") not in ACTIVE_STATES:
            return status
        if status.get("host", socket.gethostname()) == socket.gethostname():
            orphaned = not process_alive(status.get("pid"))
            reason = "The training process ended without finishing (killed or crashed)."
        else:
            orphaned = age_s(status.get("updated_at")) > STALE_AFTER_S
            reason = (
                f"No heartbeat from {status.get('host')} for over {STALE_AFTER_S:.0f} s: its process or node was lost."
            )
        if orphaned:
            status = {**status, "state": "failed", "stale": True, "error": status.get("error") or reason}
        return status

    def check_resumable(self) -> None:
        """Refuse, with the reason, to resume a run that is not failed or cancelled."""
        state = self.status().get("state")
        if state not in RESUMABLE_STATES:
            raise PipelineError(f"Only a failed or cancelled run can be resumed; {self.run_id} is {state}.")

    def update_status(self, **changes: Any) -> dict[str, Any]:
        """Read status.json, apply `changes`, write it back atomically; one writer at a time across threads and
        processes (a lock file beside it), so no writer's change is lost to another's."""
        with _STATUS_LOCK, file_lock(self.file(STATUS_LOCK)):
            try:
                status = self.raw_status()
            except (FileNotFoundError, PipelineError):
                status = {}
            status.update(changes)
            status["updated_at"] = now_iso()
            status.setdefault("host", socket.gethostname())
            write_json_atomic(self.file(STATUS), status)
            return status

    # -- tables ----------------------------------------------------------------------------
    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """Write history.csv (one row per epoch) whole or not at all."""
        write_csv_atomic(self.file(HISTORY), pd.DataFrame(rows, columns=HISTORY_COLUMNS))

    def history(self) -> pd.DataFrame:
        """The per-epoch history (empty before the first epoch); `PipelineError` when the file is damaged."""
        if not self.file(HISTORY).is_file():
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        return read_table(self.file(HISTORY), self.run_id, HISTORY_COLUMNS)

    @property
    def predictions_path(self) -> Path:
        """The test predictions (predictions.csv)."""
        return self.file(PREDICTIONS)

    @property
    def metrics_path(self) -> Path:
        """The test and validation figures (metrics.json)."""
        return self.file(METRICS)

    @property
    def release_card_path(self) -> Path:
        """A released model's card (MODEL_CARD.md); absent for a run."""
        return self.file(RELEASE_CARD)

    @property
    def split_path(self) -> Path:
        """The split (split.csv): which image was in which subset; its time says when the split changed."""
        return self.file(SPLIT)

    def write_split(self, frame: pd.DataFrame) -> None:
        """split.csv with absolute paths, so the run is matched against other data from any working folder."""
        frame = frame[SPLIT_COLUMNS]
        write_csv_atomic(self.file(SPLIT), frame.assign(path=[str(Path(path).resolve()) for path in frame["path"]]))

    def split(self) -> pd.DataFrame:
        """The split with absolute paths; a relative path of an older run is resolved against the working folder,
        else the project's folder (where runs used to be started)."""
        split = read_table(self.file(SPLIT), self.run_id, SPLIT_COLUMNS, text=tuple(SPLIT_COLUMNS), classes=("label",))
        if split.empty or all(Path(path).is_absolute() for path in split["path"]):
            return split
        return split.assign(path=resolvable_all(split["path"]))

    def write_predictions(self, frame: pd.DataFrame) -> None:
        """Write predictions.csv whole or not at all."""
        write_csv_atomic(self.file(PREDICTIONS), frame[PREDICTION_COLUMNS])

    def predictions(self) -> pd.DataFrame:
        """The test predictions (predictions.csv), checked."""
        return read_table(
            self.file(PREDICTIONS),
            self.run_id,
            PREDICTION_COLUMNS,
            numeric=("prob_all",),
            text=("path", "patient", "label", "predicted"),
            classes=("label", "predicted"),
        )

    def write_skipped(self, skipped: list[tuple[str, str]]) -> None:
        """The files of the data the run left out because they do not read, with the reason for each."""
        write_csv_atomic(self.file(SKIPPED), pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))

    def skipped(self) -> pd.DataFrame:
        """The files the run left out (path, reason); empty for a run that skipped none or from before 0.3.0."""
        if not self.file(SKIPPED).is_file():
            return pd.DataFrame(columns=SKIPPED_COLUMNS)
        return read_table(self.file(SKIPPED), self.run_id, SKIPPED_COLUMNS, text=tuple(SKIPPED_COLUMNS))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json whole or not at all."""
        write_json_atomic(self.file(METRICS), metrics)

    def metrics(self) -> dict[str, Any] | None:
        """The test (and validation) figures, None before the run has them; `PipelineError` naming what is wrong
        when the file does not read or does not hold figures (a wrong type, a text where a number belongs)."""
        if not self.file(METRICS).is_file():
            return None
        metrics = read_object(self.file(METRICS), self.run_id)
        problem = metrics_problem(metrics, METRICS)
        if problem:
            raise PipelineError(f"{problem}; the run folder {self.run_id} is damaged.")
        return metrics

    def has_model(self) -> bool:
        """Whether the folder holds a model: a whole `model.keras`, or a released head."""
        return self.model_path.is_file() or self.file(HEAD).is_file()

    @property
    def released(self) -> bool:
        """Whether the folder is a released model: a `head.npz` and no `model.keras`."""
        return self.file(HEAD).is_file() and not self.model_path.is_file()

    @property
    def model_file(self) -> Path:
        """The file the model is loaded from: `model.keras`, else a released `head.npz`."""
        return self.file(HEAD) if self.released else self.model_path

    def completeness_problem(self) -> str | None:
        """Why this run, said to be completed, cannot be shown or used; None when everything it must hold
        (a readable history with epochs, split, predictions, metrics and a whole model file) is there."""

        released = self.released
        try:
            if not released and self.history().empty:
                return f"{HISTORY} holds no epoch."
            if self.split().empty:
                return f"{SPLIT} is empty."
            if self.predictions().empty:
                return f"{PREDICTIONS} is empty."
            if not self.metrics():
                return f"{METRICS} is missing."
            if released:
                from ..models.release import Release

                Release.load(self.file(HEAD))
            else:
                check_model_file(self.model_path)
        except PipelineError as error:
            return str(error)
        except (OSError, ValueError) as error:
            return f"A file of the run does not read: {error}"
        return None
