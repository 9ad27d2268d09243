"""Nested patient cross-validation of frozen-feature candidates beside the constant answer and the shortcut
baselines, with stress tests: every choice (a candidate's regularisation) is made on inner folds of the outer
training patients only; each outer fold's test patients are touched once, by the model chosen without them. The
outer folds are `crossval`'s (same folds and seed), so a fine-tuned recipe's cross-validation joins the same table.

Per candidate: the mean of the outer folds' ROC AUC and balanced accuracy (the cross-validation figure), the
patient-bootstrap interval of the pooled out-of-fold predictions (labelled pooled), the ROC AUC of the same test
cells zoomed to the other class's size, recoloured to its colour and blurred, and the paired difference to the
logistic regression on the same features, fold by fold. With an other-subject check: every candidate fit on every
cell, scored on the check's cells beside the same regression, and placed under the selection rule (`rule`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.shortcuts import STRESSES, fold_scores
from ..data.splits import cross_validation_folds
from ..evaluation.intervals import format_interval, patient_bootstrap
from ..evaluation.other_subjects import check_section
from .candidates import CANDIDATES, NEEDS, REFERENCE, CellTable
from .cell_tables import SEED
from .rule import KINDS, RULE, choose, gate

REFERENCE_NAME = "logistic regression (C = 1) on the backbone's features of the cells as imaged, fit on the same cells"


def nested_cross_validation(
    table: CellTable, folds: int = 3, seed: int = SEED, heads: bool = False, check: CellTable | None = None
) -> dict[str, Any]:
    """Every candidate on the same outer patient folds (those of `crossval --folds folds --seed seed`): per-fold
    figures, their mean, the pooled interval, the stress tests and the paired difference to `REFERENCE`; the outer
    test patients are used once, to score. With `check` (the other-subject check's cells, the same backbones and
    views), each candidate is also fit on every cell and scores them (`check_probabilities`; the check is never
    fit on). Candidates whose view the table lacks are left out, and the Keras head unless `heads`."""
    outer = cross_validation_folds(table.labels, table.patients, folds, seed)
    results: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "test_patients": [sorted(set(table.patients[test])) for test in outer],
        "candidates": {},
        "check_probabilities": {},
    }
    every = np.arange(len(table.is_all))
    for name, fit in CANDIDATES.items():
        if not _can_score(name, table, heads):
            continue
        prob = np.zeros(len(table.is_all))
        under = {stress: np.zeros(len(table.is_all)) for stress in _stresses_of(name, table)}
        chosen = []
        for test in outer:
            train = np.setdiff1d(every, test)
            predict, choice = fit(train, table.is_all, table, table.patients)
            prob[test] = predict(table, test, None)
            for stress in under:
                under[stress][test] = predict(table, test, stress)
            chosen.append(choice)
        constant = name == "constant answer"
        stressed = {stress: fold_scores(table.is_all, values, outer)["roc_auc"] for stress, values in under.items()}
        results["candidates"][name] = _scores(table, prob, outer, constant)
        results["candidates"][name].update(choices=chosen, stressed_roc_auc={} if constant else stressed)
        if check is not None:
            predict, _ = fit(every, table.is_all, table, table.patients)
            results["check_probabilities"][name] = predict(check, np.arange(len(check.is_all)), None).tolist()
    pair_with_reference(results)
    return results


def _scores(table: CellTable, prob: np.ndarray, outer: list[np.ndarray], constant: bool = False) -> dict[str, Any]:
    """A candidate's figures from its out-of-fold P(ALL): per fold and their mean, pooled with its interval."""
    scores = _constant_scores(outer) if constant else fold_scores(table.is_all, prob, outer)
    pooled = patient_bootstrap(pd.DataFrame({"label": table.labels, "patient": table.patients, "prob_all": prob}))
    return {**scores, "pooled": pooled, "choices": [], "stressed_roc_auc": {}}


def add_scored(
    results: dict[str, Any],
    table: CellTable,
    name: str,
    prob: np.ndarray,
    check_probabilities: np.ndarray | None = None,
    **facts: Any,
) -> None:
    """A candidate scored elsewhere (a fine-tuned recipe's cross-validation on the same outer folds, `prob` its
    out-of-fold P(ALL) of every row; its final model's P(ALL) of the check's cells) added to `results`."""
    outer = cross_validation_folds(table.labels, table.patients, results["folds"], results["seed"])
    results["candidates"][name] = {**_scores(table, prob, outer), **facts}
    if check_probabilities is not None:
        results["check_probabilities"][name] = np.asarray(check_probabilities, dtype=float).tolist()
    pair_with_reference(results)


def pair_with_reference(results: dict[str, Any]) -> None:
    """Each candidate's ROC AUC minus `REFERENCE`'s, fold by fold."""
    reference = results["candidates"][REFERENCE]["roc_auc_folds"]
    for scores in results["candidates"].values():
        differences = np.asarray(scores["roc_auc_folds"]) - np.asarray(reference)
        scores["minus_reference_roc_auc"] = {
            "mean": float(differences.mean()),
            "folds": differences.tolist(),
            "better_in": int((differences > 0).sum()),
        }


def attach_check(results: dict[str, Any], cells: pd.DataFrame, data_dir: str) -> None:
    """Each candidate's `check` section (`evaluation.other_subjects`) from its P(ALL) of the check's `cells` (path,
    patient, label), paired with `REFERENCE`'s, and its place under the selection rule (`rule.gate`)."""
    probabilities = results["check_probabilities"]
    reference = np.asarray(probabilities[REFERENCE])
    for name, values in probabilities.items():
        section = check_section(cells.assign(prob_all=np.asarray(values)), reference, data_dir, REFERENCE_NAME)
        results["candidates"][name]["check"] = section
        results["candidates"][name]["gate"] = gate(section)
    results["rule"] = {"text": RULE, **{kind: choose(results["candidates"], kind) for kind in KINDS}}


def _stresses_of(name: str, table: CellTable) -> list[str]:
    """The stresses candidate `name` is scored under: those of the table, and for an ensemble those every member
    was measured under (`nested --ensemble` measures its other backbones clean, to save their stressed passes)."""
    members = [table, *table.others.values()] if "others" in NEEDS.get(name, ()) else [table]
    return [stress for stress in table.stressed_features if all(stress in m.stressed_features for m in members)]


def _can_score(name: str, table: CellTable, heads: bool) -> bool:
    """Whether the table holds what candidate `name` needs (views of every member, other backbones) and Keras may
    be used."""
    needs = NEEDS.get(name, ())
    members = [table, *table.others.values()] if "others" in needs else [table]  # an ensemble reads every member
    for need in needs:
        if need == "keras" and not heads or need == "others" and not table.others:
            return False
        if need not in ("keras", "others") and any(need not in member.views for member in members):
            return False
    return True


def _constant_scores(outer: list[np.ndarray]) -> dict[str, Any]:
    return {
        "roc_auc": 0.5,
        "balanced_accuracy": 0.5,
        "roc_auc_folds": [0.5] * len(outer),
        "balanced_accuracy_folds": [0.5] * len(outer),
        "pooled_roc_auc": 0.5,
    }


def nested_lines(results: dict[str, Any]) -> list[str]:
    """The table as text: one line per candidate, then (with a check) its check figures, then the rule's choices."""
    stresses = [
        stress for stress in STRESSES if any(stress in c["stressed_roc_auc"] for c in results["candidates"].values())
    ]
    lines = [
        f"Nested patient cross-validation, {results['folds']} outer folds (seed {results.get('seed')}; test "
        "patients: " + "; ".join(", ".join(patients) for patients in results["test_patients"]) + ")",
        "  ROC AUC and balanced accuracy: mean of the outer folds; pooled: every cell's out-of-fold P(ALL), "
        "95 % patient bootstrap; then the ROC AUC with test cells " + ", ".join(stresses),
    ]
    for name, scores in results["candidates"].items():
        pooled = scores["pooled"]["roc_auc"]
        interval = "n/a" if pooled.get("low") is None else f"{pooled['low']:.2f}-{pooled['high']:.2f}"
        stressed = "  ".join(
            f"{scores['stressed_roc_auc'][stress]:.3f}" for stress in stresses if stress in scores["stressed_roc_auc"]
        )
        paired = scores["minus_reference_roc_auc"]
        lines.append(
            f"  {name:58s} ROC AUC {scores['roc_auc']:.3f}  BA {scores['balanced_accuracy']:.3f}  "
            f"pooled {scores['pooled_roc_auc']:.3f} ({interval})  stressed {stressed or '-'}  "
            f"vs reference {paired['mean']:+.3f} (better in {paired['better_in']} of {results['folds']})"
        )
        choices = [choice.get("C") for choice in scores["choices"] if choice.get("C") is not None]
        if choices and "chosen" in name:  # an ensemble chose one C per backbone
            shown = (
                "/".join(f"{c:g}" for c in choice) if isinstance(choice, list) else f"{choice:g}" for choice in choices
            )
            lines.append(f"  {'':58s} C chosen per fold: {', '.join(shown)}")
        if "check" in scores:
            lines.append(f"  {'':58s} {check_line(scores['check'], scores['gate'])}")
    for kind, choice in (results.get("rule") or {}).items():
        if kind != "text":
            lines.append(f"The rule's choice for the {kind}: {choice['chosen'] or 'none passes the check'}")
    return lines


def check_line(section: dict[str, Any], gated: dict[str, Any]) -> str:
    """A candidate's check figures in one line, with where it fell under the rule."""
    paired = section["reference"]["paired"]["roc_auc"]
    called = section["healthy_called_all"]
    return (
        f"check: ROC AUC {format_interval(section['roc_auc'])}  BA {format_interval(section['balanced_accuracy'])}  "
        f"healthy called ALL {called['cells']} of {called['of']}  vs reference {format_interval(paired, 3)}  "
        f"{'passes' if gated['passed'] else 'fails: ' + gated['why']}"
    )
