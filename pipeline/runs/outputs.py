"""What a run folder holds besides the run's own files: per-epoch checkpoints, and the outputs of later commands
(evaluations on other data, explanation rankings, exports, the report, TensorBoard logs)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..core.files import atomic_write
from .contract import (
    CHECKPOINT_DIR,
    CHECKPOINT_PATTERN,
    EVALUATIONS_DIR,
    EXPLANATIONS_DIR,
    EXPORTS_DIR,
    METRICS,
    REPORT,
    TENSORBOARD_DIR,
    slug,
)
from .readers import readable_objects


class RunOutputs:
    """The checkpoint and output paths of a run folder at `path` (RunFolder adds the run's own files)."""

    path: Path

    def file(self, name: str) -> Path:
        """The path of one of the run's files."""
        return self.path / name

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
        return readable_objects(
            {path.stem.removeprefix("road-"): path for path in sorted(self.file(EXPLANATIONS_DIR).glob("road-*.json"))}
        )

    def evaluations(self) -> dict[str, dict[str, Any]]:
        """The metrics of each `evaluate` on other data (or on the test subset again), by evaluation name."""
        return readable_objects(
            {folder.name: folder / METRICS for folder in sorted(self.file(EVALUATIONS_DIR).glob("*/"))}
        )
