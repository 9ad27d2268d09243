"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `streamlit run`.

Screenshots of every page are kept in `test-output/screenshots/` (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.server import CHROMIUM, serve
from pipeline.core.config import EMBEDDED_SAMPLE
from pipeline.data.decode import read_image
from pipeline.data.layouts import scan_dataset
from pipeline.inference.predict import Predictor
from pipeline.runs import contract as runs
from pipeline.runs.folder import RunFolder
from tests.helpers import TINY_BACKBONE, copy_project

pytestmark = [pytest.mark.browser, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "screenshots"
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).is_file():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    artifacts = tmp_path_factory.mktemp("e2e-artifacts")
    with serve(tiny_data, artifacts) as (url, _):
        yield url, artifacts / "runs"


@pytest.fixture(scope="module")
def page(server) -> Iterator:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.set_default_timeout(120_000)
        yield page
        browser.close()


def _settle(page) -> None:
    """Wait until Streamlit has drawn the page's title and finished running the script: the running indicator
    must stay away for two looks a second apart (on a loaded machine it can appear late)."""
    page.wait_for_selector("h1")
    idle = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    for _ in range(2):
        time.sleep(1.0)
        page.wait_for_function(idle)
    time.sleep(0.5)


def _open(page, base: str, path: str, shot: str) -> None:
    page.goto(f"{base}/{path}")
    _settle(page)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {path or 'home'}"


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    _settle(page)


def test_a_user_browses_trains_studies_and_predicts(server, page, tiny_data: Path, tmp_path: Path) -> None:
    base, runs_dir = server
    _open(page, base, "", "home")
    assert _metric(page, "Images") == str(len(scan_dataset(tiny_data).records)), "the dataset root as scanned"

    _open(page, base, "dataset", "dataset")
    assert _metric(page, "ALL") == "18" and _metric(page, "HEM") == "18"
    page.locator('[data-testid="stImage"]').nth(7).wait_for()  # thumbnails and previews are shown

    _open(page, base, "train", "train")
    assert "lite recipe is suggested" in page.inner_text("body"), "offline with the Lite weights installed"
    page.locator('[data-testid="stRadio"]').get_by_text("scratch", exact=True).click()  # a full fine-tune to watch
    _settle(page)
    _choose(page, "Backbone", TINY_BACKBONE)
    epochs = page.locator('[data-testid="stNumberInput"]').filter(has_text="Epochs").locator("input")
    epochs.fill("3")
    epochs.press("Tab")  # the from-scratch recipe: a full fine-tune, epochs slow enough to watch
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Started 1 run(s)").wait_for()
    run_dir = next(path for path in runs_dir.iterdir() if path.is_dir())
    seen = []
    deadline = time.monotonic() + 600
    while RunFolder(run_dir).status()["state"] in runs.ACTIVE_STATES and time.monotonic() < deadline:
        bars = page.locator('[role="progressbar"]')
        if bars.count():
            seen.append(float(bars.first.get_attribute("aria-valuenow") or 0))
            if len(set(seen)) == 2:
                page.screenshot(path=str(SHOTS / "train-progress.png"), full_page=True)
        time.sleep(1)
    assert RunFolder(run_dir).status()["state"] == "completed"
    assert len(set(seen)) >= 2 and seen == sorted(seen), f"the epoch bar moved forward: {seen}"
    page.get_by_text("No run is training now.").first.wait_for(timeout=60_000)

    _open(page, base, "results", "results")
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    assert _metric(page, "Test accuracy") == f"{metrics['accuracy']:.3f}"
    assert "synthetic demo data" in page.inner_text("body")

    _open(page, base, "predict", "predict")
    image = next((tiny_data / "validation_data").rglob("*.bmp"))
    page.locator('input[type="file"]').set_input_files(str(image))
    page.get_by_text("Grad-CAM at the last convolutional stage").first.wait_for()
    _settle(page)
    page.screenshot(path=str(SHOTS / "predict-upload.png"), full_page=True)
    expected = Predictor.from_run(run_dir).predict_image(read_image(image))  # the run's own call on the file
    assert _metric(page, "Predicted class").startswith(expected.predicted)
    assert _metric(page, "P(ALL)") == f"{expected.prob_all:.3f}"
    assert page.locator('[data-testid="stException"]').count() == 0

    _names_stay_text(page, image, tmp_path)


MARKUP_NAME = (
    "**bold** :red[RED] ![pic](https:x) [ext](https:example.com) <b>tag <img src=x onerror=alert(1)> $x$ =1+2.bmp"
)
"""An upload's name as a mischievous user writes it: Markdown bold, colour, image and link, HTML, maths."""


def _names_stay_text(page, image: Path, tmp_path: Path) -> None:
    """The name of an upload is shown exactly as written, and none of its marks makes an element."""
    upload = tmp_path / MARKUP_NAME
    shutil.copy(image, upload)
    page.locator('input[type="file"]').set_input_files(str(upload))  # beside the first upload: two images
    _settle(page)
    _choose(page, "Explain image", MARKUP_NAME)
    page.get_by_text(f"Image: {MARKUP_NAME}", exact=True).wait_for()
    _settle(page)
    page.screenshot(path=str(SHOTS / "predict-markup-name.png"), full_page=True)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator("strong", has_text="bold").count() == 0, "no bold made of the name"
    assert main.locator("a", has_text="ext").count() == 0, "no link made of the name"
    assert main.locator('img[src="https:x"], img[alt="pic"], img[src="x"]').count() == 0, "no image for the name"
    assert main.locator("b", has_text="tag").count() == 0 and main.locator(".katex").count() == 0
    assert main.locator('[data-testid="stException"]').count() == 0


def _read_only_code_tree(target: Path) -> dict[str, tuple[int, int]]:
    """The project's files (tracked, or new and not ignored) copied to `target` and made read-only, as a host
    checks them out; returns each file's size and mtime to show afterwards that nothing in it was written."""
    copy_project(target)
    subprocess.run(["chmod", "-R", "a-w", str(target)], check=True)
    return _tree(target)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def _memory_mb(pid: int) -> dict[str, float]:
    """Peak resident memory, and the private (anonymous) part now: the rest of the resident memory is
    TensorFlow's shared-library pages, read-only and reclaimable by the kernel."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmHWM", "RssAnon", "RssFile")}


def test_hosted_demo_serves_the_release_at_once_and_says_what_it_does_not_know(
    page, tiny_data: Path, tmp_path: Path
) -> None:
    """A cold start of a hosted demo as a host runs it: a read-only copy of the code (the committed release in it),
    only the documented folders writable (ARTIFACTS_DIR, KERAS_HOME, DEMO_DATA_DIR), demo mode. Nothing trains; a
    visitor's first prediction shows a class, P(ALL), its band and Grad-CAM; a picture of noise is flagged, and a
    zip of cells is summarised. The times are kept in test-output/cold-start.json (`python -m bench --cold` judges
    them); this test only asserts what a visitor sees."""
    import zipfile

    import cv2
    import numpy as np

    code, writable = tmp_path / "app", tmp_path / "writable"
    before = _read_only_code_tree(code)
    release = code / "artifacts" / "release"
    if not (release / runs.HEAD).is_file():
        pytest.skip("no committed release")
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (450, 450, 3), dtype=np.uint8))
    cells = tmp_path / "patient.zip"
    with zipfile.ZipFile(cells, "w") as archive:
        for record in scan_dataset(str(EMBEDDED_SAMPLE)).training_records()[:3]:
            archive.write(record.path, Path(record.path).name)
    started = time.monotonic()
    with serve(
        tiny_data,
        writable,
        code,
        DEMO_MODE="1",
        DEMO_DATA_DIR=str(writable / "synthetic"),
        KERAS_HOME=str(writable / "keras"),
        PYTHONDONTWRITEBYTECODE="1",
        RELEASE_DIR=str(release),
    ) as (base, process):
        _open(page, base, "predict", "demo-predict-first-address")  # a visitor's link, before anyone saw Home
        first_look = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Home" in first_look and "streamlit app" not in first_look.lower(), f"the app's pages: {first_look}"
        assert page.title().startswith("ALL vs HEM"), "the app's page config, not a bare page file"
        _open(page, base, "", "demo-home")
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.locator('[data-testid="stTextInput"]').count() == 0, "no free file-system path"
        page.get_by_text("The release's card").first.wait_for()  # Home shows the release's card
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Predict").click()
        page.get_by_text("Nothing is predicted until").wait_for()  # after the model has loaded
        page.get_by_role("button", name="Predict").first.click()
        page.get_by_text("Grad-CAM at the last convolutional stage").first.wait_for()
        _settle(page)
        first_prediction_s = time.monotonic() - started
        page.screenshot(path=str(SHOTS / "demo-predict-done.png"), full_page=True)
        body = page.inner_text("body")
        assert _metric(page, "Predicted class").split()[0] in ("ALL", "HEM", "not")
        assert "Answered by the fold-" in body, "an embedded cell is scored by the head that never saw its patient"
        assert "not a diagnosis" in body and "Map on the cell" in body and str(tmp_path) not in body
        assert not (writable / "runs").exists(), "nothing trained"
        navigation = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Predict" in navigation and "Train" not in navigation, "no Train page in a hosted demo"
        page.locator('input[type="file"]').set_input_files([str(noise), str(cells)])
        page.get_by_text("Together").first.wait_for()
        _settle(page)
        page.screenshot(path=str(SHOTS / "demo-predict-uploads.png"), full_page=True)
        _choose(page, "Explain image", "noise.png")
        page.screenshot(path=str(SHOTS / "demo-predict-noise.png"), full_page=True)
        body = page.inner_text("body")
        assert _metric(page, "Predicted class") == "not reliable" and "The answer is not reliable" in body
        assert _metric(page, "Probability") == _metric(page, "P(ALL)") == "—", "no probability of any kind"
        assert "Together" in body and "Summary per group (CSV)" in body
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Explain image").first.click()
        options = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        assert len(options) == 4 and sum(option.startswith("patient.zip/") for option in options) == 3, options
        memory = _memory_mb(process.pid)
        (SHOTS.parent / "demo-memory.json").write_text(json.dumps(memory, indent=2))
        assert memory["RssAnon"] < 1024, f"the app's private memory with the release and Grad-CAM: {memory}"
        (SHOTS.parent / "cold-start.json").write_text(
            json.dumps(
                {"server_start_to_first_prediction_s": round(first_prediction_s, 1), "model": "release"}, indent=2
            )
        )
        _open(page, base, "results", "demo-results-release")
        assert "patient bootstrap over 14 patients" in page.inner_text("body"), "the release's out-of-fold intervals"
    after = _tree(code)
    subprocess.run(["chmod", "-R", "u+w", str(code)], check=True)  # so that pytest can clean up
    assert after == before, "a host's code tree stays untouched: only the documented folders are written"
