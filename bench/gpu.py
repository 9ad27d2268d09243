"""`python -m bench --gpu`: EfficientNet-B3 at 224 px on the GPU at hand, in under 5 minutes.

Training throughput in float32, mixed float16, and mixed float16 + XLA (model alone, data already on the
device); whether our input pipeline keeps the GPU busy (pipeline alone against model alone); fast-mode
feature extraction; the largest batch that fits. Anchors: NVIDIA's TF2 EfficientNet reference reaches
3,454 img/s for B0 at 224 px and 470 img/s for B4 at 380 px on one A100 with mixed precision; the paper's Colab
run is about 124 img/s for B3.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.measure import interleaved, paired_ratio, pipeline_rate, spread, steady_training_rate, timed

BACKBONE, IMAGE_SIZE, BATCH = "efficientnet_b3", 224, 64
DRY = {"backbone": "efficientnet_lite0", "image_size": 32, "batch": 8}
"""A dry run checks code paths on a CPU: the backbone that traces fastest (Lite0: ~28 s a training step against ~51 s
for B0 here), and the largest-batch search tries its first batch only."""
"""A tiny stand-in that runs every code path on a CPU (for the tests), measuring nothing of interest."""


def _model(backbone: str, image_size: int, precision: str, jit_compile: bool) -> Any:
    import keras

    from pipeline.core.config import TrainConfig
    from pipeline.models.model import build_model
    from pipeline.training.fit import LOSS, optimizer

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    model, _ = build_model(backbone, image_size, "none")
    config = TrainConfig(data_dir="gpu-bench", backbone=backbone, image_size=image_size, weights="none")
    model.compile(optimizer=optimizer(config, 1000), loss=LOSS, jit_compile=jit_compile)
    return model


def _device_batches(image_size: int, batch: int) -> Any:
    """Random images already on the device: the model alone, no input pipeline."""
    import tensorflow as tf

    images = tf.random.uniform((batch, image_size, image_size, 3), 0, 255)
    labels = tf.random.uniform((batch,), 0, 2, dtype=tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _largest_batch(backbone: str, image_size: int, start: int, limit: int, deadline: float) -> int:
    """The largest power-of-two batch (from `start`) whose training step runs without running out of memory."""
    import tensorflow as tf

    model = _model(
        backbone, image_size, "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32", False
    )
    fits, batch = 0, start
    while batch <= limit and time.monotonic() < deadline:
        try:
            model.fit(_device_batches(image_size, batch), steps_per_epoch=2, epochs=1, verbose=0)
        except (tf.errors.ResourceExhaustedError, tf.errors.InternalError):
            break
        fits, batch = batch, batch * 2
    return fits


def run(dry: bool = False, budget_s: float = 270.0) -> dict[str, Any]:
    """Training, input-pipeline and feature throughput and the largest batch on this machine's device."""
    import tensorflow as tf

    from pipeline.data.datasets import make_dataset
    from pipeline.models.model import build_model

    backbone, image_size, batch = (
        (DRY["backbone"], DRY["image_size"], DRY["batch"]) if dry else (BACKBONE, IMAGE_SIZE, BATCH)
    )
    deadline = time.monotonic() + budget_s
    gpus = tf.config.list_physical_devices("GPU")
    results: dict[str, Any] = {
        "device": tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU",
        "backbone": backbone,
        "image_size": image_size,
        "batch_size": batch,
        "dry_run": dry,
    }
    steps, repeats = (2, 2) if dry else (20, 3)
    variants = {
        "float32": ("float32", False),
        "mixed_float16": ("mixed_float16", False),
        "mixed_float16_xla": ("mixed_float16", True),
    }
    if not gpus:
        variants = {"float32": ("float32", False)}
    rates = {}
    for name, (precision, jit) in variants.items():
        model = _model(backbone, image_size, precision, jit)
        data = _device_batches(image_size, batch)
        rates[name] = interleaved({name: lambda m=model, d=data: steady_training_rate(m, d, steps, batch)}, repeats)[
            name
        ]
    results["train_images_per_s"] = {name: spread(values) for name, values in rates.items()}
    if "mixed_float16" in rates:
        results["mixed_over_float32"] = paired_ratio(rates["mixed_float16"], rates["float32"])
        results["xla_over_mixed"] = paired_ratio(rates["mixed_float16_xla"], rates["mixed_float16"])
    best = max(results["train_images_per_s"].values(), key=lambda figure: figure["median"])["median"]

    images = np.random.default_rng(0).integers(0, 255, (batch * 8, image_size, image_size, 3), dtype=np.uint8)
    labels = np.zeros(len(images), np.int32)
    pipeline = make_dataset(images, labels, batch, True, 0, augment=True, drop_remainder=True).repeat()
    results["input_pipeline_images_per_s"] = spread(
        [pipeline_rate(pipeline, 16 if not dry else 2, batch) for _ in range(repeats)]
    )
    results["pipeline_over_best_training"] = results["input_pipeline_images_per_s"]["median"] / best
    results["input_pipeline_keeps_up"] = results["pipeline_over_best_training"] > 1.0

    frozen, _ = build_model(backbone, image_size, "none", freeze_backbone=True)
    extractor = tf.function(lambda x: frozen(x, training=False))
    feature_batch = tf.constant(images[: batch * 2].astype(np.float32))
    results["feature_images_per_s"] = spread(
        [len(feature_batch) / t for t in timed(lambda: np.asarray(extractor(feature_batch)), repeats=repeats)]
    )
    results["largest_batch"] = _largest_batch(backbone, image_size, batch, batch if dry else 2048, deadline)
    results["anchors"] = {"nvidia_b0_224_a100_mixed": 3454, "nvidia_b4_380_a100_mixed": 470, "paper_colab_b3": 124}
    return results


def report(results: dict[str, Any]) -> list[str]:
    """Lines of the device figures: images per second per precision, ratios and the largest batch."""
    lines = [
        f"{results['backbone']} at {results['image_size']} px, batch {results['batch_size']} on "
        f"{results['device']}" + (" (dry run: code paths only)" if results["dry_run"] else "")
    ]
    for name, figure in results["train_images_per_s"].items():
        lines.append(
            f"training {name:18s} {figure['median']:9.1f} images/s (min-max {figure['min']:.1f}-{figure['max']:.1f})"
        )
    for name in ("mixed_over_float32", "xla_over_mixed"):
        if name in results:
            lines.append(
                f"  {name:24s} {results[name]['median']:.2f}x (min-max {results[name]['min']:.2f}-"
                f"{results[name]['max']:.2f})"
            )
    lines.append(
        f"input pipeline alone        {results['input_pipeline_images_per_s']['median']:9.1f} images/s = "
        f"{results['pipeline_over_best_training']:.1f}x the fastest training "
        f"({'keeps' if results['input_pipeline_keeps_up'] else 'does not keep'} the GPU busy)"
    )
    lines.append(f"feature extraction          {results['feature_images_per_s']['median']:9.1f} images/s")
    lines.append(f"largest batch that fits     {results['largest_batch']}")
    return lines
