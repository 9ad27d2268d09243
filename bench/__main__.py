"""`python -m bench`: how fast (`--quick` for a short check), on real cells (`--real`), on a GPU (`--gpu`), under
load in a browser (`--load`)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _settings(pairs: list[str]) -> dict[str, object]:
    """`field=value` pairs, each value read as JSON where it parses (numbers, true/false), else as text."""
    settings: dict[str, object] = {}
    for pair in pairs:
        field, _, value = pair.partition("=")
        try:
            settings[field.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[field.strip()] = value
    return settings


def _bursts(text: str) -> tuple[int, ...]:
    """`--visitors`' comma-separated burst sizes, each a positive whole number."""
    try:
        bursts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        bursts = ()
    if not bursts or min(bursts) < 1:
        raise SystemExit(f"--visitors: give burst sizes as positive whole numbers, comma-separated (not {text!r})")
    return bursts


def _parser() -> argparse.ArgumentParser:
    """The benchmark's modes and their options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="EfficientNet-B0 at 96 px, small synthetic set")
    mode.add_argument("--real", action="store_true", help="a recipe on real C-NMC fold 1, judged on unseen patients")
    mode.add_argument("--gpu", action="store_true", help="EfficientNet-B3 at 224 px on a GPU (under 5 minutes)")
    mode.add_argument(
        "--cold", action="store_true", help="a hosted demo's cold start with the release, against training at start-up"
    )
    mode.add_argument(
        "--load",
        action="store_true",
        help="visitors at once on the hosted demo in Chromium (the release), batching on and off: waits, "
        "throughput and memory against one visitor alone",
    )
    parser.add_argument(
        "--visitors",
        default="10,30",
        help="--load: the bursts of visitors at once, comma-separated (default 10,30); --cold: the first of them "
        "visit at once after the first answer",
    )
    parser.add_argument("--data", type=Path, default=None, help="--real: the data (default ../shared/cnmc-fold1)")
    parser.add_argument("--recipe", default="lite", help="--real: the recipe (lite, scratch, paper)")
    parser.add_argument("--crossval", type=int, default=0, help="--real: also a K-fold patient cross-validation")
    parser.add_argument("--repeats", type=int, default=1, help="--real: repeat the cross-validation over seeds")
    parser.add_argument(
        "--levers",
        action="store_true",
        help="--real: the recipe's steps one after another, each a repeated cross-validation",
    )
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="--real: the paper's image split beside a patient split, as the paper reports",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="--real: override a setting of the recipe (repeatable), e.g. --set head_l2=0.1",
    )
    parser.add_argument("--epochs", type=int, default=None, help="--real: override the recipe's epochs")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    return parser


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Run the chosen mode: (its figures, its report's lines)."""
    if args.real:
        from bench import real

        runs_dir = Path(tempfile.mkdtemp(prefix="bench-real-"))
        overrides = {"epochs": args.epochs} if args.epochs else {}
        overrides.update(_settings(args.set))
        if args.protocol:
            results = real.protocol_comparison(args.data or real.DEFAULT_DATA, runs_dir, args.recipe, **overrides)
        else:
            results = real.run(
                args.data or real.DEFAULT_DATA,
                runs_dir,
                args.recipe,
                args.crossval,
                args.repeats,
                args.levers,
                **overrides,
            )
        lines = real.report(results)
    elif args.cold:
        from bench import cold

        results = cold.run(_bursts(args.visitors)[0])
        lines = cold.report(results)
    elif args.load:
        from bench import load

        results = load.run(_bursts(args.visitors))
        lines = load.report(results)
    elif args.gpu:
        from bench import gpu

        results = gpu.run()
        lines = gpu.report(results)
    else:
        from bench import speed

        results = speed.run(args.quick)
        lines = speed.report(results)
    return results, lines


def main() -> None:
    """Parse the benchmark's mode, run it, print its report and write the JSON when asked."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the figures
    args = _parser().parse_args()
    results, lines = _run(args)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
