"""Training-speed benchmark: our cached tf.data pipeline and fast mode against a naive Keras pipeline.

Everything is measured in one run, on the same synthetic data, model and batch size, and printed with its
ratio to the baseline. `--quick` uses EfficientNet-B0 at 96 px on fewer images (under five minutes on
2 CPU cores); without it, EfficientNet-B3 at 224 px.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(function, repeats: int = 1) -> float:
    """Median wall time of `function()` over `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _baseline_dataset(class_root: Path, image_size: int, batch_size: int):
    """The naive pipeline: decode from disk every step, CLAHE in a `py_function` every step."""
    import keras
    import tensorflow as tf

    from pipeline.config import ClaheSettings
    from pipeline.preprocess import apply_clahe

    clahe = ClaheSettings()
    dataset = keras.utils.image_dataset_from_directory(
        class_root, labels="inferred", label_mode="int", class_names=["hem", "all"], image_size=(image_size,) * 2,
        batch_size=batch_size, shuffle=True, seed=0, verbose=False)

    def enhance(images):
        return np.stack([apply_clahe(image.astype(np.uint8), clahe) for image in images.numpy()]).astype(np.float32)

    def step(images, labels):
        enhanced = tf.py_function(enhance, [images], tf.float32)
        enhanced.set_shape(images.shape)
        return enhanced, labels

    return dataset.map(step)


def run(quick: bool) -> dict[str, float | str]:
    import keras

    from pipeline.cache import preprocess_many
    from pipeline.config import ClaheSettings, TrainConfig
    from pipeline.data import scan_dataset
    from pipeline.datasets import feature_dataset, make_dataset
    from pipeline.explain import Explainer
    from pipeline.fit import optimizer as _optimizer
    from pipeline.model import build_model, compiled_forward, feature_extractor, head_model
    from pipeline.synthetic import generate

    backbone, image_size, per_class = ("efficientnet_b0", 96, 48) if quick else ("efficientnet_b3", 224, 96)
    batch_size = 16
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    root = generate(workdir / "data", per_class=per_class, patients=4, seed=0, prelim_per_class=0)
    records = [r for r in scan_dataset(root).records if r.subset == "fold_0"]
    # All training folds in one class-folder tree for image_dataset_from_directory.
    class_root = workdir / "classes"
    for record in scan_dataset(root).records:
        target = class_root / record.label.lower() / Path(record.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(record.path)
    paths = [str(p) for p in sorted(class_root.rglob("*.bmp"))]
    labels = np.array([int(Path(p).parent.name == "all") for p in paths], np.int32)
    del records
    results: dict[str, float | str] = {"backbone": backbone, "image_size": image_size, "images": len(paths),
                                       "batch_size": batch_size}

    seconds = _timed(lambda: preprocess_many(paths, image_size, ClaheSettings()), repeats=3)
    results["preprocess_images_per_s"] = len(paths) / seconds
    images, _ = preprocess_many(paths, image_size, ClaheSettings())

    ours = make_dataset(images, labels, batch_size, shuffle=True, seed=0)
    for _ in ours:  # warm the pipeline once
        pass
    seconds = _timed(lambda: [None for _ in ours], repeats=3)
    results["input_pipeline_images_per_s"] = len(paths) / seconds

    config = TrainConfig(data_dir=str(root), backbone=backbone, image_size=image_size, weights="none")

    def fit_throughput(dataset) -> float:
        keras.utils.set_random_seed(0)
        model, _ = build_model(backbone, image_size, "none")
        model.compile(optimizer=_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(dataset, epochs=1, shuffle=False, verbose=0)  # tracing and warm-up
        return len(paths) / _timed(lambda: model.fit(dataset, epochs=1, shuffle=False, verbose=0))

    results["train_images_per_s_ours"] = fit_throughput(ours)
    results["train_images_per_s_baseline"] = fit_throughput(_baseline_dataset(class_root, image_size, batch_size))
    results["full_epoch_s"] = len(paths) / results["train_images_per_s_ours"]

    model, _ = build_model(backbone, image_size, "none", freeze_backbone=True)
    extractor = feature_extractor(model)
    start = time.perf_counter()
    features = np.asarray(extractor.predict(images.astype(np.float32), batch_size=32, verbose=0))
    results["feature_pass_s"] = time.perf_counter() - start
    head = head_model(model)
    head.compile(optimizer=_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    feature_batches = feature_dataset(features, labels, batch_size, seed=0)
    head.fit(feature_batches, epochs=1, shuffle=False, verbose=0)
    epochs = 20  # fast mode trains all its epochs in one fit, as a run does
    results["fast_mode_epoch_s"] = _timed(lambda: head.fit(feature_batches, epochs=epochs, shuffle=False,
                                                           verbose=0)) / epochs

    from pipeline.preprocess import preprocess, read_image

    raw = read_image(paths[0])
    forward = compiled_forward(model)
    forward(np.zeros((1, image_size, image_size, 3), np.float32))
    results["predict_latency_s"] = _timed(
        lambda: forward(preprocess(raw, image_size)[None].astype(np.float32)), repeats=5)
    explainer = Explainer(model)
    model_input = preprocess(raw, image_size)
    explainer.heatmap(model_input)
    results["gradcam_latency_s"] = _timed(lambda: explainer.heatmap(model_input), repeats=5)
    return results


def report(results: dict[str, float | str]) -> list[str]:
    baseline = results["train_images_per_s_baseline"]
    ours = results["train_images_per_s_ours"]
    lines = [f"model {results['backbone']} at {results['image_size']} px, {results['images']} images, "
             f"batch {results['batch_size']} (synthetic data; random weights)"]
    ratios = {
        "preprocess_images_per_s": (results["preprocess_images_per_s"] / baseline, "x baseline training throughput"),
        "input_pipeline_images_per_s": (results["input_pipeline_images_per_s"] / ours, "x our training throughput"),
        "train_images_per_s_ours": (ours / baseline, "x baseline"),
        "train_images_per_s_baseline": (1.0, "x baseline"),
        "full_epoch_s": (1.0, "x full epoch"),
        "fast_mode_epoch_s": (results["full_epoch_s"] / results["fast_mode_epoch_s"], "x faster than a full epoch"),
    }
    for key, value in results.items():
        if isinstance(value, float):
            ratio = ratios.get(key)
            suffix = f"   ({ratio[0]:.1f}{ratio[1]})" if ratio else ""
            lines.append(f"{key:32s} {value:12.3f}{suffix}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="B0 at 96 px, fewer images (under five minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    results = run(args.quick)
    if args.quick:
        print("quick mode: EfficientNet-B0 at 96 px on a small synthetic set; run without --quick for B3 at 224")
    print("\n".join(report(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
