"""`python -m bench --cold`: a hosted demo from a cold start on an empty artifacts folder (fresh Keras cache too),
timed from the server's launch to a first visitor's class and Grad-CAM for an uploaded cell; then ten visitors at
once on the same warm server. Served: the committed release (`artifacts/release`; `RELEASE_DIR=DIR` times another
release the same way). The baseline, measured in the same run: what a demo without a release does at start-up,
train its model (timed to the served fold's end, which a page load would only add to). The browsers run beside the
server at the same priority (`--load` measures visitors with the browsers out of the server's way).

Goals (2 cores): first answer within 15 s of the server starting; ten visitors at once each within 5 s. Figures
go to the JSON the README quotes; nothing here passes or fails a test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import _visit
from bench.server import CHROMIUM, serve

GOALS = {"first_answer_s": 15.0, "ten_at_once_max_s": 5.0}
READY_TIMEOUT_S = 900


async def _first_answer(base: str, image: Path, started: float, visitors: list[Path]) -> dict[str, Any]:
    """Seconds from `started` until Predict answers a first upload (reloading while the model is not ready), then
    the waits of `visitors` at once."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = await browser.new_context(viewport={"width": 1400, "height": 1600})
        page = await context.new_page()
        page.set_default_timeout(READY_TIMEOUT_S * 1000)
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready, waiting = page.get_by_text("Nothing is predicted until"), page.get_by_text("not ready yet")
        while time.monotonic() < deadline:  # one page load waits as long as the model takes to load
            await page.goto(f"{base}/predict")
            while time.monotonic() < deadline and not await ready.count() and not await waiting.count():
                await asyncio.sleep(0.5)
            if await ready.count():
                break
            await asyncio.sleep(10)  # a demo model still training: look again
        await page.locator('input[type="file"]').set_input_files(str(image))
        await page.get_by_text("Grad-CAM at the last convolutional stage").first.wait_for()
        first = time.monotonic() - started
        print(f"... first answer {first:.1f} s after the server started", file=sys.stderr, flush=True)
        await context.close()
        together = await asyncio.gather(*[_visit(browser, base, path) for path in visitors]) if visitors else []
        await browser.close()
    return {"first_answer_s": round(first, 1), "together_s": sorted(round(float(t), 2) for t in together)}


def _cold(work: Path, name: str, images: list[Path], visitors: list[Path], **settings: str) -> dict[str, Any]:
    from pipeline.core.config import EMBEDDED_SAMPLE

    print(f"... cold start: {name}", file=sys.stderr, flush=True)
    artifacts, keras_home = work / name / "artifacts", work / name / "keras"
    started = time.monotonic()
    with serve(EMBEDDED_SAMPLE, artifacts, DEMO_MODE="1", KERAS_HOME=str(keras_home), **settings) as (base, _):
        return asyncio.run(_first_answer(base, images[0], started, visitors))


def _train_at_start(root: Path) -> dict[str, Any]:
    """What a demo without a release does at start-up, timed: `launch_demo_model` on the embedded sample (a fresh
    runs folder and Keras cache) until its served fold has trained; the later folds are then stopped."""
    from pipeline.core.config import EMBEDDED_SAMPLE
    from pipeline.runs.folder import RunFolder
    from pipeline.training.launch import cancel, launch_demo_model

    print("... cold start: the demo model trained at start-up", file=sys.stderr, flush=True)
    os.environ["KERAS_HOME"] = str(root / "keras")  # the bench's own process: its children start cold, with an
    os.environ["ARTIFACTS_DIR"] = str(root / "artifacts")  # empty image and feature cache and Keras cache
    started = time.monotonic()
    served = launch_demo_model(str(EMBEDDED_SAMPLE), root / "artifacts" / "runs")
    state = "not started"
    while served is not None and time.monotonic() - started < READY_TIMEOUT_S:
        state = served.status().get("state")
        if state in ("completed", "failed", "cancelled"):
            break
        time.sleep(1)
    ready = time.monotonic() - started
    for folder in (root / "artifacts" / "runs").iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            cancel(RunFolder(folder).path)
    return {
        "first_answer_s": round(ready, 1),
        "served_fold": state,
        "measured": "launch_demo_model until its served fold completed (no page load counted)",
    }


def run(visitors: int = 10) -> dict[str, Any]:
    """The release's cold start and ten visitors, then the baseline: the cold start that trains a demo model."""
    from pipeline.core.config import EMBEDDED_SAMPLE, release_dir
    from pipeline.data.layouts import scan_dataset

    served = release_dir()  # the committed release, or $RELEASE_DIR's (to time another release the same way)

    if not Path(CHROMIUM).is_file():
        raise SystemExit("bench --cold needs Debian's chromium (apt-get install chromium) and playwright.")
    if served is None or not (served / "head.npz").is_file():
        raise SystemExit("bench --cold needs the committed release (python -m pipeline release --data ...).")
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        cells = [Path(record.path) for record in scan_dataset(EMBEDDED_SAMPLE).labelled[::40]]
        images = []
        for index in range(visitors + 1):
            images.append(work / f"visitor-{index}.png")
            shutil.copy(cells[index % len(cells)], images[-1])
        release = _cold(work, "release", images, images[1:], RELEASE_DIR=str(served))
        trained = _train_at_start(work / "train-at-start")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    together = release["together_s"]
    return {
        "release": release,
        "baseline_train_at_start": trained,
        "goals": GOALS,
        "first_answer_speedup": round(trained["first_answer_s"] / release["first_answer_s"], 1),
        "within_goals": {
            "first_answer_s": release["first_answer_s"] <= GOALS["first_answer_s"],
            "ten_at_once_max_s": bool(together) and max(together) <= GOALS["ten_at_once_max_s"],
        },
        "ten_at_once_p95_s": round(float(np.percentile(together, 95)), 2) if together else None,
    }


def report(results: dict[str, Any]) -> list[str]:
    """Lines of the cold-start figures against the goal and the baseline trained at start-up."""
    release, trained = results["release"], results["baseline_train_at_start"]
    return [
        "Hosted demo from a cold start (empty artifacts and Keras cache, demo mode, 127.0.0.1)",
        f"  released model: first answer {release['first_answer_s']:.1f} s after the server started (goal "
        f"{GOALS['first_answer_s']:.0f} s)",
        f"  baseline, the demo training its model at start-up: {trained['first_answer_s']:.1f} s "
        f"({results['first_answer_speedup']}x slower)",
        f"  {len(release['together_s'])} visitors at once on the release: each within "
        f"{max(release['together_s'] or [0]):.1f} s (goal {GOALS['ten_at_once_max_s']:.0f} s); 95th percentile "
        f"{results['ten_at_once_p95_s']} s; each: {', '.join(f'{t:.1f}' for t in release['together_s'])}",
    ]
