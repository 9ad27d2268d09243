"""`python -m bench --load`: visitors at once on the hosted demo (demo mode, 127.0.0.1 only) serving what the demo
serves, the released model, each uploading a cell and waiting for its class and Grad-CAM: one visitor alone (the
baseline, three times), ten at once and thirty at once, then one visitor's zip of 500 cells; all of it twice in one
run, on a server that batches requests across visitors (the inference service) and on one that answers them one at a
time (`INFERENCE_BATCHING=0`), so every figure stands beside its baseline of the same run. The browsers run at the
lowest CPU priority (nice 19): on a small machine they take what the server leaves; their CPU time and the server's
are reported beside the waits.

Goals (warm, 2 cores, batching on): ten at once within 5 s at the 95th percentile and within 10x one alone, thirty at
once without an error, cells per second under load at least 3x the unbatched server's, the server's resident memory
under 1.5 GB throughout. Figures go to the JSON the README quotes; nothing here passes or fails a test.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import PeakMemory, cpu_seconds, ratio
from bench.server import CHROMIUM, serve
from bench.service import service_level, service_lines

GOALS = {"ten_p95_s": 5.0, "ten_over_alone": 10.0, "throughput_ratio": 3.0, "rss_mb": 1536}
BROWSER_NICENESS = 19
LOADS = (10, 30)
ZIP_CELLS = 500
ANSWERED = "Grad-CAM at the last convolutional stage"
IDLE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


async def _open(browser: Any, base: str) -> tuple[Any, Any]:
    """A visitor's Predict page, loaded and idle: (its browser context, the page)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    page.set_default_timeout(600_000)
    await page.goto(f"{base}/predict")
    await page.get_by_text("Nothing is predicted until").first.wait_for()
    await page.wait_for_function(IDLE)
    return context, page


async def _ask(page: Any, upload: Path, shown: str = ANSWERED) -> float:
    """Upload `upload` on an open Predict page; the seconds until `shown` is on the page and the page is idle."""
    start = time.perf_counter()
    await page.locator('input[type="file"]').set_input_files(str(upload))
    if upload.suffix != ".zip":
        await page.get_by_text(f"Image: {upload.name}").wait_for()
    await page.get_by_text(shown).first.wait_for()
    await page.wait_for_function(IDLE)
    return time.perf_counter() - start


async def _visit(browser: Any, base: str, image: Path) -> float:
    """Open Predict, upload `image`, return the seconds until its class and Grad-CAM are shown."""
    context, page = await _open(browser, base)
    elapsed = await _ask(page, image)
    await context.close()
    return elapsed


async def _burst(browser: Any, base: str, images: list[Path], server_pid: int) -> dict[str, Any]:
    """`len(images)` visitors with their pages open upload at once: each one's wait, the wall time, CPU used."""
    opened = await asyncio.gather(*[_open(browser, base) for _ in images])
    cpu_before = cpu_seconds(server_pid), cpu_seconds("chromium")
    start = time.perf_counter()
    waits = await asyncio.gather(
        *[_ask(page, image) for (_, page), image in zip(opened, images, strict=True)], return_exceptions=True
    )
    wall = time.perf_counter() - start
    cpu = cpu_seconds(server_pid) - cpu_before[0], cpu_seconds("chromium") - cpu_before[1]
    for context, _ in opened:
        await context.close()
    errors = [str(wait) for wait in waits if isinstance(wait, BaseException)]
    return {
        "waits_s": sorted(float(wait) for wait in waits if not isinstance(wait, BaseException)),
        "errors": errors,
        "wall_s": wall,
        "server_cpu_s": cpu[0],
        "browsers_cpu_s": cpu[1],
    }


async def _measure(base: str, images: list[Path], archive: Path, server_pid: int, loads: tuple[int, ...]) -> dict:
    """One server: warm, one visitor alone three times, each burst of `loads`, then the zip."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        await _visit(browser, base, images[0])  # warm: the model loads and its functions compile
        alone = [await _visit(browser, base, image) for image in images[1:4]]
        bursts, used = {}, 4
        for visitors in loads:
            bursts[str(visitors)] = await _burst(browser, base, images[used : used + visitors], server_pid)
            used += visitors
        context, page = await _open(browser, base)
        zipped = await _ask(page, archive, "Together")
        await context.close()
        await browser.close()
    return {"alone_s": alone, "bursts": bursts, "zip_s": zipped}


def summarize(figures: dict[str, Any], peak_rss_mb: float, zip_cells: int = ZIP_CELLS) -> dict[str, Any]:
    """One server's figures: one alone (median of three), each burst's p50, p95, max, cells per second and CPU, the
    zip's time per cell; each against one visitor alone."""
    alone = float(np.median(figures["alone_s"]))
    bursts = {}
    for visitors, burst in figures["bursts"].items():
        waits = burst["waits_s"]
        p95 = float(np.percentile(waits, 95)) if waits else None
        bursts[visitors] = {
            "p50_s": round(float(np.median(waits)), 3) if waits else None,
            "p95_s": round(p95, 3) if p95 is not None else None,
            "max_s": round(max(waits), 3) if waits else None,
            "p95_over_alone": round(p95 / alone, 2) if p95 is not None and alone else None,
            "cells_per_s": round(len(waits) / burst["wall_s"], 3) if burst["wall_s"] else None,
            "errors": burst["errors"],
            "waits_s": [round(wait, 3) for wait in waits],
            "cpu": {
                "wall_s": round(burst["wall_s"], 2),
                "server_s": round(burst["server_cpu_s"], 2),
                "browsers_s": round(burst["browsers_cpu_s"], 2),
            },
        }
    per_cell = figures["zip_s"] / zip_cells
    return {
        "alone_s": round(alone, 3),
        "alone_runs_s": [round(t, 3) for t in figures["alone_s"]],
        "bursts": bursts,
        "zip": {
            "cells": zip_cells,
            "s": round(figures["zip_s"], 2),
            "per_cell_s": round(per_cell, 4),
            "per_cell_over_alone": round(per_cell / alone, 3) if alone else None,
        },
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


def compare(batched: dict[str, Any], unbatched: dict[str, Any]) -> dict[str, Any]:
    """The batched server against the unbatched one of the same run, and the goals."""
    ratios = {
        f"{visitors}_p95_unbatched_over_batched": ratio(unbatched["bursts"][visitors]["p95_s"], burst["p95_s"])
        for visitors, burst in batched["bursts"].items()
    }
    ratios.update(
        {
            f"{visitors}_cells_per_s_batched_over_unbatched": ratio(
                burst["cells_per_s"], unbatched["bursts"][visitors]["cells_per_s"]
            )
            for visitors, burst in batched["bursts"].items()
        }
    )
    ratios["zip_per_cell_unbatched_over_batched"] = ratio(unbatched["zip"]["per_cell_s"], batched["zip"]["per_cell_s"])
    ten, most = batched["bursts"].get("10") or {}, batched["bursts"][max(batched["bursts"], key=int)]
    throughput = ratios.get(f"{max(batched['bursts'], key=int)}_cells_per_s_batched_over_unbatched")
    within = {
        "ten_p95_s": ten.get("p95_s") is not None and ten["p95_s"] <= GOALS["ten_p95_s"],
        "ten_over_alone": ten.get("p95_over_alone") is not None and ten["p95_over_alone"] <= GOALS["ten_over_alone"],
        "most_without_error": not most["errors"],
        "throughput_ratio": throughput is not None and throughput >= GOALS["throughput_ratio"],
        "rss_mb": batched["peak_rss_mb"] <= GOALS["rss_mb"],
    }
    return {"ratios": ratios, "goals": GOALS, "within_goals": within}


def _zip_of(cells: list[Path], path: Path, count: int) -> Path:
    """A zip of `count` cells (the sample's, repeated under new names when it has fewer)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            cell = cells[index % len(cells)]
            archive.write(cell, f"patient/{index:04d}-{cell.name}")
    path.write_bytes(buffer.getvalue())
    return path


def run(loads: tuple[int, ...] = LOADS) -> dict[str, Any]:
    """Serve the demo with the released model, batching on, then off: one visitor alone, each burst, the zip."""
    from pipeline.core.config import EMBEDDED_SAMPLE, RELEASE_DIR
    from pipeline.data.layouts import scan_dataset

    if not Path(CHROMIUM).is_file():
        raise SystemExit("bench --load needs Debian's chromium (apt-get install chromium) and playwright.")
    if not (RELEASE_DIR / "head.npz").is_file():
        raise SystemExit(f"bench --load serves the released model, and {RELEASE_DIR} holds none.")
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        cells = [Path(record.path) for record in scan_dataset(EMBEDDED_SAMPLE).labelled]
        images = []
        for index in range(4 + sum(loads)):  # every visitor its own cell: no answer comes from another's cache
            images.append(work / f"visitor-{index}.png")
            shutil.copy(cells[(index * 7) % len(cells)], images[-1])
        archive = _zip_of(cells, work / "patient.zip", ZIP_CELLS)
        servers = {}
        os.nice(BROWSER_NICENESS)  # this process and the browsers it starts yield the CPU to the server
        for batching in ("1", "0"):
            artifacts = work / f"artifacts-{batching}"
            with serve(EMBEDDED_SAMPLE, artifacts, DEMO_MODE="1", INFERENCE_BATCHING=batching) as (base, process):
                memory = PeakMemory(process.pid)
                memory.start()
                figures = asyncio.run(_measure(base, images, archive, process.pid, loads))
                memory.running = False
                memory.join()
            servers["batched" if batching == "1" else "unbatched"] = summarize(figures, memory.peak)
        return {
            "model": "the released model (demo mode)",
            **servers,
            **compare(servers["batched"], servers["unbatched"]),
            "service": service_level(loads),  # the servers have stopped: the model work alone, on the same cores
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Any]) -> list[str]:
    """Lines of the servers' figures, the ratios and the goals."""
    lines = [f"Hosted demo under load ({results['model']}, 127.0.0.1; browsers at nice {BROWSER_NICENESS})"]
    for name in ("batched", "unbatched"):
        server = results[name]
        lines.append(
            f"  {name}: one visitor alone {server['alone_s']:.2f} s (runs "
            f"{', '.join(f'{t:.2f}' for t in server['alone_runs_s'])}); peak memory {server['peak_rss_mb']:.0f} MB"
        )
        for visitors, burst in server["bursts"].items():
            lines.append(
                f"    {visitors} at once: p50 {burst['p50_s']} s, p95 {burst['p95_s']} s, max {burst['max_s']} s "
                f"({burst['p95_over_alone']}x one alone), {burst['cells_per_s']} cells/s, "
                f"{len(burst['errors'])} errors; CPU server {burst['cpu']['server_s']} s, browsers "
                f"{burst['cpu']['browsers_s']} s over {burst['cpu']['wall_s']} s"
            )
        zipped = server["zip"]
        lines.append(
            f"    a zip of {zipped['cells']} cells: {zipped['s']} s, {zipped['per_cell_s']} s per cell "
            f"({zipped['per_cell_over_alone']}x one visitor alone)"
        )
    lines.append(
        "  batched against unbatched (same run): " + ", ".join(f"{k} {v}" for k, v in results["ratios"].items())
    )
    lines.append(
        "  goals: " + ", ".join(f"{k} {'met' if ok else 'missed'}" for k, ok in results["within_goals"].items())
    )
    if results.get("service"):
        lines += service_lines(results["service"])
    return lines
