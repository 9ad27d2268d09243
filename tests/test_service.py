"""The inference service: requests of many threads answered in batches, each answer the same as the image predicted
alone, a full queue refused at once and retried, a failure handed to every request it touched."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.decode import read_image
from pipeline.data.layouts import scan_dataset
from pipeline.explain.pictures import explainer_of
from pipeline.inference import batches
from pipeline.inference.predict import Predictor
from pipeline.inference.service import Busy, Closed, InferenceService

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(finished_run: Path, tiny_data: Path) -> tuple[Predictor, object, list[np.ndarray]]:
    predictor = Predictor.from_run(finished_run)
    images = [read_image(record.path) for record in scan_dataset(tiny_data).training_records()[:12]]
    return predictor, explainer_of(predictor), images


def test_visitors_at_once_share_batches_and_each_gets_the_answer_of_its_own_image(served) -> None:
    predictor, explainer, images = served
    service = InferenceService(predictor, explainer, window_s=0.2)
    with ThreadPoolExecutor(len(images)) as pool:  # twelve visitors asking at once
        answers = list(pool.map(service.answer, images))
    assert max(service.batches) > 1, "requests that came together were answered together"
    assert sum(service.batches) == len(images)
    for image, answer in zip(images, answers, strict=True):
        alone = predictor.predict_image(image)
        assert answer.prediction.prob_all == pytest.approx(alone.prob_all, abs=1e-5)
        assert answer.prediction.predicted == alone.predicted
        np.testing.assert_array_equal(answer.prediction.input, alone.input)
        expected = explainer.heatmap(alone.input, "gradcam", class_index=alone.class_index)
        np.testing.assert_allclose(answer.heatmap, expected, atol=1e-3)
    unbatched = InferenceService(predictor, explainer, batching=False)
    again = unbatched.answer_many(images)
    assert set(unbatched.batches) == {1}, "switched off, every request alone"
    assert [a.prediction.prob_all for a in again] == pytest.approx([a.prediction.prob_all for a in answers], abs=1e-5)
    assert all(answer.heatmap is None for answer in again), "a zip's cells are not explained unless asked"


def test_a_full_queue_is_refused_at_once_then_retried_and_answered(served) -> None:
    predictor, explainer, images = served
    service = InferenceService(predictor, explainer, max_queue=1)
    with batches._MODEL_LOCK:  # the model is busy: the worker takes one request and waits on it
        first = service.submit(images[0])
        for _ in range(250):  # until the worker has closed its first batch (then it waits on the model)
            if service.batches:
                break
            threading.Event().wait(0.02)
        assert service.batches == [1], "the worker took the first request alone and waits on the model"
        second = service.submit(images[1])  # fills the queue
        with pytest.raises(Busy, match="retrying"):
            service.submit(images[2])
        told: list[int] = []
        retried = threading.Thread(target=lambda: told.append(service.answer(images[2], on_busy=told.append)))
        retried.start()
        threading.Event().wait(0.6)
        assert told and told[0] == 1, "the visitor is told the server is busy while it retries"
    retried.join(timeout=120)
    assert first.result(timeout=120).prediction and second.result(timeout=120).prediction
    assert told[-1].prediction.prob_all == pytest.approx(predictor.predict_image(images[2]).prob_all, abs=1e-5)


def test_a_failure_reaches_every_request_of_its_batch_and_the_service_goes_on(served, monkeypatch) -> None:
    predictor, explainer, images = served
    service = InferenceService(predictor, explainer, window_s=0.3)
    original = predictor.predict_prepared
    monkeypatch.setattr(predictor, "predict_prepared", lambda *args: (_ for _ in ()).throw(RuntimeError("boom")))
    futures = [service.submit(image) for image in images[:3]]
    for future in futures:
        with pytest.raises(RuntimeError, match="boom"):
            future.result(timeout=120)
    monkeypatch.setattr(predictor, "predict_prepared", original)
    assert service.answer(images[0]).prediction.prob_all == pytest.approx(
        predictor.predict_image(images[0]).prob_all, abs=1e-5
    )


def test_a_closed_service_answers_what_it_holds_refuses_more_and_its_worker_ends(served) -> None:
    predictor, explainer, images = served
    service = InferenceService(predictor, explainer)
    with batches._MODEL_LOCK:  # requests wait in the queue while the service is closed
        queued = [service.submit(image, explain=False) for image in images[:3]]
        service.close()
        with pytest.raises(Closed, match="ask again"):
            service.submit(images[3])
    assert all(future.result(timeout=120).prediction for future in queued), "what was queued is answered"
    service._worker.join(timeout=30)
    assert not service.running, "the worker ends, letting the model go"


def test_a_service_the_servers_cache_lets_go_is_closed_and_the_next_request_starts_another(
    served, finished_run: Path
) -> None:
    from pages.common import loaders

    predictor, _, images = served
    mtime = (finished_run / "model.keras").stat().st_mtime
    first = loaders.service_of(str(finished_run), mtime)
    assert loaders.service_of(str(finished_run), mtime) is first, "one service per model"
    loaders.service_of.clear()  # what eviction does: the cache lets the service go
    first._worker.join(timeout=30)
    assert not first.running
    answer = loaders.cached_answer(str(finished_run), mtime, "a-cell", images[0])
    assert answer.prediction.prob_all == pytest.approx(predictor.predict_image(images[0]).prob_all, abs=1e-5)
    assert loaders.service_of(str(finished_run), mtime) is not first
    loaders.service_of.clear()


def test_after_its_first_answer_the_release_service_is_traced_for_any_batch_before_a_class_arrives() -> None:
    from pipeline.core.config import EMBEDDED_SAMPLE, RELEASE_DIR
    from pipeline.explain.cams import DEFAULT_LAYER

    predictor = Predictor.from_run(RELEASE_DIR)
    explainer = explainer_of(predictor)
    images = [read_image(record.path) for record in scan_dataset(EMBEDDED_SAMPLE).labelled[::50][:9]]
    service = InferenceService(predictor, explainer)
    alone = service.answer(images[0])
    assert service.warmed.wait(180), "the worker warms itself up once nobody waits"
    networks = [predictor.model._pipeline_features, *(model for model, _ in predictor.other_members)]
    functions = [network._pipeline_forward for network in networks] + [explainer._gradients[DEFAULT_LAYER]]
    traced = [function.experimental_get_tracing_count() for function in functions]
    assert all(count == 1 for count in traced), "each network and Grad-CAM traced once, by the warm-up"
    together = service.answer_many(images[1:6], explain=True) + service.answer_many(images[6:9], explain=True)
    assert [function.experimental_get_tracing_count() for function in functions] == traced, "no trace per batch"
    assert together[0].heatmap is not None and alone.prediction.prob_all == pytest.approx(
        predictor.predict_image(images[0]).prob_all, abs=1e-5
    )
