"""A run's settings as the layers above read them: `RunRecord` (its TrainConfig and provenance), one weights label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.config import TrainConfig

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


def backbone_label(settings: dict[str, Any]) -> str | None:
    """The backbone of a run's settings; a released ensemble's members joined by " + " (the primary first)."""
    members = settings.get("members") or []
    if len(members) > 1:
        return " + ".join(str(member.get("backbone")) for member in members)
    return settings.get("backbone")


def image_size_label(settings: dict[str, Any]) -> Any:
    """The input size of a run's settings; a released ensemble's sizes joined by "/" (each member has its own)."""
    members = settings.get("members") or []
    if len(members) > 1:
        return "/".join(str(member.get("image_size")) for member in members)
    return settings.get("image_size")


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
