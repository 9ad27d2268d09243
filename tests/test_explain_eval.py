"""Ranking explanation methods on a run (`explain-eval`): ROAD on the run's own test images, beside the cell's mask
and random maps inside the cell, written with the run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_explain_eval_scores_each_method_on_test_images_and_writes_what_it_returns(finished_run: Path) -> None:
    from pipeline.data.decode import read_image
    from pipeline.explain.cams import Explainer
    from pipeline.explain.explain_eval import FOREGROUND, evaluate_explanations
    from pipeline.explain.pictures import explain_prediction
    from pipeline.explain.road import cell_mask
    from pipeline.inference.predict import Predictor
    from pipeline.runs.folder import RunFolder

    table, summary, out = evaluate_explanations(finished_run, ["gradcam", "layercam"], images=3, seed=1)
    split = RunFolder(finished_run).split()
    test_paths = set(split.loc[split["subset"] == "test", "path"])
    assert summary["images"] == 3 and set(table["path"]) <= test_paths and table["path"].nunique() == 3
    assert set(table["method"]) == {"gradcam", "layercam", FOREGROUND, "random-in-cell"}
    assert table.groupby("path").size().eq(4).all(), "every image scored by every method and both references"
    for method, figure in summary["methods"].items():
        assert figure["road_mean"] == pytest.approx(table.loc[table["method"] == method, "road"].mean())
    assert summary["methods"]["gradcam"]["computed"].startswith("Grad-CAM")
    written = pd.read_csv(out / "road-top_activation.csv")
    assert written["road"].to_numpy() == pytest.approx(table["road"].to_numpy())
    assert json.loads((out / "road-top_activation.json").read_text()) == json.loads(json.dumps(summary))

    # one row recomputed by hand: the same map, class and seed give the same ROAD
    row_index = table.index[table["method"] == "gradcam"][0]
    row = table.loc[row_index]
    image_index = list(dict.fromkeys(table["path"])).index(row["path"])
    predictor = Predictor.from_run(finished_run)
    prediction = predictor.predict_image(read_image(row["path"]))
    explainer = Explainer(predictor.model, forward=predictor.forward)
    saliency = explain_prediction(explainer, prediction, "gradcam", "top_activation")
    again = explainer.road(
        prediction.input.astype(np.float32), saliency, prediction.class_index, seed=1 + image_index, baseline=False
    )
    assert again["combined"] == pytest.approx(row["road"], abs=1e-6)
    assert row["cell_share"] == pytest.approx(float(cell_mask(prediction.input.astype(np.float32)).mean()))

    repeated, _, _ = evaluate_explanations(finished_run, ["gradcam", "layercam"], images=3, seed=1)
    pd.testing.assert_frame_equal(repeated, table)
