"""A patient's cells together: zips read safely, and the per-group summary against numpy. No TensorFlow."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import PipelineError
from pipeline.inference import cells


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_gives_its_images_in_order_and_names_every_member_it_leaves_out_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cells, "MAX_MEMBER_BYTES", 100)
    data = _zip(
        {
            "b/2.png": b"two",
            "a/1.bmp": b"one",
            "notes.txt": b"x",
            "__MACOSX/._1.bmp": b"y",
            ".hidden.png": b"z",
            "a/": b"",
            "../../../../outside.png": b"escape",
            "/etc/absolute.png": b"escape",
            "inner.zip": _zip({"c.png": b"c"}),
            "huge.tif": b"\0" * 101,
        }
    )
    contents = cells.read_zip(data, "patient.zip")
    assert contents.images == [("a/1.bmp", b"one"), ("b/2.png", b"two")]
    reasons = dict(contents.skipped)
    assert set(reasons) == {
        "notes.txt",
        "__MACOSX/._1.bmp",
        ".hidden.png",
        "../../../../outside.png",
        "/etc/absolute.png",
        "inner.zip",
        "huge.tif",
    }, "every file but the images and the folder entry is named"
    assert reasons["../../../../outside.png"].startswith("unsafe path")
    assert reasons["/etc/absolute.png"].startswith("unsafe path")
    assert reasons["inner.zip"].startswith("an archive inside the zip")
    assert reasons["huge.tif"].startswith("too large")
    assert reasons["notes.txt"].startswith("not an image")
    rows = cells.skipped_rows(contents.skipped, "patient.zip")
    table = pd.DataFrame(rows + [{"path": "x", "group": "patient.zip", "prob_all": 0.7, "error": None}])
    summary = cells.group_summary(table).iloc[0]
    assert summary["skipped"] == 7 and summary["unreadable"] == 0 and summary["cells"] == 1
    assert "7 left out of the zip" in cells.summary_lines(cells.group_summary(table))[0]


def test_a_zip_that_is_not_one_or_too_big_is_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PipelineError, match="not a readable zip"):
        cells.read_zip(b"PK\x03\x04 not really", "bad.zip")
    with pytest.raises(PipelineError, match="holds no image.*readme.txt: not an image"):
        cells.read_zip(_zip({"readme.txt": b"x"}), "empty.zip")
    monkeypatch.setattr(cells, "MAX_ZIP_MEMBERS", 2)
    with pytest.raises(PipelineError, match="3 images; at most 2"):
        cells.read_zip(_zip({f"{i}.png": b"x" for i in range(3)}), "many.zip")
    monkeypatch.setattr(cells, "MAX_ZIP_MEMBERS", 100)
    monkeypatch.setattr(cells, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(PipelineError, match="unpacks to more than"):
        cells.read_zip(_zip({"big.png": b"\0" * 2000}), "bomb.zip")


def test_folders_expand_to_their_images_with_the_folder_as_group(tmp_path: Path) -> None:
    (tmp_path / "p1" / "sub").mkdir(parents=True)
    for name in ("p1/a.png", "p1/sub/b.BMP", "p1/c.txt", "single.png"):
        (tmp_path / name).write_bytes(b"x")
    found = cells.expand([tmp_path / "p1", tmp_path / "single.png"])
    assert found == [
        (str(tmp_path / "p1" / "a.png"), str(tmp_path / "p1")),
        (str(tmp_path / "p1" / "sub" / "b.BMP"), str(tmp_path / "p1")),
        (str(tmp_path / "single.png"), str(tmp_path)),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="holds no image"):
        cells.expand([tmp_path / "empty"])


def test_the_summary_per_group_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    prob = rng.uniform(0, 1, 40)
    table = pd.DataFrame(
        {
            "group": ["a"] * 25 + ["b"] * 15,
            "prob_all": prob,
            "in_distribution": rng.uniform(0, 1, 40) > 0.2,
            "error": None,
        }
    )
    table.loc[3, ["prob_all"]] = np.nan  # one unreadable image
    summary = cells.group_summary(table).set_index("group")
    for group, rows in table.groupby("group"):
        read = rows[rows["prob_all"].notna()]
        assert summary.loc[group, "cells"] == len(read)
        assert summary.loc[group, "unreadable"] == len(rows) - len(read)
        assert summary.loc[group, "mean_prob_all"] == pytest.approx(read["prob_all"].mean(), abs=1e-4)
        assert summary.loc[group, "share_called_all"] == pytest.approx((read["prob_all"] >= 0.5).mean(), abs=1e-4)
        assert summary.loc[group, "failed_input_check"] == (~read["in_distribution"]).sum()
        assert summary.loc[group, "low"] < read["prob_all"].mean() < summary.loc[group, "high"]
    narrow = cells.mean_interval(np.full(50, 0.3))
    assert narrow == pytest.approx((0.3, 0.3)), "cells that all agree leave no doubt about their mean"
    lines = cells.summary_lines(cells.group_summary(table))
    assert lines[0].startswith("a: 24 cells, mean P(ALL)") and "1 unreadable" in lines[0]
