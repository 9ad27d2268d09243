"""Cached loaders: the dataset of the sidebar, run tables, models and explainers (built once per file)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pipeline.core.errors import PipelineError
from pipeline.data.decode import decode_image
from pipeline.data.layouts import Dataset, scan_dataset
from pipeline.data.preprocess import thumbnail
from pipeline.explain.cams import DEFAULT_LAYER
from pipeline.explain.pictures import averaged_gradcam, explain_prediction, explainer_of, member_explainers
from pipeline.inference.predict import Predictor
from pipeline.inference.service import RETRY_S, Busy, Closed, InferenceService, batching_enabled
from pipeline.runs.catalog import crossval_summary_path, list_runs, model_card, released_row
from pipeline.runs.folder import RunFolder

from .settings import data_dir, released_model, run_folder, runs_dir


@st.cache_data(show_spinner=False)
def _scan(root: str, signature: float) -> Dataset:
    return scan_dataset(root)


def current_dataset() -> Dataset:
    """The dataset of the sidebar, cached until its folder changes; raises PipelineError when unusable."""
    root = Path(data_dir()).expanduser()
    signature = root.stat().st_mtime if root.exists() else 0.0
    return _scan(str(root), signature)


DEFAULT_MAP = ("gradcam", DEFAULT_LAYER)
"""The map the inference service draws with each answer."""
RUNS_REFRESH_S = 5.0
"""The run table is read again when a run folder's status or metrics change, and at least this often (a run whose
process died changes no file, yet must stop showing as running)."""


@st.cache_data(show_spinner=False, max_entries=4)
def _runs_table(root: str, signature: tuple, released: str | None) -> pd.DataFrame:
    return pd.DataFrame(released_row(Path(released) if released else None) + list_runs(Path(root)))


def _runs_signature(root: Path) -> tuple:
    if not root.is_dir():
        return ()
    stamps = []
    for folder in root.iterdir():  # every file of every run: a damaged or replaced file renews the table
        if folder.is_dir():
            stamps += [
                (folder.name, path.name, path.stat().st_mtime_ns, path.stat().st_size)
                for path in folder.iterdir()
                if path.is_file()
            ]
    return tuple(sorted(stamps)) + (int(time.time() // RUNS_REFRESH_S),)


def runs_table() -> pd.DataFrame:
    """Every run of the runs folder, read once per change of its folders (not on every widget move)."""
    root, released = runs_dir(), released_model()
    return _runs_table(str(root), _runs_signature(root), str(released) if released else None).copy()


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail_of(path: str, file_mtime: float, size: int = 112) -> Any:
    """A small preview of an image file, decoded once per file version."""

    return thumbnail(path, size)


@st.cache_data(show_spinner=False, max_entries=64)
def _answer(run_dir: str, model_mtime: float, image_key: str, _image: Any, patient: str | None = None) -> Any:
    return service_of(run_dir, model_mtime).answer(_image, patient)


def cached_answer(run_dir: str, model_mtime: float, image_key: str, image: Any, patient: str | None = None) -> Any:
    """A run's answer for one image (an `Answer`: the prediction and its Grad-CAM), from the server's inference
    service, batched with other visitors' cells; computed once per image content and model file (moving a slider
    redraws, it does not predict again). While the service is full, the page says so and asks again. `patient`: a
    released model answers a cell of a patient it was built from with the head that never saw that patient."""
    notice = st.empty()
    for attempt in itertools.count(1):
        try:
            answer = _answer(run_dir, model_mtime, image_key, image, patient)
            break
        except (Busy, Closed):  # a closed service (its model left the cache): `service_of` starts another
            busy = f"The server is busy answering other visitors' cells: retrying ({attempt})…"
            notice.info(busy, icon=":material/hourglass:")
            time.sleep(RETRY_S)
    notice.empty()
    with _MAPS_LOCK:
        _SERVICE_MAPS[(run_dir, model_mtime, image_key)] = answer.heatmap
        while len(_SERVICE_MAPS) > 128:
            _SERVICE_MAPS.popitem(last=False)
    return answer


_SERVICE_MAPS: OrderedDict[tuple[str, float, str], Any] = OrderedDict()
"""The Grad-CAM maps the service drew with its answers, by model and image content (the latest 128)."""
_MAPS_LOCK = threading.Lock()


def heatmap_of(
    run_dir: str, model_mtime: float, image_key: str, method: str, layer: str, channels: int, prediction: Any
) -> Any:
    """The map of a prediction: the service's own Grad-CAM when it drew it with the answer, else `cached_heatmap`."""
    with _MAPS_LOCK:
        drawn = _SERVICE_MAPS.get((run_dir, model_mtime, image_key)) if (method, layer) == DEFAULT_MAP else None
    if drawn is not None:
        return drawn
    return cached_heatmap(run_dir, model_mtime, image_key, method, layer, channels, prediction)


def cached_prediction(run_dir: str, model_mtime: float, image_key: str, image: Any, patient: str | None = None) -> Any:
    """The prediction of `cached_answer`."""
    return cached_answer(run_dir, model_mtime, image_key, image, patient).prediction


@st.cache_data(show_spinner=False, max_entries=8)
def cached_zip_answers(
    run_dir: str, model_mtime: float, zip_key: str, _members: list[tuple[str, bytes]]
) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str]]]:
    """A zip's cells through the inference service, decoded one by one and queued together so they share batches (a
    full queue is waited out, not refused), once per zip content and model file: (member, image key, prediction
    without its inputs) of each cell read, and (member, reason) of each that did not decode."""
    try:
        return _zip_answers(service_of(run_dir, model_mtime), _members)
    except Closed:  # its model left the cache while the zip was queued: once more, on the server's current service
        return _zip_answers(service_of(run_dir, model_mtime), _members)


def _zip_answers(
    service: InferenceService, members: list[tuple[str, bytes]]
) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str]]]:
    """`cached_zip_answers` on one service (`Closed` when it closes while the zip is queued)."""
    read: list[tuple[str, str]] = []
    unread: list[tuple[str, str]] = []

    def images() -> Any:
        for member, data in members:
            try:
                image = decode_image(data, member)
            except PipelineError as error:
                unread.append((member, str(error)))
                continue
            read.append((member, image_key(data=data)))
            yield image

    answers = service.answer_many(images(), keep_inputs=False)
    return [(member, key, answer.prediction) for (member, key), answer in zip(read, answers, strict=True)], unread


@st.cache_data(show_spinner=False, max_entries=128)
def cached_heatmap(
    run_dir: str, model_mtime: float, image_key: str, method: str, layer: str, channels: int, _prediction: Any
) -> Any:
    """An explanation of a prediction's shown class, computed once per image, model, method, layer and channels."""

    return explain_prediction(_explainer(run_dir, model_mtime), _prediction, method, layer, scorecam_channels=channels)


@st.cache_data(show_spinner=False, max_entries=128)
def cached_averaged_gradcam(run_dir: str, model_mtime: float, image_key: str, _prediction: Any) -> Any:
    """A released ensemble's Grad-CAM averaged over its networks, for the class shown, once per image and model."""
    explainers = [_explainer(run_dir, model_mtime), *_member_explainers(run_dir, model_mtime)]
    inputs = [_prediction.input, *_prediction.member_inputs]
    return averaged_gradcam(explainers, inputs, _prediction.class_index)


@st.cache_resource(show_spinner="Preparing the other networks' explanations…", max_entries=3)
def _member_explainers(run_dir: str, model_mtime: float) -> list[Any]:
    return member_explainers(_predictor(run_dir, model_mtime))


def model_key(run_id: str) -> tuple[str, float]:
    """The run folder and its model file's time: what the cached predictions and maps of a model are keyed by."""
    folder = run_folder(run_id)
    return str(folder.path), folder.model_file.stat().st_mtime if folder.has_model() else 0.0


def image_key(data: bytes | None = None, path: str | None = None) -> str:
    """An image's identity for the caches: its content's hash (an upload) or its path and time (a file)."""
    import hashlib

    if data is not None:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    return f"file:{path}:{Path(path).stat().st_mtime_ns}"


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def _predictor(run_dir: str, model_mtime: float) -> Any:
    return Predictor.from_run(run_dir)


@st.cache_resource(
    show_spinner="Starting the model's inference service…", max_entries=3, on_release=InferenceService.close
)
def service_of(run_dir: str, model_mtime: float) -> InferenceService:
    """The server's one inference service of a model (its predictor and explainer): every visitor's cells go through
    it, batched (`INFERENCE_BATCHING=0`: one at a time). A service the cache lets go is closed: its worker answers
    what is queued and ends, so an evicted model is not kept alive by its thread."""
    return InferenceService(
        _predictor(run_dir, model_mtime), _explainer(run_dir, model_mtime), batching=batching_enabled()
    )


@st.cache_resource(show_spinner="Preparing explanations…", max_entries=3)
def _explainer(run_dir: str, model_mtime: float) -> Any:
    return explainer_of(_predictor(run_dir, model_mtime))


def predictor_and_explainer(run_id: str) -> tuple[Any, Any]:
    """The run's model and explainer, built once per model file."""
    folder = run_folder(run_id)
    mtime = folder.model_file.stat().st_mtime if folder.has_model() else 0.0
    return _predictor(str(folder.path), mtime), _explainer(str(folder.path), mtime)


@st.cache_data(show_spinner=False, max_entries=64)
def _predictions(run_dir: str, mtime: float) -> pd.DataFrame:
    return RunFolder(Path(run_dir)).predictions()


def predictions_of(folder: RunFolder) -> pd.DataFrame | None:
    """A run's test predictions (checked, read again when they change), or None when the run has none."""
    path = folder.predictions_path
    return _predictions(str(folder.path), path.stat().st_mtime) if path.is_file() else None


def mtime(path: Path) -> float:
    """A file's modification time (0 when absent): the key that renews a cached reading of it."""
    return path.stat().st_mtime if path.is_file() else 0.0


def model_card_of(folder: RunFolder) -> dict[str, Any]:
    """The run's model card, read again when its metrics or its cross-validation's summary change."""
    summary = crossval_summary_path(folder.config()) if folder.has_config() else None
    return _model_card(str(folder.path), mtime(folder.metrics_path), mtime(summary) if summary else 0.0)


@st.cache_data(show_spinner=False, max_entries=16)
def _model_card(run_dir: str, metrics_mtime: float, summary_mtime: float) -> dict[str, Any]:
    return model_card(RunFolder(Path(run_dir)))
