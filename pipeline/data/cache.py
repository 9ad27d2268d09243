"""Decode + resize + CLAHE once: preprocessed images cached as uint8 arrays, keyed by files and settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..core.config import ClaheSettings, default_cache_dir
from ..core.errors import ImageReadError
from ..core.files import save_npy_atomic, write_json_atomic
from .preprocess import load_and_preprocess

CACHE_VERSION = 2  # 2: unreadable images are kept with their reasons


def cache_key(paths: Sequence[str], image_size: int, clahe: ClaheSettings) -> str:
    """Changes when any file (path, size, modification time) or preprocessing setting changes."""
    settings = {name: value for name, value in asdict(clahe).items() if name != "cell_area" or value}  # as before
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "size": image_size, "clahe": settings}).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def preprocess_many(
    paths: Sequence[str],
    image_size: int,
    clahe: ClaheSettings,
    workers: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Preprocess `paths` in parallel (OpenCV releases the GIL); returns the images and the unreadable paths
    with the reason each did not read.

    Unreadable images are left as zeros in the array and listed, so positions still match `paths`.
    """
    images = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
    failed: dict[str, str] = {}

    def work(index: int) -> None:
        try:
            images[index] = load_and_preprocess(paths[index], image_size, clahe)
        except ImageReadError as error:
            failed[paths[index]] = str(error)

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(work, range(len(paths))), start=1):
            if progress and (done % 25 == 0 or done == len(paths)):
                progress(done / len(paths))
    return images, dict(sorted(failed.items()))


def load_images(
    paths: Sequence[str],
    image_size: int,
    clahe: ClaheSettings,
    cache_dir: Path | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Preprocessed images for `paths`, from the cache when present (a second call decodes nothing), and the
    paths that did not read, each with its reason."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(paths, image_size, clahe)
    array_path = cache_dir / f"images-{key}.npy"
    meta_path = cache_dir / f"images-{key}.json"
    if array_path.is_file() and meta_path.is_file():
        if progress:
            progress(1.0)
        return np.load(array_path, mmap_mode="r"), json.loads(meta_path.read_text())["failed"]
    images, failed = preprocess_many(paths, image_size, clahe, progress=progress)
    save_npy_atomic(array_path, images)
    write_json_atomic(meta_path, {"count": len(paths), "image_size": image_size, "failed": failed})
    return images, failed


def cached_array(
    name: str, key_parts: dict, compute: Callable[[], np.ndarray], cache_dir: Path | None = None
) -> tuple[np.ndarray, bool]:
    """`compute()` saved under a key of `key_parts`; returns the array and whether it came from the cache."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir / f"{name}-{key}.npy"
    if path.is_file():
        return np.load(path), True
    array = compute()
    save_npy_atomic(path, array)
    return array, False
