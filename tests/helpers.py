"""Run folders made by hand, without TensorFlow: what a completed run must hold, with metrics computed by the
pipeline's own `run_metrics` from made-up predictions."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.evaluation.evaluate import label_from_prob
from pipeline.evaluation.run_metrics import run_metrics
from pipeline.runs.contract import create_run_dir
from pipeline.runs.folder import RunFolder

TINY_BACKBONE = "efficientnet_lite0"
"""The smallest backbone the product builds: tracing a training step of Lite0 takes ~28 s here against ~51 s for
B0 (the fit code, checkpoints and pages are the same for every backbone; tests/test_model.py covers B0 itself)."""


PROJECT = Path(__file__).resolve().parent.parent


def copy_project(target: Path, leave_out: tuple[str, ...] = ()) -> None:
    """The project's files as a checkout holds them (tracked, or new and not ignored) copied to `target`, but for
    those under the folders in `leave_out`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (PROJECT / name).is_file() and not name.startswith(leave_out):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, target / name)


def make_split(patients: dict[str, tuple[str, str, int]]) -> pd.DataFrame:
    """A split table from {patient: (label, subset, images)}."""
    rows = [
        {"path": f"/cells/{patient}_{index}.png", "patient": patient, "label": label, "subset": subset}
        for patient, (label, subset, count) in patients.items()
        for index in range(count)
    ]
    return pd.DataFrame(rows)


DEFAULT_SPLIT = {
    "UID_1": ("ALL", "train", 4),
    "UID_H1": ("HEM", "train", 4),
    "UID_2": ("ALL", "val", 3),
    "UID_H2": ("HEM", "val", 3),
    "UID_3": ("ALL", "test", 3),
    "UID_H3": ("HEM", "test", 3),
}


def predictions_for(split: pd.DataFrame, subset: str, seed: int = 0, skill: float = 0.3) -> pd.DataFrame:
    """Made-up predictions for `subset`: P(ALL) leans towards the truth by `skill`."""
    rows = split[split["subset"] == subset].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    prob_all = np.clip(
        0.5 + skill * np.where(rows["label"] == "ALL", 1, -1) + rng.normal(0, 0.25, len(rows)), 0.01, 0.99
    ).round(6)
    return rows[["path", "patient", "label"]].assign(predicted=label_from_prob(prob_all), prob_all=prob_all)


def fake_run(
    runs_dir: Path,
    name: str,
    state: str = "completed",
    config: dict[str, Any] | None = None,
    split: pd.DataFrame | None = None,
    seed: int = 0,
    skill: float = 0.3,
) -> RunFolder:
    """A run folder in `state`; a completed one holds a one-epoch history, its split, test predictions, the
    metrics the pipeline computes from them and a `.keras` archive (a zip with a config, not a loadable model)."""
    folder = RunFolder(create_run_dir(runs_dir, name))
    folder.write_config(
        {
            "data_dir": "",
            "backbone": "efficientnet_b0",
            "epochs": 1,
            "batch_size": 8,
            "split": "patient",
            "data_kind": "real images",
            "weights_used": "none (random initialisation)",
            "image_size": 32,
            **(config or {}),
        }
    )
    folder.update_status(state=state, pid=os.getpid(), host=socket.gethostname())
    if state == "completed":
        split = split if split is not None else make_split(DEFAULT_SPLIT)
        folder.write_history(
            [{"epoch": 1, "accuracy": 0.5, "loss": 0.7, "val_accuracy": 0.5, "val_loss": 0.7, "learning_rate": 1e-4}]
        )
        folder.write_split(split)
        test = predictions_for(split, "test", seed, skill)
        validation = predictions_for(split, "val", seed + 1, skill)
        folder.write_predictions(test)
        folder.write_metrics(run_metrics(test, validation if len(validation) else None, split))
        with zipfile.ZipFile(folder.model_path, "w") as archive:
            archive.writestr("config.json", "{}")
    return folder


def shown_text(markdown: str) -> str:
    """What a reader sees of Markdown whose marks were escaped (`pipeline.runs.display.escape_markdown`)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def metric(app: Any, label: str) -> str:
    """The value an AppTest page shows in the metric labelled `label`."""
    matches = [item.value for item in app.metric if item.label == label]
    assert matches, f"no metric {label!r} among {[item.label for item in app.metric]}"
    return matches[0]


def wait_for_state(run_dir: Path, states: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
    """Poll a run's status until it reaches one of `states` ."""
    folder = RunFolder(run_dir)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = folder.status()
            if status.get("state") in states:
                return status
        except (FileNotFoundError, PipelineError):
            status = {}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir} did not reach {states} within {timeout_s} s (last: {status}).")
        time.sleep(0.5)


def record_spawns(monkeypatch: Any) -> list:
    """Stand in for `launch._spawn` (no background process starts) and return the list each launch's run folders
    are appended to."""
    from pipeline.training import launch

    spawned: list = []
    monkeypatch.setattr(
        launch, "_spawn", lambda folders, engine=None: spawned.append(folders) or type("P", (), {"pid": 1})()
    )
    return spawned


def make_check_folder(root: Path, subjects: int = 3, cells: int = 2, seed: int = 11, first: int = 901) -> Path:
    """A class-folder check of synthetic cells of subjects no synthetic data set has (UID_901..., healthy
    UID_H901...), `cells` per subject."""
    import cv2

    from pipeline.data.synthetic import render_cell

    rng = np.random.default_rng(seed)
    for label in ("all", "hem"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for subject in range(1, subjects + 1):
            name = f"{'H' if label == 'hem' else ''}{first + subject - 1}"
            stain, brightness = rng.normal(0, 9, size=3), float(rng.normal(1.0, 0.08))
            for cell in range(1, cells + 1):
                image = render_cell(rng, label, stain, brightness, 96)
                cv2.imwrite(str(root / label / f"UID_{name}_1_{cell}_{label}.png"), image[..., ::-1])
    return root
