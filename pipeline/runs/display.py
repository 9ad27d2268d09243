"""How runs and their files are shown: paths hidden or shortened, names of models and backbones, provenance and
durations as text, tables safe for spreadsheets, example cells picked across patients."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import EMBEDDED_SAMPLE
from ..data.layouts import cell_name
from .record import backbone_label, image_size_label, weights_label


def shown_path(path: str | Path | None, hide_paths: bool = False) -> str:
    """A data folder as a page may show it: the full path, or (`hide_paths`, a hosted demo) no server internals:
    the embedded sample as `samples/cnmc-fold1`, any other folder by its name."""
    if not path:
        return "?"
    if not hide_paths:
        return str(path)

    resolved = Path(path).resolve()
    if resolved == EMBEDDED_SAMPLE or EMBEDDED_SAMPLE in resolved.parents:
        return str(resolved.relative_to(EMBEDDED_SAMPLE.parent.parent))
    return resolved.name


def without_paths(text: str) -> str:
    """A message with every absolute path cut to its last part (`/srv/app/runs/x/model.keras` -> `model.keras`)."""
    return re.sub(r"(?<![\w.])/(?:[\w.-]+/)+", "", text)


def without_server_paths(predictions: pd.DataFrame, data_dir: str | None) -> pd.DataFrame:
    """Predictions whose `path` column is relative to the data root (a file outside it keeps only its name)."""
    root = Path(data_dir).resolve() if data_dir else None

    def relative(path: str) -> str:
        resolved = Path(path).resolve()
        if root is not None and root in resolved.parents:
            return str(resolved.relative_to(root))
        return resolved.name

    return predictions.assign(path=predictions["path"].map(relative)) if "path" in predictions else predictions


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Characters with which a spreadsheet reads a cell as a formula (OWASP's CSV injection list)."""


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for a CSV download: every text cell that a spreadsheet would run as a formula is prefixed with a
    single quote (OWASP), so a file named `=HYPERLINK(...)` stays text; numbers are left as they are."""

    def neutral(value: Any) -> Any:
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    text_columns = [
        column
        for column in frame.columns
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column])
    ]
    return frame.assign(**{column: frame[column].map(neutral) for column in text_columns})


def backbone_name(backbone: str | None) -> str:
    """`efficientnet_lite0` -> `EfficientNet-Lite0`, `efficientnet_b3` -> `EfficientNet-B3` (each of an ensemble's
    names joined by " + ")."""
    if backbone and " + " in backbone:
        return " + ".join(backbone_name(part) for part in backbone.split(" + "))
    if not backbone or not backbone.startswith("efficientnet_"):
        return str(backbone)
    return "EfficientNet-" + backbone.removeprefix("efficientnet_").capitalize()


def model_name(card: dict[str, Any]) -> str:
    """A model as a visitor would name it (no run id): backbone, input size, weights."""
    weights = str(card.get("weights") or "?")
    source = (
        "ImageNet weights"
        if weights.startswith("imagenet")
        else "random weights"
        if weights.startswith("none")
        else weights.split(" ")[0]
    )
    crossval = card.get("crossval")
    fold = f", fold {crossval['fold']} of {crossval['folds']}" if crossval else ""
    return (
        f"{backbone_name(card.get('backbone'))} at {card.get('image_size')} px, {source} "
        f"(recipe {card['recipe']}{fold})"
    )


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: Any) -> str:
    """`text` as Markdown that shows it verbatim: every ASCII punctuation mark backslash-escaped, so a file name
    such as `**x** :red[y] [link](z)` makes no bold, colour, emoji, link, image, maths or HTML."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))


def provenance(config: dict[str, Any], hide_paths: bool = False, markdown: bool = True) -> str:
    """One line saying which data and weights a run used: Markdown (its values shown verbatim) or plain text."""
    value = escape_markdown if markdown else str
    bold = "**" if markdown else ""
    return (
        f"Data: {bold}{value(config.get('data_kind', '?'))}{bold} "
        f"({value(shown_path(config.get('data_dir'), hide_paths))}) · "
        f"weights: {bold}{value(weights_label(config))}{bold} · "
        f"{value(backbone_label(config))} at {value(image_size_label(config))} px · "
        f"split: {value(split_label(config))}"
    )


def split_label(config: dict[str, Any]) -> str:
    """A run's split in words: a release's and a final model's say that their figures are out of fold."""
    if config.get("release"):
        return "patient folds, out of fold"
    if config.get("split") == "none":
        return "none (a final model on every patient; figures out of fold)"
    return str(config.get("split"))


def format_duration(seconds: float | None) -> str:
    """`1m 05s`, `2h 03m`; an em dash when unknown."""
    if seconds is None:
        return "—"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


ROLES = {"train": "trained on", "val": "validated on", "test": "held out (test)"}


def example_cells(records: list[Any], split: pd.DataFrame | None, per_class: int = 4) -> list[dict[str, Any]]:
    """Cells to offer as examples, per class half from patients the model never saw (when it has a split) and
    half from its training images, each marked with its role for this model: by path, else by C-NMC cell name
    (the same cell in another folder or format), else by patient (another image of a patient it trained or
    validated on is not new to it)."""

    by_path, by_name, by_patient = {}, {}, {}
    if split is not None:
        for path, subset, patient in zip(split["path"], split["subset"], split["patient"], strict=True):
            role = ROLES.get(subset, subset)
            by_path[str(Path(path).resolve())] = role
            if cell_name(path):
                by_name[cell_name(path)] = role
            if subset in ("train", "val"):
                by_patient.setdefault(str(patient), f"its patient {'trained' if subset == 'train' else 'validated'} on")

    def role_of(record: Any) -> str:
        return (
            by_path.get(str(Path(record.path).resolve()))
            or by_name.get(cell_name(record.path) or "")
            or by_patient.get(str(record.patient))
            or "not in its data"
        )

    chosen = []
    for label in ("ALL", "HEM"):
        cells = sorted((r for r in records if r.label == label), key=lambda r: r.path)
        roles = {r.path: role_of(r) for r in cells}
        unseen = [r for r in cells if roles[r.path] in (ROLES["test"], "not in its data")]
        seen = [r for r in cells if r not in unseen]
        half = per_class // 2
        picked = (_spread(unseen, per_class - min(half, len(seen))) + _spread(seen, half))[:per_class]
        chosen += [{"path": r.path, "label": r.label, "patient": r.patient, "role": roles[r.path]} for r in picked]
    return chosen


def _spread(items: list[Any], count: int) -> list[Any]:
    """`count` items evenly spread over `items` (different patients rather than one patient's first images)."""
    if count <= 0 or not items:
        return []
    positions = sorted({int(i * len(items) / count) for i in range(count)})
    return [items[position] for position in positions]


def images_label(card: dict[str, Any]) -> tuple[str, str]:
    """(label, help) of the number of images a model card's figures rest on: test or out-of-fold images."""
    if card.get("scored_on") == "Out-of-fold":  # a final model or a release
        return "Out-of-fold images", (
            "This model trained on every patient: these images were each scored by the fold model that held the "
            "patient out, so the figures speak for the recipe, not for this very model."
        )
    if card.get("split") in ("patient", "folds"):
        return "Test images", "Images of patients the model never saw."
    return "Test images", (
        "Images the model never saw; an image split keeps other images of the same patients in training, so these "
        "figures flatter."
    )


def final_sentence(out_of_fold: dict[str, Any], name: Any = str) -> str:
    """Whom a final model (split none) held out, and where its figures come from; `name` writes its group."""
    return (
        "Held out: nobody (a final model on every patient). Its figures are out of fold: each patient scored by the "
        f"fold that held it out in the {out_of_fold.get('folds', '?')}-fold patient cross-validation "
        f"{name(str(out_of_fold.get('group', '?')))} (the same recipe), pooled."
    )


def held_out_line(card: dict[str, Any], released: bool = False) -> str:
    """Who a model card's model never saw, in Markdown: a release's folds, a final model's cross-validation, or the
    validation and test patients of its split."""
    if released:
        return "Held out: every patient, by the head of its patient fold."
    if card.get("out_of_fold"):
        return final_sentence(card["out_of_fold"], escape_markdown)
    held_out = card.get("held_out") or {}
    return (
        f"Held out: validation patients {escape_markdown(', '.join(held_out.get('val', [])) or '—')}; test "
        f"patients {escape_markdown(', '.join(held_out.get('test', [])) or '—')}."
    )


def threshold_line(check: Any) -> str | None:
    """A final model's threshold check (`metrics.json`'s `threshold_check`) in a sentence; None without one, or
    when it does not read."""
    try:
        scores = check["balanced_accuracy"]
        best, used = float(scores[f"{check['best']:.2f}"]), float(scores[f"{check['used']:.2f}"])
    except (TypeError, KeyError, ValueError):
        return None
    return (
        f"Threshold {check['used']} (as everywhere). Out of fold, the best of 0.30-0.70 is {check['best']}: "
        f"balanced accuracy {best:.3f} against {used:.3f} (chosen on these same predictions, so flattering)."
    )
