"""The selection rule, written down before any candidate was scored on the other-subject check (2026-12-07): the check
gates, fold-1 nested cross-validation ranks, a tie goes to the simpler model. The check's 36 cells give an interval
about +/-0.15 wide: enough to reject a model that does not transfer, not to rank two close ones."""

from __future__ import annotations

from typing import Any

BASELINE_KIND = "baseline"
SKETCH_KIND = "sketch"
RELEASE_KIND = "release"
RECIPE_KIND = "recipe"


def kind_of(name: str) -> str:
    """What the product could serve of candidate `name`: `baseline` (the constant answer and the descriptor shortcuts),
    `sketch` (the product's head trained here on cached features: a quick look at a recipe, not the recipe; both
    never a default), `recipe` (a training recipe's own cross-validation, named by `recipe_candidates.recipe_name`)
    or `release` (logistic regressions on frozen features, what `pipeline release` builds)."""
    if name == "constant answer" or "shortcut" in name:
        return BASELINE_KIND
    if name.endswith(")") and "(recipe " in name:
        return RECIPE_KIND
    if "head" in name:
        return SKETCH_KIND
    return RELEASE_KIND


def simplicity(name: str) -> int:
    """How much a candidate adds to one logistic regression on the cells as imaged (lower: simpler): a tie under the
    selection rule goes to the simpler. Counts its additions: another C or a C chosen on inner folds, copies, weights,
    a projection, a second view, more backbones, a trained head, fine-tuning."""
    additions = {
        "C chosen": 1,
        "C = ": 1,
        "copies": 1,
        "weighed": 1,
        "removed": 1,
        "size-normalised": 1,
        "side by side": 1,
        "ensemble": 2,
        "head": 3,
        "fine-tuned": 4,
        "strong augmentation": 1,
    }
    return sum(weight for word, weight in additions.items() if word in name)


CHECK_MARGIN = 0.02
"""How far below the reference's check ROC AUC a candidate may fall and still pass."""
TIE = 0.01
"""Nested-CV ROC AUCs within this of the best are a tie."""
KINDS = (RELEASE_KIND, RECIPE_KIND)
"""The two defaults chosen: the release (logistic regressions on frozen features) and the training recipe."""
RULE = (
    "A candidate can be a default only if, on the other-subject check, its ROC AUC is at least the reference's (the "
    f"logistic regression on as-imaged features, C = 1) minus {CHECK_MARGIN} and it calls no more of the check's "
    "healthy cells ALL than the reference does. Among those that pass, the best mean outer-fold ROC AUC of fold-1 "
    f"nested patient cross-validation wins; candidates within {TIE} of it tie, and a tie goes to the simpler model "
    "(fewer additions to one regression on the cells as imaged). The constant answer and the descriptor shortcuts are "
    "baselines, never a default; the release is chosen among logistic regressions on frozen features (what `pipeline "
    "release` builds), the training recipe among recipes trained by their own patient cross-validation on the same "
    "folds (fine-tuned networks, the product's head)."
)


def gate(section: dict[str, Any]) -> dict[str, Any]:
    """Whether a candidate's check section (`evaluation.other_subjects`, with its reference) passes the rule's gate,
    and why not."""
    reference = section.get("reference") or {}
    ours, theirs = (section.get("roc_auc") or {}).get("value"), (reference.get("roc_auc") or {}).get("value")
    called, allowed = section["healthy_called_all"]["cells"], (reference.get("healthy_called_all") or {}).get("cells")
    if ours is None or theirs is None or allowed is None:
        return {"passed": False, "why": "no check figure to compare"}
    why = []
    if ours < theirs - CHECK_MARGIN:
        why.append(f"ROC AUC {ours:.3f} below the reference's {theirs:.3f} - {CHECK_MARGIN}")
    if called > allowed:
        why.append(f"calls {called} healthy cells ALL, the reference {allowed}")
    return {"passed": not why, "why": "; ".join(why)}


def choose(candidates: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    """The rule applied to the candidates of `kind` (`KINDS`) that were scored on the check: which pass the gate, the
    best nested-CV ROC AUC among them, those tied with it, and the chosen one (None when none passes)."""
    eligible = {name: scores for name, scores in candidates.items() if kind_of(name) == kind and "gate" in scores}
    passed = {name: scores["roc_auc"] for name, scores in eligible.items() if scores["gate"]["passed"]}
    if not passed:
        return {"passed": [], "tied": [], "chosen": None}
    best = max(passed.values())
    tied = sorted((name for name, value in passed.items() if value >= best - TIE), key=lambda n: -passed[n])
    chosen = min(tied, key=lambda name: (simplicity(name), -passed[name]))
    return {"passed": sorted(passed, key=lambda n: -passed[n]), "best_roc_auc": best, "tied": tied, "chosen": chosen}
