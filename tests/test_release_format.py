"""The release's file and arithmetic without TensorFlow: several members round-trip through head.npz without
pickle, a file written before ensembles still reads, and the average of probabilities is computed without overflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logit

from pipeline.core.errors import PipelineError
from pipeline.models.input_checks import DistanceScore, FormatCheck
from pipeline.models.release import LinearHead, Member, Release, mean_probability_logit, release_arrays


def _release(members: int, rng: np.random.Generator) -> Release:
    def head() -> LinearHead:
        return LinearHead(rng.normal(size=8), rng.uniform(0.5, 2, 8), rng.normal(size=8), float(rng.normal()))

    return Release(
        [Member(f"efficientnet_lite{index}", 224 + 16 * index, [head() for _ in range(4)]) for index in range(members)],
        0.15,
        2.5,
        DistanceScore.fit(rng.normal(size=(40, 8)), components=3),
        2.0,
        FormatCheck(0.02, 0.6, 0.9),
        0.3,
        0.8,
    )


def test_several_members_round_trip_and_each_keeps_its_own_heads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    release = _release(3, rng)
    release.save(tmp_path / "head.npz")
    loaded = Release.load(tmp_path / "head.npz")
    assert [(m.backbone, m.image_size) for m in loaded.members] == [
        ("efficientnet_lite0", 224),
        ("efficientnet_lite1", 240),
        ("efficientnet_lite2", 256),
    ]
    features = [rng.normal(size=(5, 8)) for _ in range(3)]
    for fold in range(4):
        assert np.allclose(loaded.prob_all(features, fold), release.prob_all(features, fold), atol=1e-5)
    changed = [features[0], features[1], features[2] + 1]
    assert not np.allclose(loaded.prob_all(changed), loaded.prob_all(features)), "the third member counts"
    with pytest.raises(PipelineError, match="2 feature arrays for 3 members"):
        loaded.prob_all(features[:2])


def test_each_members_average_cell_round_trips_and_a_file_without_one_reads_as_none(tmp_path: Path) -> None:
    from dataclasses import replace

    rng = np.random.default_rng(3)
    release = _release(2, rng)
    maps = [rng.uniform(0, 6, (7, 7, 8)).astype(np.float32), rng.uniform(0, 6, (8, 8, 8)).astype(np.float32)]
    with_maps = replace(release, members=[replace(m, reference=r) for m, r in zip(release.members, maps, strict=True)])
    with_maps.save(tmp_path / "head.npz")
    loaded = Release.load(tmp_path / "head.npz")
    for member, reference in zip(loaded.members, maps, strict=True):
        assert member.reference.dtype == np.float32 and member.reference.shape == reference.shape
        assert np.allclose(member.reference, reference, rtol=1e-3), "stored at 16 bits"
    release.save(tmp_path / "old.npz")  # written before the average cell was stored
    assert [member.reference for member in Release.load(tmp_path / "old.npz").members] == [None, None]


def test_a_head_file_written_before_ensembles_reads_as_one_member(tmp_path: Path) -> None:
    release = _release(1, np.random.default_rng(1))
    arrays = release_arrays(release)
    arrays["backbone"], arrays["image_size"] = arrays.pop("backbones")[0], arrays.pop("image_sizes")[0]
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    loaded = Release.load(tmp_path / "old.npz")
    assert len(loaded.members) == 1 and loaded.backbone == "efficientnet_lite0" and loaded.image_size == 224
    features = np.random.default_rng(2).normal(size=(6, 8))
    single = expit(release.heads[2].logits(features) / release.temperature)  # one member: its own calibrated head
    assert np.allclose(loaded.prob_all([features], 2), single, atol=1e-5)


def test_the_mean_of_probabilities_in_log_space() -> None:
    logits = np.array([[-3.0, 0.5, 12.0], [1.0, -2.0, 40.0]])
    expected = logit(expit(logits).mean(axis=0))
    assert np.allclose(mean_probability_logit(logits), expected)
    assert np.array_equal(mean_probability_logit(logits[:1]), logits[0]), "one member is its own logit"
    extreme = mean_probability_logit(np.array([[800.0, -800.0], [790.0, -900.0]]))
    assert np.all(np.isfinite(extreme)) and extreme[0] > 700 and extreme[1] < -700


def test_a_damaged_head_file_is_refused_with_its_name(tmp_path: Path) -> None:
    arrays = release_arrays(_release(2, np.random.default_rng(3)))
    del arrays["head_coef_1"]
    np.savez_compressed(tmp_path / "head.npz", **arrays)
    with pytest.raises(PipelineError, match="not a readable released head"):
        Release.load(tmp_path / "head.npz")


def test_a_released_ensemble_is_named_by_every_member_and_one_backbone_as_before() -> None:
    from pipeline.runs.display import backbone_name
    from pipeline.runs.record import backbone_label, image_size_label

    members = [{"backbone": f"efficientnet_lite{i}", "image_size": size} for i, size in enumerate((224, 240, 260))]
    ensemble = {"backbone": "efficientnet_lite0", "image_size": 224, "members": members}
    assert backbone_label(ensemble) == "efficientnet_lite0 + efficientnet_lite1 + efficientnet_lite2"
    assert image_size_label(ensemble) == "224/240/260"
    assert backbone_name(backbone_label(ensemble)) == "EfficientNet-Lite0 + EfficientNet-Lite1 + EfficientNet-Lite2"
    single = {"backbone": "efficientnet_b3", "image_size": 300, "members": members[:1]}
    assert (backbone_label(single), image_size_label(single)) == ("efficientnet_b3", 300)
    assert backbone_name(backbone_label(single)) == "EfficientNet-B3"
