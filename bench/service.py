"""The inference service alone (`bench --load`'s last part): visitors as threads in one process, no browsers or
pages, batching on and off."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.measure import ratio


def service_level(loads: tuple[int, ...], repeats: int = 3) -> dict[str, Any]:
    """The inference service alone, in this process, without browsers or Streamlit: visitors as threads, each asking
    for one cell's answer and Grad-CAM at once, batching on and off; the median over `repeats` of each figure. What the
    server's model work costs, apart from pages and browsers."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.core.config import EMBEDDED_SAMPLE, RELEASE_DIR
    from pipeline.data.decode import read_image
    from pipeline.data.layouts import scan_dataset
    from pipeline.explain.pictures import explainer_of
    from pipeline.inference.predict import Predictor
    from pipeline.inference.service import InferenceService

    predictor = Predictor.from_run(RELEASE_DIR)
    explainer = explainer_of(predictor)
    cells = [read_image(record.path) for record in scan_dataset(EMBEDDED_SAMPLE).labelled[::7]]
    figures: dict[str, Any] = {}
    for batching in (True, False):
        service = InferenceService(predictor, explainer, batching=batching)
        service.answer_many(cells[: max(loads)], explain=True)  # warm: every batch size's first call
        rows: dict[str, Any] = {}
        for visitors in (1, *loads):
            runs = []
            for repeat in range(repeats):
                asked = cells[repeat : repeat + visitors]

                def ask(image: Any, service: Any = service) -> float:
                    start = time.perf_counter()
                    service.answer(image)
                    return time.perf_counter() - start

                start = time.perf_counter()
                with ThreadPoolExecutor(visitors) as pool:
                    waits = list(pool.map(ask, asked))
                runs.append((float(np.percentile(waits, 95)), visitors / (time.perf_counter() - start)))
            rows[str(visitors)] = {
                "p95_s": round(float(np.median([run[0] for run in runs])), 3),
                "cells_per_s": round(float(np.median([run[1] for run in runs])), 2),
            }
        figures["batched" if batching else "unbatched"] = rows
    figures["cells_per_s_batched_over_unbatched"] = {
        visitors: ratio(row["cells_per_s"], figures["unbatched"][visitors]["cells_per_s"])
        for visitors, row in figures["batched"].items()
    }
    return figures


def service_lines(service: dict[str, Any]) -> list[str]:
    """Report lines of `service_level`'s figures."""
    lines = ["  the inference service alone (threads in one process, no browsers; one answer and its Grad-CAM each):"]
    for name in ("batched", "unbatched"):
        lines.append(
            f"    {name}: "
            + ", ".join(
                f"{visitors} at once p95 {row['p95_s']} s, {row['cells_per_s']} cells/s"
                for visitors, row in service[name].items()
            )
        )
    lines.append(
        "    cells per second, batched over unbatched: "
        + ", ".join(f"{k} at once {v}x" for k, v in service["cells_per_s_batched_over_unbatched"].items())
    )
    return lines
