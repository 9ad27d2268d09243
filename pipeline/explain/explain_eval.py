"""Ranking explanation methods and layers on a run: ROAD over its test images, per image and averaged, against
random maps inside the cell and a plain foreground mask (a map that only knows where the cell is)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.files import write_csv_atomic, write_json_atomic
from ..data.decode import read_image
from ..inference.predict import Predictor
from ..runs.folder import RunFolder
from .cams import DEFAULT_LAYER
from .pictures import explain_prediction, explainer_of
from .road import FRACTIONS, cell_mask, random_in_cell

FOREGROUND = "foreground-mask"
"""A reference 'method': the cell's mask as the map. Any method worth its name must beat it."""


def evaluate_explanations(
    run_dir: str | Path,
    methods: Sequence[str],
    layer: str = DEFAULT_LAYER,
    images: int = 20,
    seed: int = 0,
    fractions: Sequence[float] = FRACTIONS,
) -> tuple[pd.DataFrame, dict[str, Any], Path]:
    """ROAD of each method (and of the foreground mask and random maps in the cell) on `images` test images of
    the run, drawn at random (seeded). Writes `explanations/road-<layer>.csv` (per image) and `.json`
    (mean and standard deviation per method) in the run folder; returns the table, the summary and the folder."""

    folder = RunFolder(Path(run_dir))
    predictor = Predictor.from_run(run_dir)
    explainer = explainer_of(predictor)
    test = folder.split().query("subset == 'test'")
    chosen = test.sample(min(images, len(test)), random_state=seed) if len(test) else test
    rows = []
    for index, record in enumerate(chosen.itertuples(index=False)):
        prediction = predictor.predict_image(read_image(record.path))  # the class the run shows (TTA)
        model_input, class_index = prediction.input.astype(np.float32), prediction.class_index
        rng = np.random.default_rng(seed + index)
        cell = cell_mask(model_input)
        maps = {method: explain_prediction(explainer, prediction, method, layer) for method in methods}
        maps[FOREGROUND] = cell.astype(np.float32)
        maps["random-in-cell"] = random_in_cell(cell, rng)
        for name, saliency in maps.items():
            result = explainer.road(model_input, saliency, class_index, fractions, seed + index, baseline=False)
            rows.append(
                {
                    "path": record.path,
                    "label": record.label,
                    "method": name,
                    "road": result["combined"],
                    "morf_mean": float(np.mean(result["morf"])),
                    "lerf_mean": float(np.mean(result["lerf"])),
                    "cell_share": float(cell.mean()),
                }
            )
    table = pd.DataFrame(rows)
    summary = {
        "layer": layer,
        "images": int(len(chosen)),
        "fractions": list(fractions),
        "methods": {
            name: {
                "computed": explainer.label(name, layer) if name in methods else name,
                "road_mean": float(group["road"].mean()),
                "road_std": float(group["road"].std(ddof=1)) if len(group) > 1 else None,
            }
            for name, group in table.groupby("method", sort=False)
        },
    }
    out = folder.explanations_dir()
    write_csv_atomic(out / f"road-{layer}.csv", table)
    write_json_atomic(out / f"road-{layer}.json", summary)
    return table, summary, out
