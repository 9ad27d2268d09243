"""Many runs on a Ray cluster: each prepared run folder is one Ray task that executes it exactly as a local run does.

The run folders (and `ARTIFACTS_DIR`, where caches and cross-validation summaries go) must be on storage every node
sees at the same path (NFS, a cluster file system, one machine's disk for a one-machine cluster). Each node needs
this package and its requirements installed (`pip install .` on every node, or a container image). The caller
follows the runs through their folders and prints a table at the end.

What Ray gives: a failed run does not stop the others (a run's own error is recorded in its folder and not
retried); a run whose worker or node is lost is retried on another node (`max_retries`) and resumes from its last
checkpoint (full fine-tuning keeps one per epoch; fast mode starts again, from cached features); cancelling the
caller (Ctrl-C, SIGTERM) cancels every task and marks its runs cancelled.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.config import artifacts_dir, child_python_path
from ..core.errors import PipelineError
from ..runs.folder import RunFolder
from ..runs.lifecycle import mark_cancelled, record_failure
from .train import execute_run

ENGINES = ("local", "ray")
RAY_REQUIREMENTS = "requirements-ray.txt"
LOST_RETRIES = 2
"""How often a run is started again after its worker process or node was lost (not after its own error)."""
PASSED_ENVIRONMENT = ("ARTIFACTS_DIR", "KERAS_HOME", "CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL")


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise PipelineError(
            f"The Ray engine needs Ray: pip install -r {RAY_REQUIREMENTS} (the pinned version), "
            "on this machine and on every node of the cluster."
        ) from error
    return ray


def _execute(run_dir: str) -> str:
    """The body of one Ray task: execute the run folder; its state is what the folder says afterwards."""
    folder = RunFolder(Path(run_dir))
    if folder.raw_status().get("state") == "running":  # a retry after a lost worker: continue, do not refuse
        folder.update_status(state="queued", phase="retried after a lost worker", error=None)
    try:
        execute_run(folder)
    except Exception as error:  # noqa: BLE001 - recorded in the run folder (state, error, log); the others go on
        record_failure(folder, error)
    return folder.raw_status().get("state", "unknown")


def _environment() -> dict[str, str]:
    """What a task's process needs from the caller's environment: where runs and caches live (absolute), and
    where this package is when it runs from a checkout."""

    passed = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    passed["ARTIFACTS_DIR"] = str(artifacts_dir().resolve())  # the caller's, wherever a task's process starts
    passed["PYTHONPATH"] = child_python_path()
    passed["PYTHONUNBUFFERED"] = "1"
    return passed


@contextmanager
def _environment_while(values: dict[str, str]) -> Iterator[None]:
    """`values` in this process's environment (where not already set) for the block only."""
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once an address where nothing listens (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PipelineError(f"The Ray address {address!r} is not HOST:PORT, auto or local.")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        raise PipelineError(
            f"No Ray cluster answers at {address} ({error.strerror or error}); start one with "
            "`ray start --head` or use --address local."
        ) from error


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (`auto`, `HOST:PORT`), or start a local Ray for this call (None or `local`).
    True when this call started Ray (and must shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    local = address in (None, "", "local")
    if not local and address != "auto":
        _check_reachable(address)
    try:
        options = {"_node_ip_address": "127.0.0.1"} if local else {}  # a Ray of this call only: nobody joins
        # Ray 2.60 otherwise writes ~/.ray/auth_token for a Ray started by ray.init, and every later `ray start` on
        # this machine then asks for that token (`ray status` fails); `ray start`'s own default is no token. Set for
        # the start only, and put back as it was.
        with _environment_while({"RAY_AUTH_MODE": "disabled"} if local else {}):
            # "local" starts a new Ray for this call, never one left running here by an earlier `ray start`
            ray.init(
                address="local" if local else address,
                runtime_env={"env_vars": _environment()},
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                **options,
            )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise PipelineError(f"Could not connect to the Ray cluster at {address}: {error}") from error
    return True


def execute_on_ray(
    folders: list[RunFolder],
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    poll_s: float = 2.0,
    report: Callable[[str], None] | None = None,
) -> bool:
    """Execute prepared run folders as Ray tasks (at most as many at once as the cluster's resources allow); True
    if every run completed. Progress lines go to `report` (stderr by default) as runs change state."""
    ray = _ray()
    report = report or (lambda line: print(line, file=sys.stderr))
    started_here = connect(address)
    task = ray.remote(
        num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=LOST_RETRIES, retry_exceptions=False, max_calls=1
    )(_execute)  # one process per run: a clean TensorFlow
    pending = {task.remote(str(folder.path.resolve())): folder for folder in folders}
    seen: dict[str, str] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=poll_s)
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as error:  # lost more often than retried: the run says so
                    pending[ref].update_status(state="failed", phase="failed", error=f"Ray task lost: {error}")
                del pending[ref]
            for folder in folders:
                state = folder.status()
                line = f"{state.get('state')} {state.get('phase', '')} epoch {state.get('epoch', 0)}"
                if seen.get(folder.run_id) != line:
                    seen[folder.run_id] = line
                    report(f"{folder.run_id}: {line}".rstrip())
    except BaseException:  # Ctrl-C or SIGTERM: stop every task and say so in its run
        for ref in pending:
            ray.cancel(ref, force=True)
        mark_cancelled([folder for folder in pending.values()], "Cancelled with its sweep.")
        raise
    finally:
        if started_here:
            ray.shutdown()
    return all(folder.status().get("state") == "completed" for folder in folders)
