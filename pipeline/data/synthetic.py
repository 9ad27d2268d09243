"""A synthetic C-NMC-like data set: the demo data of a fresh clone and the fixture of the tests.

Not clinical data. Each image is a 450x450 RGB BMP with one segmented, purple-stained cell on black.
ALL blasts are larger, with irregular contours, fine chromatin and visible nucleoli; HEM cells are smaller,
rounder and denser. Every patient has its own stain and illumination shift, ALL and HEM patients are
distinct, and the class distributions overlap, so a good model is good but not perfect.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..core.errors import PipelineError
from .layouts import PRELIM_DIR, PRELIM_LABELS, SYNTHETIC_MARKER

BASE_STAIN_RGB = np.array([63.0, 24.0, 76.0])
FOLDS = 3


@dataclass(frozen=True)
class CellStyle:
    """How one class's synthetic cells look: size, outline, chromatin, darkness and nucleoli."""

    radius_mean: float
    radius_sd: float
    irregularity_mean: float
    chromatin_sigma: float
    chromatin_amplitude: float
    darkness: float
    nucleoli_mean: float


STYLES = {
    "all": CellStyle(
        radius_mean=118,
        radius_sd=13,
        irregularity_mean=0.055,
        chromatin_sigma=1.5,
        chromatin_amplitude=10,
        darkness=0,
        nucleoli_mean=1.6,
    ),
    "hem": CellStyle(
        radius_mean=104,
        radius_sd=11,
        irregularity_mean=0.03,
        chromatin_sigma=5.0,
        chromatin_amplitude=16,
        darkness=12,
        nucleoli_mean=0.35,
    ),
}


def _patient_stain(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    return rng.normal(0, 9, size=3), float(rng.normal(1.0, 0.08))


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed noise of unit spread; coarse noise is made at low resolution and upsampled (fast)."""
    factor = max(1, int(sigma // 2))
    small = size // factor
    noise = rng.normal(0, 1, (small, small)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma / factor)
    if factor > 1:
        noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return noise / (noise.std() + 1e-6)


def _contour(rng: np.random.Generator, center: np.ndarray, radius: float, irregularity: float) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    wobble = np.zeros_like(angles)
    for harmonic in range(2, 9):
        amplitude = irregularity * rng.normal(0, 1) / np.sqrt(harmonic - 1)
        wobble += amplitude * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.9, 1.1)
    radii = radius * (1 + wobble)
    points = np.stack([center[0] + radii * np.cos(angles) * aspect, center[1] + radii * np.sin(angles)], axis=1)
    return np.round(points).astype(np.int32)


def render_cell(
    rng: np.random.Generator, label: str, stain: np.ndarray, brightness: float, size: int = 450
) -> np.ndarray:
    """One synthetic cell image, RGB uint8."""
    style = STYLES[label]
    radius = float(np.clip(rng.normal(style.radius_mean, style.radius_sd), 60, 0.42 * size))
    irregularity = max(0.0, rng.normal(style.irregularity_mean, 0.015))
    center = size / 2 + rng.normal(0, 12, size=2)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [_contour(rng, center, radius, irregularity)], 255)
    chromatin = _smooth_noise(rng, size, style.chromatin_sigma) * style.chromatin_amplitude
    shading = _smooth_noise(rng, size, 25.0) * 6.0
    color = (BASE_STAIN_RGB + stain - style.darkness).astype(np.float32)[None, None, :]
    image = color + (chromatin + shading)[:, :, None] * np.array([0.8, 0.5, 1.0], np.float32)
    spots = np.zeros((size, size), np.float32)
    for _ in range(rng.poisson(style.nucleoli_mean)):
        offset = rng.normal(0, radius * 0.3, size=2)
        cv2.circle(spots, tuple(int(v) for v in center + offset), int(rng.uniform(6, 12)), 1.0, -1)
    if spots.any():
        image += cv2.GaussianBlur(spots, (0, 0), 3)[:, :, None] * np.array([22.0, 16.0, 20.0], np.float32)
    image *= brightness
    soft_mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 1.2)[:, :, None]
    return np.clip(image * soft_mask, 0, 255).astype(np.uint8)


def _write_bmp(path: Path, image_rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise PipelineError(f"Could not write {path}.")


def _patients(label: str, count: int, first: int) -> list[str]:
    prefix = "H" if label == "hem" else ""
    return [f"{prefix}{first + index}" for index in range(count)]


def generate(
    out: str | Path,
    per_class: int = 150,
    patients: int = 6,
    seed: int = 0,
    prelim_per_class: int | None = None,
    size: int = 450,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write a synthetic data set in the official C-NMC layout and naming to `out` (which must not exist)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out} already exists and is not empty; choose a new folder.")
    if per_class < 1 or patients < 1:
        raise PipelineError("per_class and patients must be at least 1.")
    prelim_per_class = max(2, per_class // 10) if prelim_per_class is None else prelim_per_class
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _generate_into(staging, per_class, patients, seed, prelim_per_class, size, progress)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _generate_into(
    root: Path,
    per_class: int,
    patients: int,
    seed: int,
    prelim_per_class: int,
    size: int,
    progress: Callable[[float], None] | None,
) -> None:
    total = 2 * (per_class + prelim_per_class)
    done = 0
    prelim_rows = []
    for class_index, label in enumerate(("all", "hem")):
        train_patients = _patients(label, patients, 1)
        prelim_patients = _patients(label, max(1, patients // 3), patients + 1)
        jobs = [(train_patients, per_class, False), (prelim_patients, prelim_per_class, True)]
        for patient_ids, count, is_prelim in jobs:
            for image_index in range(count):
                patient_index = image_index % len(patient_ids)
                patient = patient_ids[patient_index]
                stain_rng = np.random.default_rng([seed, class_index, int(is_prelim), patient_index])
                stain, brightness = _patient_stain(stain_rng)
                rng = np.random.default_rng([seed, class_index, int(is_prelim), patient_index, image_index])
                image = render_cell(rng, label, stain, brightness, size)
                name = f"UID_{patient}_{image_index // len(patient_ids) + 1}_1_{label}.bmp"
                if is_prelim:
                    prelim_rows.append((name, label, image))
                else:
                    folder = root / "training_data" / f"fold_{patient_index % FOLDS}" / label
                    folder.mkdir(parents=True, exist_ok=True)
                    _write_bmp(folder / name, image)
                done += 1
                if progress and done % 10 == 0:
                    progress(done / total)
    _write_prelim(root, prelim_rows, seed)
    (root / SYNTHETIC_MARKER).write_text(
        json.dumps(
            {
                "synthetic": True,
                "generator": "pipeline.data.synthetic",
                "per_class": per_class,
                "patients": patients,
                "seed": seed,
                "prelim_per_class": prelim_per_class,
                "size": size,
                "note": "Synthetic C-NMC-like demo data, not clinical images.",
            },
            indent=2,
        )
    )
    if progress:
        progress(1.0)


def _write_prelim(root: Path, rows: list[tuple[str, str, np.ndarray]], seed: int) -> None:
    """The prelim test set: shuffled, renamed `<n>.bmp`, with the labels CSV of the challenge."""
    if not rows:
        return
    folder = root / "validation_data" / PRELIM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 99]).permutation(len(rows))
    table = []
    for new_index, row_index in enumerate(order, start=1):
        original, label, image = rows[row_index]
        _write_bmp(folder / f"{new_index}.bmp", image)
        table.append({"Patient_ID": original, "new_names": f"{new_index}.bmp", "labels": int(label == "all")})
    pd.DataFrame(table).to_csv(root / "validation_data" / PRELIM_LABELS, index=False)


DEMO_SETTINGS = {"per_class": 150, "patients": 8, "seed": 2019}


def ensure_demo_data(root: str | Path, progress: Callable[[float], None] | None = None) -> Path:
    """The embedded demo data set, generated on first use."""
    root = Path(root)
    if (root / SYNTHETIC_MARKER).is_file():
        return root
    return generate(root, progress=progress, **DEMO_SETTINGS)
