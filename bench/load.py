"""`python -m bench --load`: visitors at once on a hosted demo (demo mode, 127.0.0.1 only), each uploading a cell
and waiting for its class and Grad-CAM, with EfficientNet-B3 at 224 px (random weights: the model's size, not its
skill, sets the cost). The baseline, measured in the same run: one visitor alone. The browsers run at the lowest
CPU priority (nice 19), so on a small machine they take what the server leaves instead of competing with it; their
CPU time and the server's are reported beside the waits.

Goals (warm, 2 cores): one visitor alone within 1.5 s, ten at once within 10 s at the 95th percentile, the
server's resident memory under 1.5 GB throughout. Figures go to the JSON the README quotes; nothing here passes
or fails a test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.server import CHROMIUM, serve

GOALS = {"alone_s": 1.5, "p95_s": 10.0, "rss_mb": 1536}
BROWSER_NICENESS = 19


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return 0.0
    return 0.0


class PeakMemory(threading.Thread):
    """Samples a process's resident memory every 0.1 s while running; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        """Sample the server's resident memory every 0.1 s until stopped, keeping the peak."""
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.1)


def cpu_seconds(match: str | int) -> float:
    """CPU time (user + system) of one process (a pid) or of every process whose command line holds `match`."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if isinstance(match, int) and stat.parent.name != str(match):
                continue
            if isinstance(match, str) and match not in (stat.parent / "cmdline").read_bytes().decode(errors="ignore"):
                continue
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


async def _visit(browser: Any, base: str, image: Path) -> float:
    """Open Predict, upload `image`, return the seconds until its class and Grad-CAM are shown."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    page.set_default_timeout(300_000)
    idle = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    await page.goto(f"{base}/predict")
    await page.get_by_text("Nothing is predicted until").first.wait_for()
    await page.wait_for_function(idle)
    start = time.perf_counter()
    await page.locator('input[type="file"]').set_input_files(str(image))
    await page.get_by_text(f"Image: {image.name}").wait_for()
    await page.get_by_text("Grad-CAM at the last convolutional stage").first.wait_for()
    await page.wait_for_function(idle)
    elapsed = time.perf_counter() - start
    await context.close()
    return elapsed


async def _measure(base: str, images: list[Path], server_pid: int, visitors: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        await _visit(browser, base, images[0])  # warm: the model loads and its functions compile
        alone = [await _visit(browser, base, images[1]) for _ in range(3)]
        cpu_before = cpu_seconds(server_pid), cpu_seconds("chromium")
        start = time.perf_counter()
        together = await asyncio.gather(*[_visit(browser, base, image) for image in images[:visitors]])
        wall = time.perf_counter() - start
        cpu = cpu_seconds(server_pid) - cpu_before[0], cpu_seconds("chromium") - cpu_before[1]
        await browser.close()
    return {
        "alone_s": [float(t) for t in alone],
        "together_s": sorted(float(t) for t in together),
        "together_wall_s": wall,
        "server_cpu_s": cpu[0],
        "browsers_cpu_s": cpu[1],
    }


def summarize(figures: dict[str, Any], visitors: int, peak_rss_mb: float) -> dict[str, Any]:
    """The figures against their goals and against the baseline of the same run (one visitor alone)."""
    alone = float(np.median(figures["alone_s"]))
    together = sorted(figures["together_s"])
    p95 = float(np.percentile(together, 95))
    return {
        "visitors": visitors,
        "model": "efficientnet_b3 at 224 px (random weights)",
        "alone_s": round(alone, 3),
        "alone_runs_s": [round(t, 3) for t in figures["alone_s"]],
        "together_s": [round(t, 3) for t in together],
        "p95_s": round(p95, 3),
        "p95_over_alone": round(p95 / alone, 2) if alone else None,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "goals": GOALS,
        "within_goals": {
            "alone_s": alone <= GOALS["alone_s"],
            "p95_s": p95 <= GOALS["p95_s"],
            "rss_mb": peak_rss_mb <= GOALS["rss_mb"],
        },
        "cpu_during_the_ten": {
            "wall_s": round(figures["together_wall_s"], 2),
            "server_s": round(figures["server_cpu_s"], 2),
            "browsers_s": round(figures["browsers_cpu_s"], 2),
            "browsers_niceness": BROWSER_NICENESS,
        },
    }


def _b3_model_folder(root: Path) -> Path:
    """A folder holding only a `model.keras` (EfficientNet-B3 at 224 px, random weights): served as the
    configured model, as a host serves a model trained elsewhere."""
    from pipeline.models.model import build_model

    folder = root / "b3-224"
    folder.mkdir(parents=True)
    model, _ = build_model("efficientnet_b3", 224, "none")
    model.save(folder / "model.keras")
    return folder


def run(visitors: int = 10) -> dict[str, Any]:
    """Serve the demo with a B3 model, then one visitor alone (three times) and `visitors` at once."""
    from pipeline.core.config import EMBEDDED_SAMPLE
    from pipeline.data.layouts import scan_dataset

    if not Path(CHROMIUM).is_file():
        raise SystemExit("bench --load needs Debian's chromium (apt-get install chromium) and playwright.")
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        model = _b3_model_folder(work / "models")
        cells = [Path(record.path) for record in scan_dataset(EMBEDDED_SAMPLE).labelled[::40]]
        images = []
        for index in range(max(visitors, 2)):
            images.append(work / f"visitor-{index}.png")
            shutil.copy(cells[index % len(cells)], images[-1])
        with serve(EMBEDDED_SAMPLE, work / "artifacts", DEMO_MODE="1", MODEL_PATH=str(model)) as (base, process):
            memory = PeakMemory(process.pid)
            memory.start()
            os.nice(BROWSER_NICENESS)  # this process and the browsers it starts yield the CPU to the server
            figures = asyncio.run(_measure(base, images, process.pid, visitors))
            memory.running = False
            memory.join()
        return summarize(figures, visitors, memory.peak)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Any]) -> list[str]:
    """Lines of the visitors' figures against their goals."""
    goals = results["goals"]
    cpu = results["cpu_during_the_ten"]
    return [
        f"Hosted demo under load ({results['model']}, demo mode, 127.0.0.1; browsers at nice "
        f"{cpu['browsers_niceness']})",
        f"  one visitor alone: {results['alone_s']:.2f} s to class and Grad-CAM (goal {goals['alone_s']} s; runs "
        f"{', '.join(f'{t:.2f}' for t in results['alone_runs_s'])})",
        f"  {results['visitors']} at once: 95th percentile {results['p95_s']:.2f} s (goal {goals['p95_s']} s), "
        f"{results['p95_over_alone']}x one visitor alone; each: {', '.join(f'{t:.1f}' for t in results['together_s'])}",
        f"  server peak resident memory {results['peak_rss_mb']:.0f} MB (goal {goals['rss_mb']} MB)",
        f"  CPU while the {results['visitors']} waited ({cpu['wall_s']:.1f} s): server {cpu['server_s']:.1f} s, "
        f"browsers {cpu['browsers_s']:.1f} s",
    ]
