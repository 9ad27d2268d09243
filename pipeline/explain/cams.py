"""Explanations: the Grad-CAM family (tf-keras-vis), feature maps, overlays and their ROAD faithfulness.

Every CAM method is called the same way and returns a float32 heatmap in [0, 1] at the input size, upsampled
from the layer's grid with pixel-centre alignment (OpenCV's bilinear resize).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.errors import PipelineError
from ..inference.batches import one_at_a_time, run_batches
from ..models.model import LAST_CONV_LAYER, batch_free_signature, compiled_forward
from .maps import channel_grid, finished
from .road import FRACTIONS, road, road_with_baseline

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")
DEFAULT_LAYER = LAST_CONV_LAYER
SCORECAM_CHANNELS = 16
"""Faster Score-CAM: only the strongest channels are masked in (tf-keras-vis's `max_N`); -1 takes them all
(Score-CAM proper: one forward pass per channel, 1,536 for EfficientNet-B3's last layer)."""
_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "layercam": "LayerCAM"}


def method_label(method: str, channels: int = SCORECAM_CHANNELS, layer_channels: int | None = None) -> str:
    """What a method computes, by name: Score-CAM over some of a layer's channels is Faster Score-CAM."""
    if method == "scorecam" and channels != -1 and (layer_channels is None or channels < layer_channels):
        return f"Faster Score-CAM ({channels} of {layer_channels or '?'} channels)"
    return _NAMES.get(method, method)


def _cam_class(method: str) -> Any:
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam

    classes = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam, "layercam": Layercam}
    if method not in classes:
        raise PipelineError(f"Unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")
    return classes[method]


def logits_model(model: Any) -> Any:
    """`model` with its softmax replaced by the raw class scores, sharing every other layer (no clone)."""
    import keras

    last = model.layers[-1]
    if getattr(last, "activation", None) is not keras.activations.softmax:
        return model
    scores = keras.layers.Dense(last.units, activation=None, name="class_scores")
    outputs = scores(last.input)
    scores.set_weights(last.get_weights())
    return keras.Model(model.input, outputs, name=f"{model.name}_scores")


def stage_layers(model: Any) -> dict[str, str]:
    """The last layer of each EfficientNet stage (block1 ... block7) and the last conv layer, by stage name."""
    stages: dict[str, str] = {}
    for layer in model.layers:
        name = layer.name
        if name.startswith("block") and len(name) > 5 and name[5].isdigit():
            stages[f"block{name[5]}"] = name
    if any(layer.name == DEFAULT_LAYER for layer in model.layers):
        stages["top"] = DEFAULT_LAYER
    return stages


class Explainer:
    """CAMs, feature maps and faithfulness for one model; build it once and reuse it (it caches the CAMs).

    Grad-CAM and LayerCAM use tf-keras-vis's formulas on gradients from a compiled `tf.function` (about 30x
    faster than eager on a CPU; the tests check both give the same maps); Grad-CAM++ and Score-CAM call
    tf-keras-vis directly.
    """

    def __init__(self, model: Any, forward: Any = None, reference: np.ndarray | None = None) -> None:
        self.model = model
        self.reference = reference
        """The mean activation map at `DEFAULT_LAYER` of the cells the model learnt from (a released model's): its
        Grad-CAM there is drawn against that average cell, so the map shows where this cell differs from it in
        the class's favour, and its sum is the class score minus the average cell's (exactly, for a linear head)."""
        self.scores_model = logits_model(model)
        self._cams: dict[str, Any] = {}
        self._gradients: dict[str, Any] = {}
        self._feature_models: dict[tuple[str, ...], Any] = {}
        self._forward = forward or compiled_forward(model)

    def layers(self) -> list[str]:
        """The layers a map can be drawn at, the default (last convolutional stage) first, then the end of each
        EfficientNet stage, deepest first."""
        return list(dict.fromkeys([DEFAULT_LAYER, *reversed(stage_layers(self.model).values())]))

    def stages(self) -> list[str]:
        """The EfficientNet stages whose feature maps can be shown (block1 ... block7, top)."""
        return list(stage_layers(self.model))

    def channels(self, layer: str) -> int:
        """How many channels `layer` has (what Faster Score-CAM chooses among)."""
        return int(self.model.get_layer(layer).output.shape[-1])

    def layer_label(self, layer: str) -> str:
        """A layer's name as the pages show it."""
        return layer_label(layer, self.model)

    @one_at_a_time
    def predict(self, inputs: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Class probabilities, one image at a time by default: it reuses the compiled one-image graph and
        bounds memory (a B3 batch of 12 needs 300 MB more)."""
        return run_batches(self._forward, inputs, batch_size)

    @one_at_a_time
    def heatmap(
        self,
        model_input: np.ndarray,
        method: str = "gradcam",
        layer: str = DEFAULT_LAYER,
        class_index: int | None = None,
        scorecam_channels: int = SCORECAM_CHANNELS,
    ) -> np.ndarray:
        """Heatmap (float32 HxW in [0, 1], input size) for `class_index` (default: the predicted class);
        `scorecam_channels` of the layer's channels are masked in by Score-CAM (-1: all)."""
        if method not in METHODS:
            raise PipelineError(f"Unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")
        batch = np.asarray(model_input, np.float32)[None]
        if class_index is None:
            class_index = int(np.argmax(self.predict(batch)[0]))
        try:
            if method in ("gradcam", "layercam"):
                cam = self.layer_cam(batch, method, layer, class_index)
            else:
                cam = self._library_cam(batch, method, layer, class_index, scorecam_channels)
        except ValueError as error:
            raise PipelineError(f"Cannot compute {method} at layer {layer!r}: {error}") from error
        return finished(cam, batch.shape[1], batch.shape[2])

    @one_at_a_time
    def gradcam_maps(self, inputs: np.ndarray, class_indices: Sequence[int]) -> list[np.ndarray]:
        """Grad-CAM at the last convolutional stage of a batch of model inputs, each for its own class, in one
        gradient pass (the inference service's batches): each map equal to `heatmap(input, "gradcam")`'s."""
        batch = np.asarray(inputs, np.float32)
        maps = np.maximum(self.signed_maps(batch, "gradcam", DEFAULT_LAYER, class_indices), 0)
        return [finished(cam, batch.shape[1], batch.shape[2]) for cam in maps]

    def against_reference(self, method: str, layer: str) -> bool:
        """Whether the map of `method` at `layer` is drawn against the average training cell (Grad-CAM at the
        last convolutional stage of a model that has the reference)."""
        return method == "gradcam" and layer == DEFAULT_LAYER and self.reference is not None

    def label(self, method: str, layer: str, channels: int = SCORECAM_CHANNELS) -> str:
        """What a map is, in words: the method at the layer, and whether it is drawn against the average cell."""
        name = f"{method_label(method, channels, self.channels(layer))} at {self.layer_label(layer)}"
        return f"{name}, drawn against the average training cell" if self.against_reference(method, layer) else name

    def layer_cam(self, batch: np.ndarray, method: str, layer: str, class_index: int) -> np.ndarray:
        """Grad-CAM or LayerCAM at the layer's resolution, before normalisation and upsampling."""
        return np.maximum(self.signed_map(batch, method, layer, class_index), 0)

    def signed_map(self, batch: np.ndarray, method: str, layer: str, class_index: int) -> np.ndarray:
        """Grad-CAM or LayerCAM of the first image at the layer's resolution with its negative part (what argues
        against the class)."""
        return self.signed_maps(batch[:1], method, layer, [class_index])[0]

    def signed_maps(self, batch: np.ndarray, method: str, layer: str, class_indices: Sequence[int]) -> np.ndarray:
        """`signed_map` of every image of a batch, each for its own class, from one gradient pass (an image's
        gradients depend on its own score only: the network runs in inference mode)."""
        if layer not in self._gradients:
            self._gradients[layer] = _compiled_gradients(self.scores_model, layer)
        indices = np.asarray(class_indices, np.int32)
        activations, gradients = (np.asarray(t) for t in self._gradients[layer](batch, indices))
        if self.against_reference(method, layer):
            if self.reference.shape != activations.shape[1:]:
                raise PipelineError(f"The reference map {self.reference.shape} does not fit {activations.shape[1:]}.")
            activations = activations - self.reference
        # Grad-CAM weighs each channel by its mean gradient; LayerCAM weighs each position by its positive gradient.
        weights = gradients.mean(axis=(1, 2), keepdims=True) if method == "gradcam" else np.maximum(gradients, 0)
        return (activations * weights).sum(axis=-1)

    def _library_cam(
        self, batch: np.ndarray, method: str, layer: str, class_index: int, scorecam_channels: int
    ) -> np.ndarray:
        """tf-keras-vis's map at the layer's resolution (`expand_cam=False`): `heatmap` upsamples it."""
        from tf_keras_vis.utils.scores import CategoricalScore

        if method not in self._cams:
            self._cams[method] = _cam_class(method)(self.scores_model, model_modifier=None, clone=False)
        channels = int(self.scores_model.get_layer(layer).output.shape[-1])
        extra = {}
        if method == "scorecam":
            extra["max_N"] = channels if scorecam_channels == -1 else min(scorecam_channels, channels)
        cam = self._cams[method](
            CategoricalScore([class_index]),
            batch,
            penultimate_layer=layer,
            seek_penultimate_conv_layer=False,
            expand_cam=False,
            **extra,
        )
        return np.asarray(cam[0], np.float32)

    @one_at_a_time
    def feature_maps(
        self, model_input: np.ndarray, stages: Sequence[str] | None = None, channels: int = 16
    ) -> dict[str, np.ndarray]:
        """Per stage, a grid image (float32 in [0, 1]) of the `channels` most active feature maps."""
        available = stage_layers(self.model)
        stages = list(stages) if stages else list(available)
        missing = [stage for stage in stages if stage not in available]
        if missing:
            raise PipelineError(f"Unknown stage(s) {', '.join(missing)}; choose from {', '.join(available)}.")
        key = tuple(stages)
        if key not in self._feature_models:
            import keras

            outputs = [self.model.get_layer(available[stage]).output for stage in stages]
            self._feature_models[key] = keras.Model(self.model.input, outputs)
        activations = self._feature_models[key](np.asarray(model_input, np.float32)[None], training=False)
        if len(stages) == 1:
            activations = [activations]
        return {
            stage: channel_grid(np.asarray(act[0]), channels) for stage, act in zip(stages, activations, strict=True)
        }

    @one_at_a_time
    def road(
        self,
        model_input: np.ndarray,
        heatmap: np.ndarray,
        class_index: int | None = None,
        fractions: Sequence[float] = FRACTIONS,
        seed: int = 0,
        baseline: bool = True,
    ) -> dict[str, Any]:
        """ROAD faithfulness of `heatmap` for `class_index` (default: the predicted class), with the random-maps-
        inside-the-cell baseline beside it (see `pipeline.explain.road`)."""
        image = np.asarray(model_input, np.float32)
        if class_index is None:
            class_index = int(np.argmax(self.predict(image[None])[0]))

        def score(images: np.ndarray) -> np.ndarray:
            return self.predict(images, batch_size=8)[:, class_index]

        measure = road_with_baseline if baseline else road
        return {"class_index": class_index, **measure(image, heatmap, score, fractions, seed)}


def _compiled_gradients(scores_model: Any, layer: str) -> Any:
    """A compiled function: (images, one class index per image) -> (activations at `layer`, d score / d activations),
    each image's gradient that of its own class's score."""
    import keras
    import tensorflow as tf

    try:
        target = scores_model.get_layer(layer)
    except ValueError as error:
        raise PipelineError(f"The model has no layer named {layer!r}.") from error
    if len(target.output.shape) != 4:
        raise PipelineError(f"Layer {layer!r} is not convolutional (its output is not a feature map).")
    both = keras.Model(scores_model.input, [target.output, scores_model.output])
    # one trace for any batch size when the input has a fixed shape (the service's batches vary from 1 to 16)
    signature = batch_free_signature(scores_model, tf.TensorSpec((None,), tf.int32))

    @tf.function(input_signature=signature, reduce_retracing=True)
    def gradients(images: Any, class_indices: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            activations, scores = both(images, training=False)
            score = tf.reduce_sum(tf.gather(scores, class_indices[:, None], batch_dims=1))
        return activations, tape.gradient(score, activations)

    return gradients


def layer_label(layer: str, model: Any) -> str:
    """A layer in plain words: "the last convolutional stage", "the end of stage 5 of 7", else its name."""
    if layer == DEFAULT_LAYER:
        return "the last convolutional stage"
    stages = {name: stage for stage, name in stage_layers(model).items()}
    if layer in stages and stages[layer].startswith("block"):
        return f"the end of stage {stages[layer][5:]} of 7 ({layer})"
    return layer
