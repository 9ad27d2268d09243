"""The benchmark's measurement: rounds interleaved, warm-up left out, medians with spread, paired ratios."""

import numpy as np
import pytest

from bench.measure import interleaved, paired_ratio, spread


def test_alternatives_are_interleaved_after_one_warm_up_each() -> None:
    calls = []
    samples = interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, repeats=3)
    assert calls == ["a", "b"] * 4, "warm-up round first (not kept), then ABAB"
    assert samples == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_spread_and_paired_ratios() -> None:
    figure = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert figure["median"] == 3.0 and figure["min"] == 1.0 and figure["max"] == 100.0 and figure["n"] == 5
    assert figure["q1"] == 2.0 and figure["q3"] == 4.0
    ratio = paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert ratio["median"] == 2.0 and ratio["max"] == 3.0, "round by round: a slow round slows both"


@pytest.mark.slow
def test_the_gpu_command_runs_every_path_in_a_dry_run_on_a_cpu() -> None:
    from bench import gpu

    results = gpu.run(dry=True, budget_s=120)
    assert results["dry_run"] and results["device"] == "CPU"
    assert results["train_images_per_s"]["float32"]["median"] > 0
    assert results["largest_batch"] >= gpu.DRY["batch"] and results["feature_images_per_s"]["median"] > 0
    assert any("images/s" in line for line in gpu.report(results))


def test_the_load_benchmark_reports_its_figures_against_goals_and_one_visitor_alone() -> None:
    from bench import load

    figures = {
        "alone_s": [0.5, 0.7, 0.6],
        "together_s": [4.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0],
        "together_wall_s": 12.5,
        "server_cpu_s": 20.0,
        "browsers_cpu_s": 9.0,
    }
    results = load.summarize(figures, 10, peak_rss_mb=1200.0)
    assert results["alone_s"] == 0.6 and results["together_s"] == sorted(figures["together_s"])
    assert results["p95_s"] == pytest.approx(np.percentile(figures["together_s"], 95), abs=1e-3)
    assert results["p95_over_alone"] == pytest.approx(results["p95_s"] / 0.6, abs=0.01)
    assert results["within_goals"] == {"alone_s": True, "p95_s": False, "rss_mb": True}
    lines = "\n".join(load.report(results))
    assert f"{results['p95_s']:.2f} s" in lines and f"{results['p95_over_alone']}x one visitor alone" in lines
