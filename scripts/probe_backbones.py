"""Which EfficientNet-Lite to transfer: a linear probe on frozen ImageNet features of real cells.

For each Lite variant at its native size, pooled features of every image of a dataset (CLAHE, as training
prepares them) are extracted once; a logistic regression (balanced classes, strong L2) is then scored by the same
patient-level K-fold cross-validation the pipeline runs (validation patients drawn from ALL, left out of training),
repeated over seeds. Usage:

    python scripts/probe_backbones.py [--data ../shared/cnmc-fold1] [--folds 3] [--repeats 4] [--c 0.0003]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.config import ClaheSettings  # noqa: E402
from pipeline.data.cache import load_images  # noqa: E402
from pipeline.data.layouts import scan_dataset  # noqa: E402
from pipeline.data.splits import split_records  # noqa: E402
from pipeline.models.lite import VARIANTS  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "cnmc-fold1"


def features(name: str, paths: list[str]) -> tuple[np.ndarray, float]:
    """Pooled top features of `name` with its ImageNet weights, and the seconds the pass took."""
    from pipeline.inference.batches import extract_features
    from pipeline.models.model import build_model

    size = VARIANTS[name].native_size
    images, _ = load_images(paths, size, ClaheSettings())
    model, _ = build_model(name, size, "imagenet", freeze_backbone=True)
    start = time.perf_counter()
    pooled = extract_features(model, np.asarray(images))
    return pooled, time.perf_counter() - start


def probe(pooled: np.ndarray, records: list, folds: int, repeats: int, c: float) -> np.ndarray:
    """(ROC AUC, balanced accuracy) of each fold of each repeat."""
    is_all = np.array([record.label == "ALL" for record in records])
    scores = []
    for seed in range(repeats):
        for fold in range(folds):
            split = split_records(records, "patient", seed=seed, cv_folds=folds, cv_fold=fold, validation_from="ALL")[
                "subset"
            ].to_numpy()
            train, test = split == "train", split == "test"
            scaler = StandardScaler().fit(pooled[train])
            model = LogisticRegression(C=c, max_iter=3000).fit(
                scaler.transform(pooled[train]),
                is_all[train],
                sample_weight=compute_sample_weight("balanced", is_all[train]),
            )
            prob = model.predict_proba(scaler.transform(pooled[test]))[:, 1]
            scores.append((roc_auc_score(is_all[test], prob), balanced_accuracy_score(is_all[test], prob >= 0.5)))
    return np.array(scores)


def main() -> None:
    """Score each Lite backbone's frozen features on the real fold and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--c", type=float, default=0.0003, help="inverse L2 strength of the logistic regression")
    args = parser.parse_args()
    records = [record for record in scan_dataset(args.data).training_records("") if record.label]
    paths = [record.path for record in records]
    for name in VARIANTS:
        pooled, seconds = features(name, paths)
        scores = probe(pooled, records, args.folds, args.repeats, args.c)
        print(
            f"{name} at {VARIANTS[name].native_size} px: ROC AUC {scores[:, 0].mean():.3f} ± "
            f"{scores[:, 0].std(ddof=1):.3f}, balanced accuracy {scores[:, 1].mean():.3f} ± "
            f"{scores[:, 1].std(ddof=1):.3f} ({len(scores)} folds); feature pass {seconds:.0f} s "
            f"for {len(paths)} images",
            flush=True,
        )


if __name__ == "__main__":
    main()
