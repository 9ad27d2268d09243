"""Damaged and unexpected inputs: each gets a message that names it, nothing is dropped in silence, cheap checks
come before TensorFlow loads, and a download cannot carry a spreadsheet formula."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import TrainConfig
from pipeline.core.errors import ImageReadError, PipelineError
from pipeline.data.datasets import check_trainable, prepare_data
from pipeline.data.decode import decode_image
from pipeline.data.layouts import scan_dataset, undecodable
from pipeline.runs.display import spreadsheet_safe
from pipeline.training.train import prepare_run
from tests.conftest import TINY

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def damaged_data(tiny_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the tiny data with one garbage file (a .bmp that is text) and one BMP cut in half."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    folder = next(data.rglob("all"))
    garbage = folder / "UID_91_1_1_all.bmp"
    garbage.write_text("not an image at all")
    source = next(path for path in sorted(folder.iterdir()) if path.suffix == ".bmp" and path != garbage)
    truncated = folder / "UID_92_1_1_all.bmp"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return data, garbage, truncated


def test_unreadable_images_are_named_with_their_reasons(damaged_data, tmp_path: Path, monkeypatch) -> None:
    data, garbage, truncated = damaged_data
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    dataset = scan_dataset(data)
    assert [path for path, _ in dataset.skipped] == [str(garbage)], "the scan finds the garbage by its content"
    assert [path for path, _ in undecodable(dataset)] == [str(truncated)], "decoding finds the truncated one"
    prepared = prepare_data(TrainConfig(data_dir=str(data), **TINY))
    left_out = dict(prepared.skipped())
    assert set(left_out) == {str(garbage), str(truncated)}
    assert "not a BMP, PNG, JPEG or TIFF" in left_out[str(garbage)]
    assert truncated.name in left_out[str(truncated)] and "corrupt or truncated" in left_out[str(truncated)]
    assert str(truncated) not in set(prepared.split["path"])
    with pytest.raises(PipelineError, match=r"1 image\(s\) do not read.*on_bad_image=fail.*UID_91_1_1_all"):
        prepare_data(TrainConfig(data_dir=str(data), on_bad_image="fail", **TINY))  # the scan's find, first
    garbage.unlink()
    with pytest.raises(PipelineError, match=r"1 image\(s\) do not read.*UID_92_1_1_all.bmp could not be decoded"):
        prepare_data(TrainConfig(data_dir=str(data), on_bad_image="fail", **TINY))  # then the decoder's


def test_info_lists_every_image_that_does_not_read(damaged_data) -> None:
    data, garbage, truncated = damaged_data
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "info", "--data", str(data), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    info = json.loads(result.stdout)
    assert [line.split(":")[0] for line in info["skipped_files"]] == [str(garbage)]
    assert info["undecodable"] == 1 and info["undecodable_files"][0].startswith(f"{truncated}: {truncated.name}")
    assert "imdecode" not in result.stderr, "OpenCV's own line, which names no file, is silenced"


@pytest.mark.slow
def test_a_run_lists_what_it_skipped_in_its_folder_and_log(damaged_data, tmp_path: Path, monkeypatch, caplog) -> None:
    from pipeline.training.train import train

    data, garbage, truncated = damaged_data
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        folder = train(TrainConfig(data_dir=str(data), **TINY), tmp_path / "runs")
    skipped = folder.skipped()
    assert list(skipped["path"]) == [str(garbage), str(truncated)]
    assert folder.config()["skipped_images"] == 2
    logged = [record.getMessage() for record in caplog.records]
    assert any(str(truncated) in line and "corrupt or truncated" in line for line in logged), logged


def test_data_a_run_cannot_use_is_refused_before_tensorflow_and_leaves_no_folder(
    tiny_data: Path, tmp_path: Path
) -> None:
    one_class = tmp_path / "one-class"
    shutil.copytree(tiny_data / "training_data" / "fold_0" / "all", one_class / "all")
    count = len(list((one_class / "all").iterdir()))
    with pytest.raises(PipelineError, match=rf"holds {count} image\(s\) \({count} ALL, 0 HEM to train on\)"):
        prepare_run(TrainConfig(data_dir=str(one_class), **TINY), tmp_path / "runs")
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in list((tiny_data / "training_data" / "fold_0" / "all").iterdir())[:3]:
        shutil.copy(path, loose / path.name)
    with pytest.raises(PipelineError, match=r"3 image file\(s\) there, none in a class folder"):
        prepare_run(TrainConfig(data_dir=str(loose), **TINY), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys\nfrom pipeline.training.train import prepare_run\n"
                "from pipeline.core.config import TrainConfig\n"
                f"try: prepare_run(TrainConfig(data_dir={str(one_class)!r}, weights='none'))\n"
                "except ValueError: pass\n"
                "print('tensorflow' in sys.modules)"
            ),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "False", "the refusal comes before TensorFlow is imported"


def test_unreadable_files_fail_a_checked_run_before_it_starts(damaged_data) -> None:
    data, garbage, _ = damaged_data
    with pytest.raises(PipelineError, match=garbage.name):
        check_trainable(TrainConfig(data_dir=str(data), on_bad_image="fail", **TINY))
    assert check_trainable(TrainConfig(data_dir=str(data), **TINY)).skipped, "skipping is the default"


def test_a_float_tiff_is_refused_by_name_not_called_corrupt() -> None:
    ok, encoded = cv2.imencode(".tiff", np.random.default_rng(0).random((32, 32, 3)).astype(np.float32))
    assert ok
    with pytest.raises(ImageReadError, match="32-bit float images are not supported"):
        decode_image(encoded.tobytes(), "float.tif")


def test_csv_downloads_carry_no_spreadsheet_formula() -> None:
    frame = pd.DataFrame(
        {
            "image": ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "cell.png"],
            "prob_all": [0.1, -0.5, 0.3, 0.4, 0.5, 0.6],
        }
    )
    safe = spreadsheet_safe(frame)
    assert safe["image"].tolist() == ['\'=HYPERLINK("http://x")', "'+1", "'-2", "'@SUM(A1)", "'\tx", "cell.png"]
    assert safe["prob_all"].tolist() == frame["prob_all"].tolist(), "numbers stay numbers"
    assert frame["image"].iloc[0].startswith("="), "the table shown on the page is left as it is"


def test_the_command_line_stops_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for index in range(400):  # enough listed rows to overflow a pipe's buffer
        (runs / f"run-{index:04d}").mkdir(parents=True)
        (runs / f"run-{index:04d}" / "config.json").write_text("{")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "runs", "--runs-dir", str(runs), "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    _, stderr = process.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr.decode()
