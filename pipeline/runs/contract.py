"""The run-folder contract: its file and folder names, states, table columns and run ids (docs/architecture.md),
and how old a status may be before its run counts as lost."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from ..core.errors import PipelineError

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


def age_s(iso_time: str | None) -> float:
    """Seconds since an ISO time of a status (infinite when there is none)."""
    if not iso_time:
        return float("inf")
    then = datetime.fromisoformat(iso_time)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()
