"""`python -m bench.ui`: what a Predict-page interaction costs the server, measured with Streamlit's AppTest.

A visitor's image is predicted and explained once; then the heatmap opacity slider is moved, which should only
redraw the overlay. Reports the median and spread of the rerun time of each slider move, for the app in `--app`
(so the same script measures an older checkout as a baseline in the same session).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def slider_moves(app_file: Path, image: str, moves: int = 6) -> dict[str, float]:
    """The first prediction of `image` (picked on Predict), then `moves` opacity slider moves, timed."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(app_file), default_timeout=300)
    app.run()
    app.switch_page("pages/predict.py").run()
    picker = next(box for box in app.selectbox if box.label.startswith("…or pick"))
    started = time.perf_counter()
    picker.set_value(image).run()
    first = time.perf_counter() - started
    slider = next(item for item in app.slider if item.label == "Heatmap opacity")
    times = []
    for index in range(moves):
        slider = next(item for item in app.slider if item.label == "Heatmap opacity")
        started = time.perf_counter()
        slider.set_value(0.3 + 0.1 * (index % 5)).run()
        times.append(time.perf_counter() - started)
    assert not app.exception, [error.value for error in app.exception]
    return {
        "first_prediction_s": round(first, 3),
        "slider_move_median_s": round(statistics.median(times), 3),
        "slider_move_min_s": round(min(times), 3),
        "slider_move_max_s": round(max(times), 3),
        "moves": moves,
    }


def main() -> None:
    """Time the dashboard's pages in a browser and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--app", type=Path, default=Path(__file__).resolve().parent.parent / "streamlit_app.py")
    parser.add_argument("--moves", type=int, default=6)
    args = parser.parse_args()
    from pipeline.data.layouts import scan_dataset

    image = scan_dataset(os.environ.get("CNMC_DATA_DIR") or "samples/cnmc-fold1").records[0].path
    print(json.dumps(slider_moves(args.app, image, args.moves)))


if __name__ == "__main__":
    main()
