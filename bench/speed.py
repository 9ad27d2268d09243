"""Training speed on the CPU or GPU at hand: our cached tf.data pipeline against a naive Keras pipeline, fast
mode against a full fine-tune, and what users wait for (a finished model of the paper's protocol, a prediction).

Everything is measured in one run on the same synthetic data, model and batch size: steady-state steps only,
alternatives interleaved, each figure the median of several rounds with its spread, ratios taken round by
round. `--quick`: EfficientNet-B0 at 96 px; without it EfficientNet-B3 at 224 px (the paper's network).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import interleaved, paired_ratio, pipeline_rate, spread, steady_training_rate, timed

PAPER_TRAIN_IMAGES = 2257
PAPER_VAL_IMAGES = 564
PAPER_EPOCHS = 50
PAPER_BATCH = 16
FINE_TUNE = {"blocks": 2, "epochs": 5}
PIPELINE_BATCHES = 32
SIZES = {
    True: {"backbone": "efficientnet_b0", "image_size": 96, "per_class": 48, "steps": 6, "repeats": 7},
    False: {"backbone": "efficientnet_b3", "image_size": 224, "per_class": 64, "steps": 4, "repeats": 5},
}


def _baseline_dataset(class_root: Path, image_size: int, batch_size: int) -> Any:
    """The naive pipeline: decode from disk every step, CLAHE in a `py_function` every step."""
    import keras
    import tensorflow as tf

    from pipeline.core.config import ClaheSettings
    from pipeline.data.preprocess import apply_clahe

    clahe = ClaheSettings()
    dataset = keras.utils.image_dataset_from_directory(
        class_root,
        labels="inferred",
        label_mode="int",
        class_names=["hem", "all"],
        image_size=(image_size,) * 2,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        verbose=False,
    )

    def enhance(images: Any) -> np.ndarray:
        return np.stack([apply_clahe(image.astype(np.uint8), clahe) for image in images.numpy()]).astype(np.float32)

    def step(images: Any, labels: Any) -> tuple[Any, Any]:
        enhanced = tf.py_function(enhance, [images], tf.float32)
        enhanced.set_shape(images.shape)
        return enhanced, labels

    return dataset.map(step).repeat()


def _data(workdir: Path, per_class: int) -> tuple[list[str], np.ndarray, Path]:
    from pipeline.data.layouts import scan_dataset
    from pipeline.data.synthetic import generate

    root = generate(workdir / "data", per_class=per_class, patients=4, seed=0, prelim_per_class=0)
    class_root = workdir / "classes"
    for record in scan_dataset(root).records:
        target = class_root / record.label.lower() / Path(record.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(record.path)
    paths = [str(p) for p in sorted(class_root.rglob("*.bmp"))]
    return paths, np.array([int(Path(p).parent.name == "all") for p in paths], np.int32), class_root


def _paper_protocol(results: dict[str, Any], rate: float, backbone: str, image_size: int) -> dict[str, Any]:
    """The paper's protocol (its images, epochs and batch) extrapolated from the measured steady-state rates."""
    full_epoch = PAPER_TRAIN_IMAGES / rate
    feature_pass = (PAPER_TRAIN_IMAGES + PAPER_VAL_IMAGES) / results["feature_images_per_s"]["median"]
    head_time = PAPER_EPOCHS * results["head_epoch_s"]["median"]
    fine_tune = FINE_TUNE["epochs"] * PAPER_TRAIN_IMAGES / results["fine_tune_images_per_s"]["median"]
    return {
        "what": f"{PAPER_TRAIN_IMAGES} training images, {PAPER_EPOCHS} epochs, batch {PAPER_BATCH}, this bench's "
        f"model ({backbone} at {image_size} px); extrapolated from the measured steady-state rates",
        "full_fine_tune_s": PAPER_EPOCHS * full_epoch,
        "full_epoch_s": full_epoch,
        "fast_mode_s": feature_pass + head_time,
        "fast_mode_feature_pass_s": feature_pass,
        "fast_mode_plus_fine_tune_s": feature_pass + head_time + fine_tune,
        "fine_tune": FINE_TUNE,
        "full_over_fast": PAPER_EPOCHS * full_epoch / (feature_pass + head_time),
        "full_epoch_over_head_epoch": full_epoch / results["head_epoch_s"]["median"],
    }


def _latencies(model: Any, path: str, image_size: int) -> dict[str, Any]:
    """One image's prediction and Grad-CAM latency, after warm-up."""
    from pipeline.data.decode import read_image
    from pipeline.data.preprocess import preprocess
    from pipeline.explain.cams import Explainer
    from pipeline.models.model import compiled_forward

    raw = read_image(path)
    forward = compiled_forward(model)
    latencies = {}
    latencies["predict_latency_s"] = spread(
        timed(lambda: np.asarray(forward(preprocess(raw, image_size)[None].astype(np.float32))), repeats=9, warmup=2)
    )
    explainer = Explainer(model, forward=forward)
    model_input = preprocess(raw, image_size)
    latencies["gradcam_latency_s"] = spread(timed(lambda: explainer.heatmap(model_input), repeats=9, warmup=2))
    return latencies


def _fast_mode_rates(
    config: Any,
    backbone: str,
    image_size: int,
    images: np.ndarray,
    labels: np.ndarray,
    ours: Any,
    steps: int,
    repeats: int,
) -> dict[str, Any]:
    """Fast mode's parts: the feature pass, a head epoch on the paper's number of images, fine-tuning's rate."""
    from pipeline.data.datasets import feature_dataset
    from pipeline.inference.batches import run_batches
    from pipeline.models.model import build_model, compiled_forward, feature_extractor, head_model, unfreeze_top_blocks
    from pipeline.training.fit import LOSS, optimizer

    rates: dict[str, Any] = {}
    frozen, _ = build_model(backbone, image_size, "none", freeze_backbone=True)
    extractor = compiled_forward(feature_extractor(frozen))
    feature_times = timed(lambda: run_batches(extractor, images), repeats=repeats)
    rates["feature_images_per_s"] = spread([len(images) / t for t in feature_times])
    features = run_batches(extractor, images)
    paper_features = np.resize(features, (PAPER_TRAIN_IMAGES, features.shape[1]))
    paper_labels = np.resize(labels, PAPER_TRAIN_IMAGES)
    head = head_model(frozen)
    head.compile(optimizer=optimizer(config, 1000), loss=LOSS, metrics=["accuracy"], jit_compile=False)
    head_data = feature_dataset(paper_features, paper_labels, PAPER_BATCH, seed=0)
    rates["head_epoch_s"] = spread(timed(lambda: head.fit(head_data, epochs=1, verbose=0), repeats=repeats))

    unfreeze_top_blocks(frozen, FINE_TUNE["blocks"])
    frozen.compile(optimizer=optimizer(config, 1000), loss=LOSS, metrics=["accuracy"], jit_compile=False)
    rates["fine_tune_images_per_s"] = spread(
        [steady_training_rate(frozen, ours, steps, PAPER_BATCH) for _ in range(max(3, repeats // 2))]
    )

    return rates


def _preprocess_rate(paths: list[str], image_size: int) -> dict[str, float]:
    """Images preprocessed (decoded, resized, CLAHE) per second."""
    from pipeline.core.config import ClaheSettings
    from pipeline.data.cache import preprocess_many

    return spread(
        [
            len(paths) / t
            for t in timed(lambda: preprocess_many(paths, image_size, ClaheSettings()), repeats=3, warmup=0)
        ]
    )


def run(quick: bool) -> dict[str, Any]:
    """Steady-state training and inference rates of the levers, interleaved, on synthetic images."""
    import keras

    from pipeline.core.config import ClaheSettings, TrainConfig
    from pipeline.data.cache import preprocess_many
    from pipeline.data.datasets import make_dataset
    from pipeline.models.model import build_model
    from pipeline.training.fit import LOSS, optimizer

    size = SIZES[quick]
    backbone, image_size, steps, repeats = size["backbone"], size["image_size"], size["steps"], size["repeats"]
    paths, labels, class_root = _data(Path(tempfile.mkdtemp(prefix="bench-")), size["per_class"])
    results: dict[str, Any] = {
        "backbone": backbone,
        "image_size": image_size,
        "images": len(paths),
        "batch_size": PAPER_BATCH,
        "steps_per_sample": steps,
        "repeats": repeats,
        "data": "synthetic",
        "weights": "random",
    }

    results["preprocess_images_per_s"] = _preprocess_rate(paths, image_size)
    images, _ = preprocess_many(paths, image_size, ClaheSettings())
    ours = make_dataset(images, labels, PAPER_BATCH, True, 0, drop_remainder=True).repeat()
    naive = _baseline_dataset(class_root, image_size, PAPER_BATCH)
    pipelines = interleaved(
        {
            "ours": lambda: pipeline_rate(ours, PIPELINE_BATCHES, PAPER_BATCH),
            "naive": lambda: pipeline_rate(naive, PIPELINE_BATCHES, PAPER_BATCH),
        },
        repeats,
    )
    results["input_pipeline_images_per_s"] = {name: spread(values) for name, values in pipelines.items()}
    results["input_pipeline_ratio"] = paired_ratio(pipelines["ours"], pipelines["naive"])

    config = TrainConfig(data_dir="synthetic", backbone=backbone, image_size=image_size, weights="none")
    keras.utils.set_random_seed(0)
    model, _ = build_model(backbone, image_size, "none")
    model.compile(optimizer=optimizer(config, 1000), loss=LOSS, metrics=["accuracy"], jit_compile=False)
    training = interleaved(
        {
            "ours": lambda: steady_training_rate(model, ours, steps, PAPER_BATCH),
            "naive": lambda: steady_training_rate(model, naive, steps, PAPER_BATCH),
        },
        repeats,
    )
    results["train_images_per_s"] = {name: spread(values) for name, values in training.items()}
    results["train_ratio_ours_to_naive"] = paired_ratio(training["ours"], training["naive"])
    rate = results["train_images_per_s"]["ours"]["median"]

    results.update(_fast_mode_rates(config, backbone, image_size, images, labels, ours, steps, repeats))
    results["paper_protocol"] = _paper_protocol(results, rate, backbone, image_size)
    results.update(_latencies(model, paths[0], image_size))
    return results


def _figure(name: str, figure: dict[str, Any], unit: str) -> str:
    return (
        f"{name:34s} {figure['median']:10.3f} {unit:9s} (IQR {figure['q1']:.3f}-{figure['q3']:.3f}, "
        f"min-max {figure['min']:.3f}-{figure['max']:.3f}, n={figure['n']})"
    )


def report(results: dict[str, Any]) -> list[str]:
    """Lines of the speed figures, each as a ratio against its baseline of the same run."""
    lines = [
        f"{results['backbone']} at {results['image_size']} px, {results['images']} synthetic images, batch "
        f"{results['batch_size']}, random weights; {results['repeats']} interleaved rounds of "
        f"{results['steps_per_sample']} steady-state steps",
        "",
    ]
    lines.append(_figure("preprocess (decode+resize+CLAHE)", results["preprocess_images_per_s"], "images/s"))
    for name in ("ours", "naive"):
        lines.append(_figure(f"input pipeline alone, {name}", results["input_pipeline_images_per_s"][name], "images/s"))
    lines.append(_figure("  ratio ours / naive", results["input_pipeline_ratio"], "x"))
    for name in ("ours", "naive"):
        lines.append(_figure(f"training, {name} pipeline", results["train_images_per_s"][name], "images/s"))
    lines.append(_figure("  ratio ours / naive", results["train_ratio_ours_to_naive"], "x"))
    lines.append(_figure("fast mode: feature extraction", results["feature_images_per_s"], "images/s"))
    lines.append(_figure("fast mode: head epoch (2,257 feat.)", results["head_epoch_s"], "s"))
    lines.append(_figure("fine-tune top blocks", results["fine_tune_images_per_s"], "images/s"))
    lines.append(_figure("predict, one image (warm)", results["predict_latency_s"], "s"))
    lines.append(_figure("Grad-CAM, one image (warm)", results["gradcam_latency_s"], "s"))
    paper = results["paper_protocol"]
    lines += [
        "",
        f"time to a finished model of the paper's protocol ({paper['what']}):",
        f"  full fine-tune              {paper['full_fine_tune_s'] / 60:8.1f} min",
        f"  fast mode                   {paper['fast_mode_s'] / 60:8.1f} min "
        f"({paper['full_over_fast']:.0f}x faster; an epoch {paper['full_epoch_over_head_epoch']:.0f}x faster)",
        f"  fast mode + fine-tune ({paper['fine_tune']['blocks']} blocks, {paper['fine_tune']['epochs']} epochs) "
        f"{paper['fast_mode_plus_fine_tune_s'] / 60:6.1f} min",
    ]
    return lines
