"""Choose the real C-NMC samples that ship with the project, reproducibly.

    python scripts/make_real_sample.py --source ../shared/cnmc-fold1 --out samples/cnmc-fold1
    python scripts/make_real_sample.py --other-subjects ../shared/cnmc-sample --out samples/cnmc-other-subjects

Fold 1: every patient of C-NMC training fold 1 is represented; within a patient, images are drawn at random (seeded).
Healthy subjects are fewer (3 against 11 ALL patients), so each gives more images and the classes are about
balanced. The images are copied byte for byte (lossless PNG, official names, official layout), and a README
with the counts per class and patient is written beside them.

Other subjects (`--other-subjects`): every labelled training cell of a C-NMC folder whose subject is *not* in fold 1
(the Predict page's examples of people the released model never saw, with their true class), its BMP pixels stored
as lossless PNG in a class-folder layout (checked pixel by pixel).
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


def write_other_subjects(source: Path, fold: Path, out: Path) -> None:
    """Every labelled training cell of `source` whose subject is not in `fold`, as lossless PNG in `out/{all,hem}/`
    (replaced whole), with a README and the attribution."""
    import cv2

    fold_subjects = {record.patient for record in scan_dataset(fold).labelled}
    chosen = sorted(
        (r for r in scan_dataset(source).labelled if r.subset.startswith("fold_") and r.patient not in fold_subjects),
        key=lambda record: record.path,
    )
    if out.exists():
        shutil.rmtree(out)
    rows = []
    for record in chosen:
        target = out / record.label.lower() / (Path(record.path).stem + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = cv2.imread(record.path, cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(target), pixels)
        if not np.array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), pixels):
            raise SystemExit(f"{target} does not hold the pixels of {record.path}")
        rows.append((record.patient, record.label, target.name))
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION.replace("training fold 1", "the training folds"))
    lines = [
        "# Real C-NMC 2019 cells of subjects outside fold 1 (the Predict page's other-subject examples)",
        "",
        f"{len(rows)} cells of {len({row[0] for row in rows})} subjects none of whom is in C-NMC fold 1, on which the "
        "released model was built: chosen by `scripts/make_real_sample.py --other-subjects` (every labelled training "
        "cell of the source whose subject is not in fold 1). Lossless PNG of the original BMP pixels, official names, "
        "a class-folder layout (`{all,hem}/`). Licence and credits: ATTRIBUTION.md (CC BY 3.0). Shown with their true "
        "class, never trained or tuned on.",
        "",
        "| cell | subject | class |",
        "| --- | --- | --- |",
        *[f"| {name} | {patient} | {label} |" for patient, label, name in rows],
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def main() -> None:
    """Choose a sample and write it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/cnmc-fold1"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--other-subjects", type=Path, default=None, metavar="FOLDER", help="a C-NMC folder: its cells not of fold 1"
    )
    args = parser.parse_args()
    if args.other_subjects:
        out = args.out or Path("samples/cnmc-other-subjects")
        write_other_subjects(args.other_subjects, args.source, out)
    else:
        out = args.out or Path("samples/cnmc-fold1")
        write(choose(args.source, args.seed), out)
    print(out)


if __name__ == "__main__":
    main()
