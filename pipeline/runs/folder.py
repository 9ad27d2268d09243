"""The run folder: the only module that knows its file names.

Every file is written to a temporary name and renamed into place, so any process can read a run
while another writes it and never sees half a file.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .. import DISPLAY_ORDER
from ..core.config import PROJECT_ROOT, TrainConfig
from ..core.errors import PipelineError, RunCancelled
from ..core.files import atomic_write, read_json, write_csv_atomic, write_json_atomic
from ..evaluation.metrics import metrics_problem
from ..models.model import check_model_file

CONFIG = "config.json"
STATUS = "status.json"
STATUS_LOCK = ".status.lock"
HISTORY = "history.csv"
SPLIT = "split.csv"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"
SKIPPED = "skipped.csv"
MODEL = "model.keras"
HEAD = "head.npz"
RELEASE_CARD = "MODEL_CARD.md"
"""A released model keeps only its head (`pipeline.models.release`); its backbone comes from the installed package."""
LOG = "log.txt"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PATTERN = "epoch-*.keras"
EVALUATIONS_DIR = "evaluations"
EXPLANATIONS_DIR = "explanations"
EXPORTS_DIR = "exports"
REPORT = "report.html"
TENSORBOARD_DIR = "tensorboard"

STATES = ("queued", "running", "completed", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
RESUMABLE_STATES = ("failed", "cancelled")
HISTORY_COLUMNS = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"]
SPLIT_COLUMNS = ["path", "patient", "label", "subset"]
PREDICTION_COLUMNS = ["path", "patient", "label", "predicted", "prob_all"]
SKIPPED_COLUMNS = ["path", "reason"]

HEARTBEAT_S = 30.0
"""A running run's process writes its status at least this often (a heartbeat thread), whatever it is doing."""
STALE_AFTER_S = 300.0
"""A run on another host whose status has not been written for this long is judged lost (its node died): the pid
of a process on another machine says nothing here."""

_STATUS_LOCK = threading.Lock()  # the heartbeat thread and the training thread write one status file in turn

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slug(text: str) -> str:
    """`text` reduced to characters safe in a run id."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned[:80] or "run"


def validate_run_id(run_id: str) -> str:
    """`run_id` itself, or a PipelineError when it could leave the runs folder."""
    if not _RUN_ID.match(run_id or "") or ".." in run_id:
        raise PipelineError(f"{run_id!r} is not a valid run id (letters, digits, '.', '_' and '-' only).")
    return run_id


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


def resolve_run_dir(runs_dir: Path, run_id: str) -> Path:
    """The folder of `run_id` inside `runs_dir`; refuses ids that would leave it."""
    validate_run_id(run_id)
    base = Path(runs_dir).resolve()
    run_dir = (base / run_id).resolve()
    if run_dir.parent != base:
        raise PipelineError(f"{run_id!r} is not a run of {runs_dir}.")
    return run_dir


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """Make a new, uniquely named run folder: `<YYYYmmdd-HHMMSS>-<name>`."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{slug(name)}"
    for attempt in range(1000):
        run_id = base if attempt == 0 else f"{base}-{attempt + 1}"
        try:
            (runs_dir / run_id).mkdir()
        except FileExistsError:
            continue
        return runs_dir / run_id
    raise PipelineError(f"Could not create a new run folder in {runs_dir}.")


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (one of another user counts)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TRAINED_ELSEWHERE = {"data_kind": "unknown (model trained elsewhere)", "weights_used": "unknown"}
"""What is known of a bare `model.keras` without a config: it was trained elsewhere."""


def weights_label(settings: dict[str, Any]) -> str:
    """The one label of a run's weights (config.json's settings): those it used; before it has loaded them,
    those it asked for, said so."""
    used = settings.get("weights_used")
    if used and settings.get("freeze_backbone") and str(used).startswith("none"):
        return f"random features ({used}, frozen)"
    if used:
        return str(used)
    asked = settings.get("weights")
    return f"{asked} (not loaded yet)" if asked else "unknown"


@dataclass(frozen=True)
class RunRecord:
    """A run's settings as the layers above read them: its `TrainConfig` (None for a bare model trained elsewhere)
    and the provenance `config.json` keeps beside it (created, group, data kind and layout, weights used, device,
    versions), with one label for its weights."""

    run_id: str
    config: TrainConfig | None
    provenance: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        """Everything config.json holds (a bare model: what is known of it)."""
        return {**(self.config.to_dict() if self.config else {}), **self.provenance}

    @property
    def weights(self) -> str:
        """The run's weights, as the pages label them."""
        return weights_label(self.settings)

    @property
    def trained_elsewhere(self) -> bool:
        """Whether the model came without a config (trained outside this project)."""
        return self.config is None

    def get(self, key: str, default: Any = None) -> Any:
        """One setting of the run, or `default`."""
        return self.settings.get(key, default)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (`fcntl.flock`) on `path`, created when missing, for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass
class RunFolder:
    """Reads and writes one run folder."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def run_id(self) -> str:
        """The run's id: its folder's name."""
        return self.path.name

    def file(self, name: str) -> Path:
        """The path of one of the run's files."""
        return self.path / name

    @property
    def model_path(self) -> Path:
        """The trained model (model.keras)."""
        return self.file(MODEL)

    @property
    def log_path(self) -> Path:
        """The run's log file."""
        return self.file(LOG)

    @property
    def checkpoint_dir(self) -> Path:
        """The folder of per-epoch checkpoints."""
        return self.file(CHECKPOINT_DIR)

    def checkpoint_path(self, epoch: int) -> Path:
        """The checkpoint written at the end of `epoch`."""
        return self.checkpoint_dir / CHECKPOINT_PATTERN.replace("*", f"{epoch:04d}")

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """(epochs done, model file) of the newest whole checkpoint; temporary files are never taken."""
        if not self.checkpoint_dir.is_dir():
            return None
        found = sorted(self.checkpoint_dir.glob(CHECKPOINT_PATTERN))
        return (int(found[-1].stem.split("-")[1]), found[-1]) if found else None

    def save_checkpoint(self, model: Any, epochs_done: int) -> None:
        """The whole model and optimizer after `epochs_done` epochs; older checkpoints go once it is in place."""
        target = self.checkpoint_path(epochs_done)
        atomic_write(target, model.save)
        for older in self.checkpoint_dir.glob(CHECKPOINT_PATTERN):
            if older != target:
                older.unlink(missing_ok=True)

    def remove_checkpoints(self) -> None:
        """Delete the checkpoints (once the final model is saved)."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def save_model(self, model: Any) -> None:
        """Save the model whole or not at all."""
        atomic_write(self.model_path, model.save)

    def evaluation_dir(self, name: str) -> Path:
        """Where `evaluate --data` writes the predictions and metrics of one other data set."""
        return self._subfolder(f"{EVALUATIONS_DIR}/{slug(name)}")

    def _subfolder(self, name: str) -> Path:
        folder = self.file(name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def exports_dir(self) -> Path:
        """Where exported models (zip of the model and its card) are kept."""
        return self._subfolder(EXPORTS_DIR)

    def exports(self) -> list[Path]:
        """The run's export archives, by name."""
        return sorted(self.file(EXPORTS_DIR).glob("*.zip"))

    @property
    def report_path(self) -> Path:
        """The run's HTML report."""
        return self.file(REPORT)

    @property
    def tensorboard_dir(self) -> Path:
        """The run's TensorBoard logs."""
        return self.file(TENSORBOARD_DIR)

    def explanations_dir(self) -> Path:
        """Where `explain-eval` writes the ROAD ranking of explanation methods."""
        return self._subfolder(EXPLANATIONS_DIR)

    def explanation_rankings(self) -> dict[str, dict[str, Any]]:
        """The ROAD summaries of `explain-eval`, by layer."""
        return _readable_json(
            {path.stem.removeprefix("road-"): path for path in sorted(self.file(EXPLANATIONS_DIR).glob("road-*.json"))}
        )

    def evaluations(self) -> dict[str, dict[str, Any]]:
        """The metrics of each `evaluate` on other data (or on the test subset again), by evaluation name."""
        return _readable_json(
            {folder.name: folder / METRICS for folder in sorted(self.file(EVALUATIONS_DIR).glob("*/"))}
        )

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

    def _read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run; a damaged one is a `PipelineError` naming it (a missing one stays
        `FileNotFoundError`)."""
        try:
            payload = read_json(self.file(name))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as error:
            raise PipelineError(
                f"{name} of run {self.run_id} does not read ({type(error).__name__}: {error}); "
                f"the run folder is damaged."
            ) from error
        if not isinstance(payload, dict):
            raise PipelineError(
                f"{name} of run {self.run_id} holds a {type(payload).__name__}, not a JSON object; "
                "the run folder is damaged."
            )
        return payload

    def config(self) -> dict[str, Any]:
        """The run's settings (config.json), checked."""
        return self._read_json(CONFIG)

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
        return self._read_json(STATUS)

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
            orphaned = _age_s(status.get("updated_at")) > STALE_AFTER_S
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
        with _STATUS_LOCK, _file_lock(self.file(STATUS_LOCK)):
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
        return self._table(HISTORY, HISTORY_COLUMNS)

    def write_split(self, frame: pd.DataFrame) -> None:
        """split.csv with absolute paths, so the run is matched against other data from any working folder."""
        frame = frame[SPLIT_COLUMNS]
        write_csv_atomic(self.file(SPLIT), frame.assign(path=[str(Path(path).resolve()) for path in frame["path"]]))

    def split(self) -> pd.DataFrame:
        """The split with absolute paths; a relative path of an older run is resolved against the working folder,
        else the project's folder (where runs used to be started)."""
        split = self._table(SPLIT, SPLIT_COLUMNS, text=tuple(SPLIT_COLUMNS), classes=("label",))
        if split.empty or all(Path(path).is_absolute() for path in split["path"]):
            return split
        return split.assign(path=[_resolvable(path) for path in split["path"]])

    def write_predictions(self, frame: pd.DataFrame) -> None:
        """Write predictions.csv whole or not at all."""
        write_csv_atomic(self.file(PREDICTIONS), frame[PREDICTION_COLUMNS])

    def predictions(self) -> pd.DataFrame:
        """The test predictions (predictions.csv), checked."""
        return self._table(
            PREDICTIONS,
            PREDICTION_COLUMNS,
            numeric=("prob_all",),
            text=("path", "patient", "label", "predicted"),
            classes=("label", "predicted"),
        )

    def _table(
        self,
        name: str,
        columns: list[str],
        numeric: tuple[str, ...] = (),
        text: tuple[str, ...] = (),
        classes: tuple[str, ...] = (),
    ) -> pd.DataFrame:
        """A CSV of the run with the columns its readers need, `numeric` ones all probabilities, `text` ones all
        filled in and `classes` ones holding only class names; a damaged one is a `PipelineError` naming it (a
        missing one stays `FileNotFoundError`)."""
        path = self.file(name)
        if not path.is_file():
            raise FileNotFoundError(path)
        try:
            table = pd.read_csv(path, dtype=dict.fromkeys(text, str))
        except (OSError, ValueError) as error:
            raise PipelineError(f"{name} of run {self.run_id} does not read ({error}).") from error
        missing = [column for column in columns if column not in table]
        if missing:
            raise PipelineError(f"{name} of run {self.run_id} lacks the column(s) {', '.join(missing)}.")
        for column in numeric:
            values = pd.to_numeric(table[column], errors="coerce")
            if values.isna().any() or not values.between(0, 1).all():
                raise PipelineError(f"{name} of run {self.run_id}: {column} holds values that are not probabilities.")
        for column in text:
            if table[column].isna().any():
                raise PipelineError(f"{name} of run {self.run_id}: {column} has empty cells.")
        for column in classes:
            if not table[column].isin(DISPLAY_ORDER).all():
                raise PipelineError(
                    f"{name} of run {self.run_id}: {column} holds other than {' and '.join(DISPLAY_ORDER)}."
                )
        return table

    def write_skipped(self, skipped: list[tuple[str, str]]) -> None:
        """The files of the data the run left out because they do not read, with the reason for each."""
        write_csv_atomic(self.file(SKIPPED), pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))

    def skipped(self) -> pd.DataFrame:
        """The files the run left out (path, reason); empty for a run that skipped none or from before 0.3.0."""
        if not self.file(SKIPPED).is_file():
            return pd.DataFrame(columns=SKIPPED_COLUMNS)
        return self._table(SKIPPED, SKIPPED_COLUMNS, text=tuple(SKIPPED_COLUMNS))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json whole or not at all."""
        write_json_atomic(self.file(METRICS), metrics)

    def metrics(self) -> dict[str, Any] | None:
        """The test (and validation) figures, None before the run has them; `PipelineError` naming what is wrong
        when the file does not read or does not hold figures (a wrong type, a text where a number belongs)."""
        if not self.file(METRICS).is_file():
            return None
        metrics = self._read_json(METRICS)
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


def _readable_json(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The JSON of each file that reads, by name; a missing or damaged one is left out."""
    found = {}
    for name, path in paths.items():
        try:
            found[name] = read_json(path)
        except (OSError, ValueError):
            continue
    return found


def _resolvable(path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute():
        return path

    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / candidate).exists():
            return str((base / candidate).resolve())
    return str(candidate.resolve())


def _age_s(iso_time: str | None) -> float:
    """Seconds since an ISO time of a status (infinite when there is none)."""
    if not iso_time:
        return float("inf")
    then = datetime.fromisoformat(iso_time)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()


class Heartbeat:
    """While in its `with` block, writes the run's status every `every_s` seconds from a daemon thread, so a run
    on any host shows it is alive however long one phase takes."""

    def __init__(self, folder: RunFolder, every_s: float = HEARTBEAT_S) -> None:
        self.folder, self.every_s = folder, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{folder.run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.folder.update_status()
            except (OSError, PipelineError):  # a storage hiccup must not kill the run; the next beat tries again
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _raise_cancelled(signum: int, frame: Any) -> None:
    raise RunCancelled(f"stopped by signal {signum}")


def cancel_on_sigterm() -> None:
    """Make SIGTERM (the dashboard's cancel) stop this process like Ctrl-C, so its runs end `cancelled`."""
    signal.signal(signal.SIGTERM, _raise_cancelled)


def mark_cancelled(folders: list[RunFolder], reason: str = "Cancelled by the user.") -> None:
    """Mark the still queued or running runs among `folders` as cancelled."""
    for folder in folders:
        try:
            active = folder.raw_status().get("state") in ACTIVE_STATES
        except (OSError, ValueError):
            continue
        if active:
            folder.update_status(state="cancelled", phase="cancelled", ended_at=now_iso(), error=reason)


def record_failure(folder: RunFolder, error: BaseException) -> None:
    """Mark a run that raised `error` before it could record its own end (a config that does not read, say) as
    failed with the error; a run that already recorded an end keeps it."""
    try:
        active = folder.raw_status().get("state") in ACTIVE_STATES
    except (OSError, ValueError):  # a damaged status.json: replaced by the failure
        active = True
    if active:
        folder.update_status(
            state="failed", phase="failed", ended_at=now_iso(), error=f"{type(error).__name__}: {error}"
        )
