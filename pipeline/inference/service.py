"""One inference service per model per server process: the requests of every visitor are gathered for a few
milliseconds and answered as one batch (the cells through each network once, their test-time views, their Grad-CAM
maps in one gradient pass), each answer routed back to the request that asked. The queue is bounded: a request that
finds it full is told `Busy` at once (the page says "busy, retrying" and asks again) instead of waiting to time out.
Visitors share the model and nothing else: a request holds its own image and gets its own answer.

`batching=False` answers one request at a time through the same code (the benchmark's baseline)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import PipelineError
from .answers import Prediction, PreparedImage
from .predict import Predictor

WINDOW_S = 0.02
"""How long the first request of a batch waits for others (a visitor alone pays this once)."""
MAX_BATCH = 16
"""Requests answered together at most (16 cells at 224 px through Lite0-2 and Grad-CAM: about 150 MB)."""
MAX_QUEUE = 64
"""Requests waiting at most; one more is refused with `Busy` (answered at once, not timed out)."""
RETRY_S = 0.25
CLOSED_POLL_S = 0.5
"""How often an idle worker looks whether its service was closed."""


class Busy(PipelineError):
    """The service's queue is full: ask again in a moment."""


class Closed(PipelineError):
    """The service was closed (its model left the server's cache): ask the server's current service again."""


@dataclass(frozen=True)
class Answer:
    """A request's answer: the prediction and, when asked for, Grad-CAM of the class shown at the last convolutional
    stage (float32 in [0, 1], the input's size)."""

    prediction: Prediction
    heatmap: np.ndarray | None


@dataclass(frozen=True)
class _Request:
    prepared: PreparedImage
    patient: str | None
    explain: bool
    future: Future
    keep_inputs: bool = True


def batching_enabled() -> bool:
    """Whether a server batches requests across visitors (`INFERENCE_BATCHING=0` turns it off)."""
    return os.environ.get("INFERENCE_BATCHING", "1").strip().lower() not in ("0", "false", "no", "off")


class InferenceService:
    """Answers requests of many threads (Streamlit's sessions) in batches, on one worker thread."""

    def __init__(
        self,
        predictor: Predictor,
        explainer: Any = None,
        batching: bool = True,
        window_s: float = WINDOW_S,
        max_batch: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.predictor, self.explainer = predictor, explainer
        self.batching = batching
        self.window_s = window_s if batching else 0.0
        self.max_batch = max_batch if batching else 1
        self._queue: queue.Queue[_Request] = queue.Queue(max_queue)
        self.batches: list[int] = []
        """The size of every batch answered (the benchmark and the tests read it)."""
        self._closed, self._entry = threading.Event(), threading.Lock()
        self.warmed = threading.Event()
        """Set once the worker has run a batch of two through every network and Grad-CAM after its first answer."""
        self._worker = threading.Thread(target=self._serve, name="inference-service", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Take no more requests; the worker answers those already queued, then ends and lets the model go (the
        server calls this when its cache lets the service go: another model took its place)."""
        with self._entry:
            self._closed.set()

    @property
    def running(self) -> bool:
        """Whether the worker thread still runs (False some moments after `close`, once the queue is answered)."""
        return self._worker.is_alive()

    def submit(
        self, image_rgb: np.ndarray, patient: str | None = None, explain: bool = True, keep_inputs: bool = True
    ) -> Future:
        """Queue one image (prepared here, in the caller's thread); its future gives an `Answer` (without the model
        inputs unless `keep_inputs`: a zip's hundreds of answers would hold half a megabyte each). `Busy` when the
        queue is full, `Closed` after `close`; a `PipelineError` of the image's own (it cannot be prepared) is raised
        here."""
        request = _Request(self.predictor.prepare_image(image_rgb), patient, explain, Future(), keep_inputs)
        with self._entry:  # a request is queued before `close` or refused after it, never left behind
            if self._closed.is_set():
                raise Closed("This model's inference service was closed (another model took its place); ask again.")
            try:
                self._queue.put_nowait(request)
            except queue.Full as error:
                raise Busy(f"The server is answering {self._queue.maxsize} other cells; retrying.") from error
        return request.future

    def answer(
        self,
        image_rgb: np.ndarray,
        patient: str | None = None,
        explain: bool = True,
        on_busy: Callable[[int], None] | None = None,
    ) -> Answer:
        """One image's answer; while the queue is full, `on_busy(attempt)` is told and the request is made again."""
        return self.answer_many([image_rgb], [patient], explain, on_busy)[0]

    def answer_many(
        self,
        images: Iterable[np.ndarray],
        patients: Sequence[str | None] | None = None,
        explain: bool = False,
        on_busy: Callable[[int], None] | None = None,
        keep_inputs: bool = True,
    ) -> list[Answer]:
        """The answers of many images (a zip's cells, read one by one from `images`), queued as fast as the queue
        takes them, so they share batches with each other and with other visitors' cells; in order."""
        futures: list[Future] = []
        attempt = 0
        for index, image in enumerate(images):
            patient = patients[index] if patients is not None else None
            while True:
                try:
                    futures.append(self.submit(image, patient, explain, keep_inputs))
                    break
                except Busy:
                    attempt += 1
                    if on_busy:
                        on_busy(attempt)
                    time.sleep(RETRY_S)
        return [future.result() for future in futures]

    def _serve(self) -> None:
        """The worker: take the first waiting request, gather others for `window_s` (up to `max_batch`), answer;
        once closed and the queue is empty, end."""
        while True:
            try:
                batch = [self._queue.get(timeout=CLOSED_POLL_S)]
            except queue.Empty:
                if self._closed.is_set() and self._queue.empty():  # closed first: no request can come after it
                    return
                continue
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            self._answer(batch)
            if not self.warmed.is_set() and self._queue.empty():
                self._warm(batch[0])

    def _warm(self, request: _Request) -> None:
        """After the first answer, while nobody waits: a batch of two copies of its image through the networks and
        Grad-CAM, so the compiled functions are traced now (seconds on a small server) and not when a class's
        visitors arrive together. Best effort: a failure here is a request's own to report, later."""
        try:
            predictions = self.predictor.predict_prepared([request.prepared] * 2, [None, None])
            if self.explainer is not None:
                inputs = np.stack([prediction.input for prediction in predictions])
                self.explainer.gradcam_maps(inputs, [prediction.class_index for prediction in predictions])
        except Exception:  # noqa: BLE001, S110 - the next real request meets the same error and reports it
            pass
        finally:
            self.warmed.set()

    def _answer(self, batch: list[_Request]) -> None:
        """Predict the batch in one call per network, Grad-CAM of those that asked in one gradient pass; every
        request gets its own answer, or the error (a failure is every request's of the batch, never a hang)."""
        self.batches.append(len(batch))
        try:
            predictions = self.predictor.predict_prepared(
                [request.prepared for request in batch], [request.patient for request in batch]
            )
            asked = [index for index, request in enumerate(batch) if request.explain and self.explainer is not None]
            maps: dict[int, np.ndarray] = {}
            if asked:
                inputs = np.stack([predictions[index].input for index in asked])
                found = self.explainer.gradcam_maps(inputs, [predictions[index].class_index for index in asked])
                maps = dict(zip(asked, found, strict=True))
        except Exception as error:  # noqa: BLE001 - handed to each waiting request, raised in its own thread
            for request in batch:
                request.future.set_exception(error)
            return
        for index, (request, prediction) in enumerate(zip(batch, predictions, strict=True)):
            kept = prediction if request.keep_inputs else prediction.without_inputs()
            request.future.set_result(Answer(kept, maps.get(index)))
