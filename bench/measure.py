"""Sound timing: steady-state steps only, repeats, alternatives interleaved (ABAB), medians with their spread,
ratios taken pair by pair (A and B of the same round see the same background load); a process's memory and CPU time."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def spread(values: list[float]) -> dict[str, Any]:
    """Median, quartiles, min and max of repeated measurements."""
    array = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(array)),
        "q1": float(np.percentile(array, 25)),
        "q3": float(np.percentile(array, 75)),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(len(array)),
    }


def paired_ratio(numerators: list[float], denominators: list[float]) -> dict[str, Any]:
    """The ratio of each round's A to its B, summarised: the spread says how far one round can be trusted."""
    return spread([a / b for a, b in zip(numerators, denominators, strict=True)])


def interleaved(tasks: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each task once to warm up (not kept), then `repeats` rounds of every task in turn (ABAB...)."""
    for task in tasks.values():
        task()
    samples: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(repeats):
        for name, task in tasks.items():
            samples[name].append(task())
    return samples


def timed(function: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def batch_timer() -> Any:
    """A Keras callback recording the duration of every training step."""
    import keras

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.durations: list[float] = []
            self._start = 0.0

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.durations.append(time.perf_counter() - self._start)

    return BatchTimer()


def steady_training_rate(model: Any, dataset: Any, steps: int, batch_size: int) -> float:
    """Images per second over `steps` training steps, the first step of the call left out (it may wait for the
    input pipeline to fill or for a retrace); `dataset` must repeat."""
    timer = batch_timer()
    model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, callbacks=[timer], verbose=0)
    return batch_size * steps / sum(timer.durations[1:])


def pipeline_rate(dataset: Any, batches: int, batch_size: int) -> float:
    """Images per second an input pipeline delivers alone, over `batches` batches after one."""
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch_size * batches / (time.perf_counter() - start)


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return 0.0
    return 0.0


class PeakMemory(threading.Thread):
    """Samples a process's resident memory every 0.1 s while running; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        """Sample the server's resident memory every 0.1 s until stopped, keeping the peak."""
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.1)


def cpu_seconds(match: str | int) -> float:
    """CPU time (user + system) of one process (a pid) or of every process whose command line holds `match`."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if isinstance(match, int) and stat.parent.name != str(match):
                continue
            if isinstance(match, str) and match not in (stat.parent / "cmdline").read_bytes().decode(errors="ignore"):
                continue
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator` to two decimals; None when either is missing or zero."""
    return round(numerator / denominator, 2) if numerator and denominator else None
