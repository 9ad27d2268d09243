"""The Predict page's larger sections: a real cell to click or a dataset image to pick, and many images together
(a table per upload group, downloads)."""

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pages.common.loaders import cached_prediction, current_dataset, image_key, mtime, thumbnail_of
from pages.common.widgets import show_error
from pipeline.core.config import EMBEDDED_SAMPLE, OTHER_SUBJECTS_SAMPLE
from pipeline.core.errors import PipelineError
from pipeline.data.decode import read_image
from pipeline.data.layouts import parse_cnmc_name, scan_dataset
from pipeline.inference.answers import check_columns
from pipeline.inference.cells import group_summary
from pipeline.runs.display import escape_markdown, example_cells, spreadsheet_safe
from pipeline.runs.folder import RunFolder


@st.cache_data(show_spinner=False, max_entries=8)
def _examples(run_dir: str, split_mtime: float) -> list[dict]:
    try:
        split = RunFolder(Path(run_dir)).split()
    except (OSError, PipelineError):  # a released model's split, or none: examples without roles
        split = None
    return example_cells(scan_dataset(EMBEDDED_SAMPLE).labelled, split)


@st.cache_data(show_spinner=False)
def _other_subject_examples() -> list[dict]:
    """Cells of subjects of other C-NMC folds (the embedded `samples/cnmc-other-subjects`), 3 per class."""
    if not OTHER_SUBJECTS_SAMPLE.is_dir():
        return []
    return example_cells(scan_dataset(OTHER_SUBJECTS_SAMPLE).labelled, None, per_class=3)


def _example_row(examples: list[dict], dataset_paths: list[str], caption: Any) -> None:
    """One row of example cells, each with its caption and a Predict button."""
    columns = st.columns(len(examples))
    for column, example in zip(columns, examples, strict=True):
        column.image(
            thumbnail_of(example["path"], mtime(Path(example["path"])), 96),
            width="stretch",
            caption=escape_markdown(caption(example)),
        )
        column.button(
            "Predict", key=f"example-{example['path']}", on_click=_choose_example, args=(example["path"], dataset_paths)
        )


def true_class_note(name: str, predicted: str) -> str | None:
    """For a chosen cell of another fold's subject (shown as `name`): its true class and whether the answer is
    right; None for any other image."""
    path = st.session_state.get(PATH_KEY)
    if not path or Path(path).name != name or Path(path).parent.parent != OTHER_SUBJECTS_SAMPLE:
        return None
    parsed = parse_cnmc_name(name)
    if parsed is None:
        return None
    patient, label = parsed
    verdict = "right" if predicted == label else "**wrong**"
    return (
        f"True class: **{label}** ({patient}, a subject of another C-NMC fold the model never trained on): the "
        f"model's answer is {verdict} here."
    )


# The one image chosen (a clicked example or a picked dataset image) and the picker's own state: the picker always
# names the image shown, or nothing. (A string here would be drawn on the page by Streamlit's magic.)
PATH_KEY, PICK_KEY = "predict_path", "predict_pick"


def _choose_example(path: str, picker_paths: list[str]) -> None:
    st.session_state[PATH_KEY] = path
    st.session_state[PICK_KEY] = path if path in picker_paths else None


def _choose_picked() -> None:
    st.session_state[PATH_KEY] = st.session_state.get(PICK_KEY)


def example_or_picked_cell(folder: RunFolder, model_dir: str, model_mtime: float) -> list[tuple[str, Any, str, str]]:
    """Real cells of the embedded sample to click (marked by their role for this model) and a picker over the
    dataset's images; the one chosen, predicted, as (name, Prediction, the image's cache key, group)."""
    chosen: list[tuple[str, Any, str, str]] = []
    try:
        records = current_dataset().records[:500]
    except PipelineError:
        records = []
    dataset_paths = [record.path for record in records]
    patient_of = {record.path: record.patient for record in records}
    st.markdown("**…or click a real cell** of the embedded C-NMC sample (marked by its role for this model):")
    examples = _examples(str(folder.path), mtime(folder.split_path))
    if folder.released:  # a release answers them out of fold
        examples = [{**example, "role": "held out by its fold's heads"} for example in examples]
    patient_of.update({example["path"]: example["patient"] for example in examples})
    _example_row(examples, dataset_paths, lambda e: f"{e['label']} · {e['patient']} · {e['role']}")
    others = _other_subject_examples()
    if others:
        st.markdown(
            "**…or a cell of a subject from another C-NMC fold**, never trained on, with its true class: where the "
            "model is wrong as well as right."
        )
        patient_of.update({example["path"]: example["patient"] for example in others})
        _example_row(others, dataset_paths, lambda e: f"true class {e['label']} · {e['patient']}")
    if dataset_paths:
        if st.session_state.get(PICK_KEY) not in dataset_paths:
            st.session_state[PICK_KEY] = None  # another dataset, or nothing picked yet
        st.selectbox(
            "…or pick an image of the dataset",
            dataset_paths,
            key=PICK_KEY,
            placeholder="Choose an image",
            format_func=lambda p: p.split("/")[-1],
            on_change=_choose_picked,
        )
    path = st.session_state.get(PATH_KEY)
    if path:
        try:
            key = image_key(path=path)
            chosen.append(
                (
                    path.split("/")[-1],
                    cached_prediction(model_dir, model_mtime, key, read_image(path), patient_of.get(path)),
                    key,
                    "chosen cell",
                )
            )
        except (PipelineError, OSError) as error:
            show_error(error if isinstance(error, PipelineError) else PipelineError(f"{path} cannot be read."))
    return chosen


def together_section(images: list[tuple[str, Any, str, str]], unread: list[tuple[str, str, str]] = ()) -> str:
    """Many images: a summary per upload group and a row per image (those not read too, each with its reason), with
    downloads; the name of the image to explain."""
    table = pd.DataFrame(
        [
            {
                "image": name,
                "group": group,
                "predicted": result.predicted,
                "probability": result.probability,
                "prob_all": result.prob_all,
                "error": None,
                **check_columns(result),
            }
            for name, result, _, group in images
        ]
        + [{"image": name, "group": group, "error": reason} for name, group, reason in unread]
    )
    summary = group_summary(table)
    st.markdown(
        "**Together**: per upload group, the cells read, mean P(ALL) with its 95 % interval over the cells, "
        "the share called ALL and how many failed the input check."
    )
    st.dataframe(
        summary,
        hide_index=True,
        width="stretch",
        column_config={
            "mean_prob_all": st.column_config.NumberColumn("mean P(ALL)", format="%.3f"),
            "low": st.column_config.NumberColumn("95 % CI low", format="%.3f"),
            "high": st.column_config.NumberColumn("95 % CI high", format="%.3f"),
            "share_called_all": st.column_config.NumberColumn("share called ALL", format="%.2f"),
        },
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "probability": st.column_config.NumberColumn("probability of the predicted class", format="%.3f"),
            "prob_all": st.column_config.NumberColumn("P(ALL)", format="%.3f"),
        },
    )
    downloads = st.columns(2)
    downloads[0].download_button("Predictions (CSV)", spreadsheet_safe(table).to_csv(index=False), "predictions.csv")
    downloads[1].download_button(
        "Summary per group (CSV)", spreadsheet_safe(summary).to_csv(index=False), "predictions-summary.csv"
    )
    return st.selectbox("Explain image", [name for name, _, _, _ in images])
