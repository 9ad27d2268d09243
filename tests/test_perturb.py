"""The class-independent perturbations of training copies: a cell keeps its size and black background, its colour
and focus change within their ranges, and the same generator state gives the same copy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.data import perturb
from pipeline.data.shortcuts import cell_mask, colour_stats, describe


def _cell(size: int = 300) -> np.ndarray:
    """A textured ellipse on black, off centre (so a rotation moves it), like a segmented cell of a picture two
    thirds the size of C-NMC's (the blur's sigma is in pixels of theirs)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    inside = ((yy - 130) / 55) ** 2 + ((xx - 170) / 80) ** 2 <= 1
    texture = cv2.GaussianBlur(rng.normal(0, 40, (size, size, 3)).astype(np.float32), (0, 0), 2.0)  # chromatin
    image = np.zeros((size, size, 3), np.float32)
    image[inside] = np.asarray((150, 90, 160), np.float32) + texture[inside]
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(5))
def test_a_perturbed_cell_keeps_its_size_and_black_background(seed: int) -> None:
    cell = _cell()
    out = perturb.perturb_cell(cell, np.random.default_rng(seed))
    assert out.shape == cell.shape and out.dtype == np.uint8
    assert cell_mask(out).mean() == pytest.approx(cell_mask(cell).mean(), rel=0.15), "size is not a perturbation"
    corners = out[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert not corners.any(), "the background stays black"
    low = perturb.CHANNEL_GAIN_RANGE[0] * perturb.BRIGHTNESS_GAIN_RANGE[0]
    high = perturb.CHANNEL_GAIN_RANGE[1] * perturb.BRIGHTNESS_GAIN_RANGE[1]
    ratio = colour_stats(out)[0] / colour_stats(cell)[0]
    assert np.all(ratio > low - 0.08) and np.all(ratio < high + 0.08), "stain jitter within its range"


def test_the_same_generator_gives_the_same_copy_and_another_a_different_one() -> None:
    cell = _cell()
    first = perturb.perturb_cell(cell, np.random.default_rng([7, 3]))
    np.testing.assert_array_equal(first, perturb.perturb_cell(cell, np.random.default_rng([7, 3])))
    assert not np.array_equal(first, perturb.perturb_cell(cell, np.random.default_rng([7, 4])))
    assert not np.array_equal(first, cell)


def test_copies_span_sharp_to_defocused_and_move_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = _cell()
    sharpness = [describe(perturb.perturb_cell(cell, np.random.default_rng(seed)))["sharpness"] for seed in range(40)]
    original = describe(cell)["sharpness"]
    assert max(sharpness) > 0.5 * original and min(sharpness) < 0.2 * original, "from in focus to well blurred"
    monkeypatch.setattr(perturb, "BLUR_SIGMA_RANGE", (0.0, 0.0))
    monkeypatch.setattr(perturb, "CHANNEL_GAIN_RANGE", (1.0, 1.0))
    monkeypatch.setattr(perturb, "BRIGHTNESS_GAIN_RANGE", (1.0, 1.0))
    moved = perturb.perturb_cell(cell, np.random.default_rng(1))
    assert (cell_mask(moved) != cell_mask(cell)).mean() > 0.02, "rotated or flipped: the off-centre cell moved"
    assert np.allclose(colour_stats(moved)[0], colour_stats(cell)[0], atol=3), "no jitter asked, none given"
