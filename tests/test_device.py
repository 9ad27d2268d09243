"""The device plan: on a CPU float32 and no XLA (measured 2x and 11x slower otherwise), on GPUs what helps."""

import pytest

from pipeline.device import plan_for


def test_a_cpu_trains_in_float32_without_xla() -> None:
    assert plan_for(0) == ("float32", False)


@pytest.mark.parametrize(("gpus", "capability", "expected"), [
    (1, (9, 0), ("mixed_float16", True)), (1, (6, 1), ("float32", True)), (4, (8, 0), ("mixed_float16", False))])
def test_gpus_get_mixed_precision_on_tensor_cores_and_xla_on_one_device(gpus, capability, expected) -> None:
    assert plan_for(gpus, capability) == expected


@pytest.mark.slow
def test_this_machine_configures_what_it_trains_with(tmp_path) -> None:
    import keras
    import tensorflow as tf

    from pipeline.device import configure_device

    plan = configure_device()
    gpus = len(tf.config.list_physical_devices("GPU"))
    assert plan.gpus == gpus and keras.mixed_precision.global_policy().name == plan.precision
    if not gpus:
        assert plan.precision == "float32" and plan.jit_compile is False
