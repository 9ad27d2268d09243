"""Maps at the input's size: a layer-resolution map upsampled and scaled, and a grid of a stage's feature maps."""

from __future__ import annotations

import cv2
import numpy as np


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A layer-resolution map at the input size, pixel centres aligned (cv2.resize, bilinear)."""
    return cv2.resize(np.asarray(cam, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def finished(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A layer-resolution map at the input size, scaled to [0, 1] (float32; zeros for an empty map)."""
    cam = upsample(cam, height, width)
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    return np.clip(np.nan_to_num(cam), 0.0, 1.0).astype(np.float32)


def channel_grid(activation: np.ndarray, channels: int) -> np.ndarray:
    """A grid image (float32 in [0, 1]) of the `channels` most active maps of an activation (height, width,
    channels), each scaled to its own range, one pixel apart."""
    strongest = np.argsort(-activation.mean(axis=(0, 1)))[:channels]
    maps = []
    for channel in strongest:
        plane = activation[:, :, channel]
        span = plane.max() - plane.min()
        maps.append((plane - plane.min()) / span if span > 0 else np.zeros_like(plane))
    columns = int(np.ceil(np.sqrt(len(maps))))
    rows = int(np.ceil(len(maps) / columns))
    height, width = activation.shape[:2]
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1), np.float32)
    for index, plane in enumerate(maps):
        row, column = divmod(index, columns)
        grid[row * (height + 1) : row * (height + 1) + height, column * (width + 1) : column * (width + 1) + width] = (
            plane
        )
    return grid
