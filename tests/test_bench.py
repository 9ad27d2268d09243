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


def test_visitor_bursts_are_read_for_load_and_cold_and_bad_ones_are_named() -> None:
    from bench.__main__ import _bursts, _parser

    args = _parser().parse_args(["--cold"])
    assert _bursts(args.visitors) == (10, 30), "the default bursts; --cold takes the first"
    assert _bursts("5, 20,") == (5, 20)
    for bad in ("ten", "0,10", ""):
        with pytest.raises(SystemExit, match="positive whole numbers"):
            _bursts(bad)


@pytest.mark.slow
def test_the_gpu_command_runs_every_path_in_a_dry_run_on_a_cpu() -> None:
    from bench import gpu

    results = gpu.run(dry=True, budget_s=120)
    assert results["dry_run"] and results["device"] == "CPU"
    assert results["train_images_per_s"]["float32"]["median"] > 0
    assert results["largest_batch"] >= gpu.DRY["batch"] and results["feature_images_per_s"]["median"] > 0
    assert any("images/s" in line for line in gpu.report(results))


def test_the_load_benchmark_reports_every_burst_against_one_alone_and_batching_against_none() -> None:
    from bench import load

    def figures(scale: float) -> dict:
        return {
            "alone_s": [0.5, 0.7, 0.6],
            "bursts": {
                "10": {
                    "waits_s": [scale * t for t in range(1, 11)],
                    "errors": [],
                    "wall_s": 10 * scale,
                    "server_cpu_s": 5.0,
                    "browsers_cpu_s": 4.0,
                },
                "30": {
                    "waits_s": [scale * t for t in range(1, 31)],
                    "errors": ["timeout"] * (scale > 1),
                    "wall_s": 30 * scale,
                    "server_cpu_s": 9.0,
                    "browsers_cpu_s": 8.0,
                },
            },
            "zip_s": 100.0 * scale,
        }

    batched = load.summarize(figures(0.4), peak_rss_mb=900.0)
    unbatched = load.summarize(figures(1.6), peak_rss_mb=800.0)
    ten = batched["bursts"]["10"]
    assert batched["alone_s"] == 0.6 and ten["p50_s"] == pytest.approx(np.median([0.4 * t for t in range(1, 11)]))
    assert ten["p95_s"] == pytest.approx(np.percentile([0.4 * t for t in range(1, 11)], 95), abs=1e-3)
    assert ten["p95_over_alone"] == pytest.approx(ten["p95_s"] / 0.6, abs=0.01) and ten["max_s"] == pytest.approx(4.0)
    assert ten["cells_per_s"] == pytest.approx(10 / 4.0) and batched["zip"]["per_cell_s"] == pytest.approx(40 / 500)
    compared = load.compare(batched, unbatched)
    assert compared["ratios"]["30_cells_per_s_batched_over_unbatched"] == pytest.approx(4.0, abs=0.01)
    assert compared["ratios"]["10_p95_unbatched_over_batched"] == pytest.approx(4.0, abs=0.01)
    assert compared["within_goals"] == {
        "ten_p95_s": True,
        "ten_over_alone": True,
        "most_without_error": True,
        "throughput_ratio": True,
        "rss_mb": True,
    }
    assert not load.compare(unbatched, batched)["within_goals"]["most_without_error"]
    lines = "\n".join(load.report({"model": "x", "batched": batched, "unbatched": unbatched, **compared}))
    assert f"p95 {ten['p95_s']} s" in lines and "a zip of 500 cells" in lines and "throughput_ratio met" in lines


@pytest.mark.slow
def test_the_service_part_of_the_load_benchmark_measures_the_release_batched_and_not_and_is_reported() -> None:
    from bench.service import service_level, service_lines

    service = service_level((3,), repeats=1)
    for name in ("batched", "unbatched"):
        assert set(service[name]) == {"1", "3"}
        assert all(row["p95_s"] > 0 and row["cells_per_s"] > 0 for row in service[name].values())
    ratio = service["cells_per_s_batched_over_unbatched"]["3"]
    assert ratio == pytest.approx(
        service["batched"]["3"]["cells_per_s"] / service["unbatched"]["3"]["cells_per_s"], abs=0.01
    )
    lines = "\n".join(service_lines(service))
    assert f"3 at once p95 {service['batched']['3']['p95_s']} s" in lines and f"3 at once {ratio}x" in lines
