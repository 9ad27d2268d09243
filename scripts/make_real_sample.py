"""Choose the real C-NMC sample that ships with the project, reproducibly.

    python scripts/make_real_sample.py --source ../shared/cnmc-fold1 --out samples/cnmc-fold1

Every patient of C-NMC training fold 1 is represented; within a patient, images are drawn at random (seeded).
Healthy subjects are fewer (3 against 11 ALL patients), so each gives more images and the classes are about
balanced. The images are copied byte for byte (lossless PNG, official names, official layout), and a README
with the counts per class and patient is written beside them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.data.layouts import scan_dataset  # noqa: E402

PER_PATIENT = {"ALL": 21, "HEM": 70}
SEED = 2019
ATTRIBUTION = """# Attribution

These images are a sample of the **C-NMC 2019** data set (Classification of Normal vs Malignant Cells in B-ALL
white blood cancer microscopic images), ISBI 2019 challenge, published by The Cancer Imaging Archive (TCIA),
collection "C-NMC 2019", under the Creative Commons Attribution 3.0 licence (CC BY 3.0,
https://creativecommons.org/licenses/by/3.0/).

Data set: Gupta, A., & Gupta, R. (2019). ALL Challenge dataset of ISBI 2019 [Data set]. The Cancer Imaging
Archive. https://doi.org/10.7937/tcia.2019.dc64i46r

Authors of the data and its preparation: Anubha Gupta, Ritu Gupta, Shiv Gehlot, Simmi Mourya and colleagues,
SBI Lab, IIIT Delhi, and the Laboratory Oncology Unit, AIIMS New Delhi. Please cite the data set and:
- Gupta A., Duggal R., Gehlot S., Gupta R., Mangal A., Kumar L., Thakkar N., Satpathy D. GCTI-SN: Geometry-inspired
  chemical and tissue invariant stain normalization of microscopic medical images. Medical Image Analysis 65 (2020).
- Gehlot S., Gupta A., Gupta R. SDCT-AuxNet: DCT augmented stain deconvolutional CNN with auxiliary classifier for
  cancer diagnosis. Medical Image Analysis 61 (2020).

Changes: a seeded random subset of training fold 1 (see README.md); the original 450x450 24-bit BMP pixels are
stored losslessly as PNG under the official file names with the suffix changed. Not for clinical use.
"""


def choose(source: Path, seed: int = SEED) -> dict[str, list[Path]]:
    """Per patient, the images of fold 1 chosen for the sample."""
    records = [r for r in scan_dataset(source).labelled if r.subset == "fold_1"]
    by_patient: dict[str, list[Path]] = defaultdict(list)
    labels = {}
    for record in records:
        by_patient[record.patient].append(Path(record.path))
        labels[record.patient] = record.label
    rng = np.random.default_rng(seed)
    chosen = {}
    for patient in sorted(by_patient):
        paths = sorted(by_patient[patient])
        count = min(PER_PATIENT[labels[patient]], len(paths))
        chosen[patient] = [paths[index] for index in sorted(rng.choice(len(paths), count, replace=False))]
    return chosen


def write(chosen: dict[str, list[Path]], out: Path) -> None:
    """Copy the chosen cells to `out` (replaced whole) with the sample's README and attribution."""
    if out.exists():
        shutil.rmtree(out)
    rows = []
    for patient, paths in chosen.items():
        for path in paths:
            target = out / "training_data" / "fold_1" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        rows.append((patient, paths[0].parent.name.upper(), len(paths)))
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    total = sum(count for _, _, count in rows)
    size_mb = sum(p.stat().st_size for p in out.rglob("*.png")) / 1e6
    lines = [
        "# A real C-NMC 2019 sample (the dashboard's default data)",
        "",
        f"{total} single-cell images ({size_mb:.1f} MB) of C-NMC 2019 training fold 1, every one of its "
        f"{len(rows)} patients represented, chosen by `scripts/make_real_sample.py` (seed {SEED}). Lossless PNG, "
        "official names and layout (`training_data/fold_1/{all,hem}/UID_<patient>_<image>_<cell>_<all|hem>.png`). "
        "Licence and credits: ATTRIBUTION.md (CC BY 3.0).",
        "",
        "Only 3 healthy subjects are in fold 1, so a patient split of this sample tests on one of them: its figures "
        "speak for that subject, not for healthy cells in general.",
        "",
        "| patient | class | images |",
        "| --- | --- | --- |",
        *[f"| {patient} | {label} | {count} |" for patient, label, count in rows],
        f"| **all** | ALL {sum(c for _, label, c in rows if label == 'ALL')}, "
        f"HEM {sum(c for _, label, c in rows if label == 'HEM')} | {total} |",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def main() -> None:
    """Choose the sample from the source fold and write it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/cnmc-fold1"))
    parser.add_argument("--out", type=Path, default=Path("samples/cnmc-fold1"))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    write(choose(args.source, args.seed), args.out)
    print(args.out)


if __name__ == "__main__":
    main()
