"""Where training runs: mixed precision and several GPUs where they help, plain float32 on a CPU."""

from __future__ import annotations

from typing import Any


def configure_device() -> Any:
    """Mixed precision on a GPU that has tensor cores, all GPUs through MirroredStrategy; nothing on a CPU.
    (Keras compiles with XLA on GPUs by itself: `jit_compile="auto"`.)"""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return tf.distribute.get_strategy()
    details = tf.config.experimental.get_device_details(gpus[0])
    if details.get("compute_capability", (0, 0)) >= (7, 0):
        keras.mixed_precision.set_global_policy("mixed_float16")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
