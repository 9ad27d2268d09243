"""The device plan: on a CPU float32 and no XLA (measured 2x and 11x slower otherwise), on GPUs what helps."""

import numpy as np
import pytest

from pipeline.core.device import plan_for


def test_a_cpu_trains_in_float32_without_xla() -> None:
    assert plan_for(0) == ("float32", False)


@pytest.mark.parametrize(
    ("gpus", "capability", "expected"),
    [(1, (9, 0), ("mixed_float16", True)), (1, (6, 1), ("float32", True)), (4, (8, 0), ("mixed_float16", False))],
)
def test_gpus_get_mixed_precision_on_tensor_cores_and_xla_on_one_device(gpus, capability, expected) -> None:
    assert plan_for(gpus, capability) == expected


@pytest.mark.slow
def test_this_machine_configures_what_it_trains_with(tmp_path) -> None:
    import keras
    import tensorflow as tf

    from pipeline.core.device import configure_device

    plan = configure_device()
    gpus = len(tf.config.list_physical_devices("GPU"))
    assert plan.gpus == gpus and keras.mixed_precision.global_policy().name == plan.precision
    if not gpus:
        assert plan.precision == "float32" and plan.jit_compile is False


def test_the_global_batch_stays_the_protocols_and_small_replica_shares_synchronise_batchnorm() -> None:
    from pipeline.core.device import replica_batches

    assert replica_batches(16, 1) == {
        "replicas": 1,
        "global_batch": 16,
        "per_replica_batch": 16.0,
        "synchronized_batchnorm": False,
    }
    eight = replica_batches(16, 8)
    assert eight["global_batch"] == 16 and eight["per_replica_batch"] == 2.0 and eight["synchronized_batchnorm"]
    assert not replica_batches(64, 2)["synchronized_batchnorm"], "32 images a replica keep their own statistics"


@pytest.mark.slow
def test_every_batchnorm_of_a_model_can_be_synchronised() -> None:
    import keras

    from pipeline.core.device import synchronize_batchnorm

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    inner = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    model = keras.Model(inputs, inner(x))
    assert synchronize_batchnorm(model) == 2
    assert all(
        layer.synchronized for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model(np.ones((2, 8, 8, 3), np.float32)).shape == (2, 4, 4, 4)
