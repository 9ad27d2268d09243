"""Where training runs and how: float32 without XLA on a CPU, mixed precision and XLA on a GPU with tensor cores,
MirroredStrategy over several GPUs.

Measured on this project's 2-core CPU (TensorFlow 2.21): Keras' mixed_bfloat16 policy trained EfficientNet-B0 at
224 px 2x slower than float32, and `jit_compile=True` (XLA) 11x slower; so neither is used on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DevicePlan:
    """Where training runs: the distribution strategy, the GPUs, the precision and XLA."""

    strategy: Any
    gpus: int
    precision: str
    jit_compile: bool


def plan_for(gpus: int, compute_capability: tuple[int, int] = (0, 0)) -> tuple[str, bool]:
    """(dtype policy, XLA) for `gpus` GPUs of `compute_capability`: float32 and no XLA on a CPU; mixed float16 on
    tensor cores (7.0 and newer); XLA on one GPU (Keras leaves it off under a distribution strategy)."""
    if not gpus:
        return "float32", False
    precision = "mixed_float16" if compute_capability >= (7, 0) else "float32"
    return precision, gpus == 1


def configure_device() -> DevicePlan:
    """Set the dtype policy for this process and return the strategy, precision and XLA choice to compile with."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capability = (
        tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)) if gpus else (0, 0)
    )
    precision, jit_compile = plan_for(len(gpus), capability)
    keras.mixed_precision.set_global_policy(precision)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return DevicePlan(strategy, len(gpus), precision, jit_compile)


SMALL_REPLICA_BATCH = 16
"""Below this many images per replica, BatchNorm's batch statistics are too noisy per replica: they are computed
over all replicas together (synchronised)."""


def replica_batches(batch_size: int, replicas: int) -> dict[str, Any]:
    """How a run's batch is spread over `replicas`: the global batch stays the one the protocol names (the paper's
    16 images per step, whatever the number of GPUs), each replica takes its share, and BatchNorm is synchronised
    when that share is small."""
    replicas = max(1, int(replicas))
    per_replica = batch_size / replicas
    return {
        "replicas": replicas,
        "global_batch": int(batch_size),
        "per_replica_batch": per_replica,
        "synchronized_batchnorm": replicas > 1 and per_replica < SMALL_REPLICA_BATCH,
    }


def synchronize_batchnorm(model: Any) -> int:
    """Make every BatchNormalization layer of `model` compute its batch statistics over all replicas (Keras'
    `synchronized`, read at call time); returns how many layers."""
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)
