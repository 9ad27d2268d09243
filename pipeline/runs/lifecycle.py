"""A run's life beyond its files: the heartbeat of a running process, cancellation by SIGTERM, and marking runs
cancelled or failed that could not say so themselves."""

from __future__ import annotations

import signal
import threading
from typing import Any

from ..core.errors import PipelineError, RunCancelled
from .contract import ACTIVE_STATES, HEARTBEAT_S, now_iso
from .folder import RunFolder


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
