"""The command line as a user types it: one clear line on bad input, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_BACKBONE

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, env_dir: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **({"ARTIFACTS_DIR": str(env_dir)} if env_dir else {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )


def test_info_on_a_missing_root_is_one_clear_line(tmp_path: Path) -> None:
    result = cli("info", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_info_json_counts_the_demo_layout(tiny_data: Path) -> None:
    import json

    result = cli("info", "--data", str(tiny_data), "--json")
    info = json.loads(result.stdout)
    assert info["per_class"] == {"ALL": 18, "HEM": 18}, "16 training + 2 prelim images per class"
    assert info["synthetic"] is True and info["per_subset"]["prelim_test"] == 4


def test_train_on_a_missing_root_creates_no_run(tmp_path: Path) -> None:
    result = cli("train", "--data", str(tmp_path / "nowhere"), "--recipe", "scratch", env_dir=tmp_path / "art")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "art" / "runs").exists() or not any((tmp_path / "art" / "runs").iterdir())


@pytest.mark.slow
def test_predict_prints_classes_and_a_bad_image_gets_one_error_line(
    finished_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    good = next((tiny_data / "training_data").rglob("*.bmp"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = cli("predict", str(finished_run), str(good), str(bad), "--csv", str(tmp_path / "out.csv"))
    assert result.returncode == 1
    assert str(good) in result.stdout and "prob_all=" in result.stdout
    assert "error: bad.png" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_explain_writes_the_documented_files(finished_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    import json

    import numpy as np

    image = next((tiny_data / "training_data").rglob("*.bmp"))
    result = cli("explain", str(finished_run), str(image), "--method", "gradcam,layercam", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / image.stem
    model_input = np.load(folder / "input.npy")
    assert model_input.dtype == np.float32 and model_input.shape == (32, 32, 3)
    for method in ("gradcam", "layercam"):
        heatmap = np.load(folder / f"{method}.npy")
        assert heatmap.shape == (32, 32) and heatmap.min() >= 0 and heatmap.max() <= 1
        assert (folder / f"{method}.png").read_bytes().startswith(b"\x89PNG")
        road = json.loads((folder / f"{method}_road.json").read_text())
        assert len(road["morf"]) == len(road["lerf"]) == 9 and "random_in_cell" in road


@pytest.mark.slow
def test_unavailable_weights_stop_with_one_line_and_leave_no_run(tiny_data: Path, tmp_path: Path) -> None:
    result = cli(
        "train",
        "--data",
        str(tiny_data),
        "--weights",
        str(tmp_path / "missing.h5"),
        "--backbone",
        TINY_BACKBONE,
        "--image-size",
        "32",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 2 and "missing.h5 does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b""], ids=["json", "bytes", "empty"])
def test_resume_of_a_run_with_an_unreadable_status_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    run = tmp_path / "runs" / "20260101-000000-x"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "status.json").write_bytes(content)
    result = cli("resume", str(run))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: status.json of run 20260101-000000-x does not read")


RUN_COMMANDS = [
    ("report",),
    ("export",),
    ("resume",),
    ("evaluate",),
    ("explain-eval",),
    ("predict", "x.png"),
    ("explain", "x.png", "--out", "out"),
]


@pytest.mark.parametrize("command", RUN_COMMANDS, ids=[c[0] for c in RUN_COMMANDS])
def test_every_run_command_refuses_a_missing_or_foreign_folder_in_one_line(command, tmp_path: Path, capsys) -> None:
    from pipeline.__main__ import main

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.txt").write_text("not a run")
    for path, reason in ((tmp_path / "nowhere", "no run folder at"), (foreign, "is not a run folder")):
        args = [command[0], str(path), *command[1:]]
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and reason in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_run_missing_a_file_it_must_hold_is_named_not_a_traceback(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(finished_run, damaged)
    (damaged / "metrics.json").unlink()
    result = cli("report", str(damaged))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


GIVEN = {
    "backbone": ("--backbone", "efficientnet_lite1"),
    "image_size": ("--image-size", "96"),
    "epochs": ("--epochs", "7"),
    "batch_size": ("--batch-size", "8"),
    "learning_rate": ("--learning-rate", "0.003"),
    "decay_steps": ("--decay-steps", "450"),
    "decay_rate": ("--decay-rate", "0.9"),
    "weights": ("--weights", "none"),
    "split": ("--split", "image"),
    "test_fraction": ("--test-fraction", "0.3"),
    "val_fraction": ("--val-fraction", "0.25"),
    "val_fold": ("--val-fold", "1"),
    "folds": ("--folds", "0"),
    "cv_folds": ("--cv-folds", "4"),
    "cv_fold": ("--cv-fold", "3"),
    "seed": ("--seed", "7"),
    "optimizer": ("--optimizer", "rmsprop"),
    "bn_momentum": ("--bn-momentum", "0.8"),
    "freeze_backbone": ("--no-freeze-backbone", None),
    "fine_tune_blocks": ("--fine-tune-blocks", "1"),
    "fine_tune_epochs": ("--fine-tune-epochs", "5"),
    "augment": ("--no-augment", None),
    "augment_passes": ("--augment-passes", "2"),
    "augment_strength": ("--augment-strength", "standard"),
    "class_weight": ("--no-class-weight", None),
    "balance_patients": ("--no-balance-patients", None),
    "head_l2": ("--head-l2", "0.5"),
    "validation_from": ("--validation-from", "both"),
    "tta": ("--no-tta", None),
    "temperature_scaling": ("--temperature-scaling", None),
    "max_images": ("--max-images", "100"),
    "on_bad_image": ("--on-bad-image", "fail"),
    "random_features": ("--random-features", None),
    "oof_group": ("--oof-group", "cv3-g"),
    "name": ("--name", "mine"),
}
"""A value unlike the `lite` recipe's for every setting a flag sets: a new TrainConfig field fails the test below
until it has its flag (and a line here)."""


def _parsed_config(*argv: str):
    from pipeline.cli import build_parser
    from pipeline.cli.options import config_from_args

    return config_from_args(build_parser().parse_args(list(argv)))


def test_every_setting_of_a_run_has_a_flag_generated_from_the_config() -> None:
    import dataclasses

    from pipeline.core.config import TrainConfig, recipe_config

    assert set(GIVEN) == {field.name for field in dataclasses.fields(TrainConfig)} - {"data_dir", "clahe", "recipe"}
    cross_validation = ("cv_folds", "cv_fold", "oof_group")  # only with the patient split (or none): given apart
    argv = [
        part
        for name, (flag, value) in GIVEN.items()
        if name not in cross_validation
        for part in (flag, value)
        if part is not None
    ]
    config = _parsed_config(
        "train", "--data", "cells", "--recipe", "lite", *argv, "--clahe-clip", "3.5", "--clahe-grid", "4", "--no-clahe"
    )
    recipe = recipe_config("lite", "cells")
    for name in set(GIVEN) - set(cross_validation):
        assert getattr(config, name) != getattr(recipe, name), f"--{name} did not reach the config"
    fold = _parsed_config("train", "--data", "cells", "--recipe", "lite", *GIVEN["cv_folds"], *GIVEN["cv_fold"])
    assert (fold.cv_folds, fold.cv_fold) == (4, 3)
    final = _parsed_config("train", "--data", "cells", "--recipe", "lite", "--split", "none", *GIVEN["oof_group"])
    assert (final.split, final.oof_group) == ("none", "cv3-g")
    assert (config.clahe.clip_limit, config.clahe.tile_grid, config.clahe.enabled) == (3.5, 4, False)
    assert config.recipe == "lite" and config.data_dir == "cells"
    untouched = _parsed_config("train", "--data", "cells", "--recipe", "lite")
    assert untouched == recipe, "a flag left out keeps the recipe's value"


def test_config_reruns_a_run_with_flags_on_top(tmp_path: Path) -> None:
    import json

    from pipeline.core.config import recipe_config

    original = recipe_config("scratch", "elsewhere", epochs=9, seed=5, name="first")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**original.to_dict(), "run_id": "x", "weights_used": "none"}))
    assert _parsed_config("train", "--config", str(run)) == original
    assert _parsed_config(
        "train", "--config", str(run / "config.json"), "--epochs", "2", "--data", "here"
    ) == original.replace(epochs=2, data_dir="here")
    crossval = _parsed_config("crossval", "--config", str(run), "--folds", "4", "--cnmc-folds", "1")
    assert (crossval.cv_folds, crossval.folds, crossval.seed) == (4, "1", 5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--recipe", "lite"], "--data is required"),
        (["train", "--config", "NOWHERE"], "holds no config.json"),
        (["train", "--config", "RUN", "--recipe", "lite"], "not both"),
    ],
)
def test_bad_config_options_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"data_dir": "x"}')
    argv = [str(run) if part == "RUN" else str(tmp_path / part) if part == "NOWHERE" else part for part in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_command_line_starts_without_tensorflow_or_scikit_learn() -> None:
    """`--help` and argument errors come at once: the commands import the heavy libraries when they run."""
    probe = (
        "import sys, pipeline.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules, 'sklearn' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False", "False"], result.stderr
