"""Find images, labels, patients and folds in a dataset root; make reproducible splits."""

from __future__ import annotations

import itertools
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import DISPLAY_ORDER
from ..core.errors import ImageReadError, PipelineError
from .decode import ACCEPTED, image_format, read_image

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
LABELS = DISPLAY_ORDER
UNKNOWN_PATIENT = "unknown"
SYNTHETIC_MARKER = "SYNTHETIC.json"
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_TEST_SUBSET = "final_test"
PRELIM_SUBSET = "prelim_test"

CNMC_STEM = re.compile(
    r"^UID_(?P<patient>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)(?:_(?:all|hem))?"
    r"\.(?:bmp|png|jpe?g|tiff?)$",
    re.IGNORECASE,
)
"""A C-NMC cell's file name, label suffix optional: what names the same cell whatever its folder or format."""
_CNMC_NAME = re.compile(
    r"^UID_(?P<patient>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<label>all|hem)"
    r"\.(?:bmp|png|jpe?g|tiff?)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Record:
    """One image: where it is, its label (None when unlabelled), patient id and fold or subset."""

    path: str
    label: str | None
    patient: str
    subset: str


@dataclass
class Dataset:
    """A scanned data set: its root, layout and records, the files left out and whether it is synthetic."""

    root: Path
    layout: str
    records: list[Record]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    synthetic: bool = False

    @property
    def labelled(self) -> list[Record]:
        """The records with a label."""
        return [record for record in self.records if record.label is not None]

    @property
    def kind(self) -> str:
        """'synthetic demo data' or 'real images'."""
        return "synthetic demo data" if self.synthetic else "real images"

    def frame(self) -> pd.DataFrame:
        """The records as a table (path, label, patient, subset)."""
        return pd.DataFrame([asdict(record) for record in self.records], columns=["path", "label", "patient", "subset"])

    def training_records(self, folds: str = "") -> list[Record]:
        """Labelled records used to train (C-NMC: the training folds, optionally only some of them)."""
        records = [record for record in self.labelled if record.subset not in (PRELIM_SUBSET, FINAL_TEST_SUBSET)]
        if folds:
            wanted = {f"fold_{fold.strip()}" for fold in folds.split(",") if fold.strip()}
            records = [record for record in records if record.subset in wanted]
            if not records:
                raise PipelineError(f"No images in fold(s) {folds} of {self.root}.")
        return records

    def info(self) -> dict[str, Any]:
        """Counts by class, patient and subset, and the layout, as plain values."""
        frame = self.frame()
        labelled = frame.dropna(subset=["label"])
        return {
            "root": str(self.root),
            "layout": self.layout,
            "synthetic": self.synthetic,
            "images": len(frame),
            "labelled": len(labelled),
            "per_class": {label: int((labelled["label"] == label).sum()) for label in LABELS},
            "per_subset": {str(k): int(v) for k, v in frame.groupby("subset").size().items()},
            "per_subset_class": {
                f"{subset}/{label}": int(count)
                for (subset, label), count in labelled.groupby(["subset", "label"]).size().items()
            },
            "patients": int(labelled.loc[labelled["patient"] != UNKNOWN_PATIENT, "patient"].nunique()),
            "per_patient": {str(k): int(v) for k, v in labelled.groupby("patient").size().items()},
            "skipped": len(self.skipped),
            "skipped_files": [f"{path}: {reason}" for path, reason in self.skipped[:50]],
        }


def cell_name(path: str | Path) -> str | None:
    """The C-NMC cell a file name names (`UID_H10_12_3`), whatever its extension or folder; None otherwise."""
    match = CNMC_STEM.match(Path(path).name)
    return f"UID_{match['patient'].upper()}_{match['image']}_{match['cell']}" if match else None


def parse_cnmc_name(name: str) -> tuple[str, str] | None:
    """(patient id, label) from a C-NMC file name such as `UID_H10_1_1_hem.bmp` (any image suffix, any case),
    else None."""
    match = _CNMC_NAME.match(name)
    if not match:
        return None
    return f"UID_{match['patient'].upper()}", match["label"].upper()


def _looks_like_image(path: Path) -> str | None:
    """Cheap check before any decoding: None if plausible, else the reason it is skipped."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if not head:
        return "empty file"
    if image_format(head) is None:
        return f"not a {ACCEPTED} file"
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def _add(
    records: list[Record], skipped: list[tuple[str, str]], path: Path, label: str | None, patient: str, subset: str
) -> None:
    reason = _looks_like_image(path)
    if reason:
        skipped.append((str(path), reason))
    else:
        records.append(Record(str(path), label, patient, subset))


def _class_folders(folder: Path) -> dict[str, Path]:
    return {
        child.name.upper(): child
        for child in sorted(folder.iterdir())
        if child.is_dir() and child.name.upper() in LABELS
    }


def _scan_cnmc(root: Path, training: Path) -> tuple[list[Record], list[tuple[str, str]]]:
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for fold in sorted(path for path in training.iterdir() if path.is_dir() and path.name.startswith("fold_")):
        for label, class_dir in _class_folders(fold).items():
            for path in _image_files(class_dir):
                parsed = parse_cnmc_name(path.name)
                _add(records, skipped, path, label, parsed[0] if parsed else UNKNOWN_PATIENT, fold.name)
    validation = root / "validation_data"
    labels_csv = validation / PRELIM_LABELS
    if (validation / PRELIM_DIR).is_dir():
        labels = _read_prelim_labels(labels_csv) if labels_csv.is_file() else {}
        for path in _image_files(validation / PRELIM_DIR):
            label, patient = labels.get(path.name, (None, UNKNOWN_PATIENT))
            _add(records, skipped, path, label, patient, PRELIM_SUBSET)
    testing = root / "testing_data"
    if testing.is_dir():
        for path in sorted(p for p in testing.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            _add(records, skipped, path, None, UNKNOWN_PATIENT, FINAL_TEST_SUBSET)
    return records, skipped


def _read_prelim_labels(csv_path: Path) -> dict[str, tuple[str, str]]:
    """new_names -> (label, patient) from the prelim labels CSV (labels: 1 = ALL, 0 = HEM)."""
    table = pd.read_csv(csv_path)
    missing = {"Patient_ID", "new_names", "labels"} - set(table.columns)
    if missing:
        raise PipelineError(f"{csv_path} lacks the column(s) {', '.join(sorted(missing))}.")
    result = {}
    for original, new_name, label in table[["Patient_ID", "new_names", "labels"]].itertuples(index=False):
        parsed = parse_cnmc_name(str(original))
        result[str(new_name)] = ("ALL" if int(label) == 1 else "HEM", parsed[0] if parsed else UNKNOWN_PATIENT)
    return result


def _scan_generic(root: Path) -> tuple[list[Record], list[tuple[str, str]]]:
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for label, class_dir in _class_folders(root).items():
        for path in _image_files(class_dir):
            parsed = parse_cnmc_name(path.name)
            _add(records, skipped, path, label, parsed[0] if parsed else UNKNOWN_PATIENT, "")
    return records, skipped


def scan_dataset(root: str | Path) -> Dataset:
    """Every image under `root`, in the C-NMC layout or the generic `<root>/<class>/` layout."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PipelineError(f"Dataset folder {root} does not exist or is not a folder.")
    training = root / "training_data"
    if not training.is_dir() and any(child.name.startswith("fold_") for child in root.iterdir() if child.is_dir()):
        training = root
    if training.is_dir():
        layout = "cnmc"
        records, skipped = _scan_cnmc(root, training)
    else:
        layout = "generic"
        records, skipped = _scan_generic(root)
    if not records:
        elsewhere = _images_outside_layout(root)
        found = (
            f"{elsewhere} image file(s) there, none in a class folder"
            if elsewhere
            else f"{len(skipped)} image file(s) there, none readable"
            if skipped
            else "no image file there"
        )
        raise PipelineError(
            f"No usable images in {root}: {found}. Expected the C-NMC layout (training_data/fold_N/all|hem/*.bmp) or "
            "one folder per class (all/ and hem/) holding bmp, png, jpg or tif images; `predict` takes unlabelled "
            "images anywhere."
        )
    return Dataset(
        root=root, layout=layout, records=records, skipped=skipped, synthetic=(root / SYNTHETIC_MARKER).is_file()
    )


def undecodable(dataset: Dataset, workers: int = 4) -> list[tuple[str, str]]:
    """The images of `dataset` whose pixels do not decode (truncated or damaged past their header), each with the
    reason: what a run would leave out at preprocessing, found without training. Decodes every image once."""

    def reason(record: Record) -> str | None:
        try:
            read_image(record.path)
        except ImageReadError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV releases the GIL while it decodes
        found = list(pool.map(reason, dataset.records))
    return [(record.path, why) for record, why in zip(dataset.records, found, strict=True) if why]


SCAN_LIMIT = 100_000
"""At most this many files are looked at to say what a folder without the expected layout holds."""


def _images_outside_layout(root: Path) -> int:
    """How many files with an image suffix lie anywhere under `root` (up to `SCAN_LIMIT` files looked at)."""
    files = itertools.islice((path for path in root.rglob("*") if path.is_file()), SCAN_LIMIT)
    return sum(path.suffix.lower() in IMAGE_SUFFIXES for path in files)


def prelim_records(dataset: Dataset) -> list[Record]:
    """The labelled records of the preliminary test phase."""
    return [record for record in dataset.labelled if record.subset == PRELIM_SUBSET]
