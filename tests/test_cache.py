from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import ClaheSettings
from pipeline.data import cache
from pipeline.data.layouts import scan_dataset
from pipeline.data.preprocess import load_and_preprocess


def test_second_load_decodes_nothing_and_changes_invalidate(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [r.path for r in scan_dataset(tiny_data).records][:6]
    first, failed = cache.load_images(paths, 32, ClaheSettings(), tmp_path)
    assert first.shape == (6, 32, 32, 3) and failed == {}
    assert np.array_equal(first[2], load_and_preprocess(paths[2], 32, ClaheSettings()))

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(cache, "load_and_preprocess", must_not_decode)
    second, _ = cache.load_images(paths, 32, ClaheSettings(), tmp_path)
    assert np.array_equal(first, second)
    with pytest.raises(AssertionError, match="decoded although cached"):
        cache.load_images(paths, 32, ClaheSettings(clip_limit=3.0), tmp_path)


def test_unreadable_images_are_listed_not_fatal(tiny_data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.bmp"
    broken.write_bytes(b"BM" + b"\x00" * 40)
    paths = [str(next((tiny_data / "training_data").rglob("*.bmp"))), str(broken)]
    images, failed = cache.load_images(paths, 32, ClaheSettings(), tmp_path / "cache")
    assert list(failed) == [str(broken)] and images.shape[0] == 2 and not images[1].any()
    assert "broken.bmp" in failed[str(broken)], "the reason names the file"
    _, again = cache.load_images(paths, 32, ClaheSettings(), tmp_path / "cache")
    assert again == failed, "the cache keeps the reasons"


def test_cached_array_computes_once(tmp_path: Path) -> None:
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(5.0)

    first, hit_first = cache.cached_array("x", {"a": 1}, compute, tmp_path)
    second, hit_second = cache.cached_array("x", {"a": 1}, compute, tmp_path)
    assert (hit_first, hit_second, len(calls)) == (False, True, 1) and np.array_equal(first, second)
    cache.cached_array("x", {"a": 2}, compute, tmp_path)
    assert len(calls) == 2
