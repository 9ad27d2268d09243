"""Predict: upload images or click a real example cell; class, probability and Grad-CAM at once, more
explanations, faithfulness and feature maps on demand."""

from typing import Any

import pandas as pd
import streamlit as st

from pages.common.frame import through_the_app
from pages.common.loaders import (
    cached_averaged_gradcam,
    cached_prediction,
    cached_zip_answers,
    heatmap_of,
    image_key,
    model_card_of,
    model_key,
    predictor_and_explainer,
)
from pages.common.predict_views import example_or_picked_cell, together_section, true_class_note
from pages.common.settings import current_model, demo_mode, models, run_folder
from pages.common.widgets import demo_model_progress, run_label, show_error, show_model_card, synthetic_warning
from pipeline.core.errors import PipelineError
from pipeline.data.decode import decode_image
from pipeline.explain.cams import METHODS
from pipeline.explain.pictures import colorize, overlay
from pipeline.explain.road import QUICK_FRACTIONS, share_on_cell
from pipeline.inference.cells import LEFT_OUT, read_zip
from pipeline.runs.catalog import run_config
from pipeline.runs.display import backbone_name, escape_markdown, provenance, spreadsheet_safe

through_the_app()  # a page opened by its address on a fresh server comes back through streamlit_app.py

st.title(":material/biotech: Predict")
runs = models()
if not runs:
    if not demo_model_progress():
        st.info(
            "No trained model yet: train one on the **Train** page, or prepare the demo model on **Home**."
            if not demo_mode()
            else "The demo model is not ready yet: see **Home**.",
            icon=":material/model_training:",
        )
    st.stop()


run_id = st.selectbox("Model", runs, index=runs.index(current_model()), format_func=run_label)
folder = run_folder(run_id)
try:
    config = run_config(folder)
    st.markdown(provenance(config, hide_paths=demo_mode()))
    synthetic_warning(config)
    card = model_card_of(folder)
    for warning in card["model_warnings"]:  # a model no better than a constant answer says so before it answers
        st.warning(warning, icon=":material/report:")
    with st.expander("Model card", expanded=False):
        show_model_card(folder)
    predictor, explainer = predictor_and_explainer(run_id)
except PipelineError as error:
    show_error(error)
    st.stop()

uploads = st.file_uploader(
    "Upload cell images, or a zip of a patient's cells",
    type=["bmp", "png", "jpg", "jpeg", "tif", "tiff", "zip"],
    accept_multiple_files=True,
    help="Processed in memory and never stored. Each zip is summarised as one group.",
)
model_dir, model_mtime = model_key(run_id)
images: list[tuple[str, Any, str, str]] = []  # (name, Prediction, the image's cache key, group)
unread: list[tuple[str, str, str]] = []  # (name, group, reason) of zip members left out or that did not decode
zipped: dict[str, tuple[str, bytes]] = {}  # a zip cell's name -> (member, bytes): read again when it is explained
for upload in uploads or []:
    data = upload.getvalue()
    if upload.name.lower().endswith(".zip"):
        try:
            contents = read_zip(data, upload.name)
        except PipelineError as error:
            show_error(error)  # the message names the file
            continue
        unread += [(f"{upload.name}/{member}", upload.name, LEFT_OUT + why) for member, why in contents.skipped]
        with st.spinner(f"Predicting the {len(contents.images)} cells of {escape_markdown(upload.name)}…"):
            # the zip's cells go through the service together (they share batches); answers keep no inputs
            found, failed = cached_zip_answers(model_dir, model_mtime, image_key(data=data), contents.images)
        images += [(f"{upload.name}/{member}", prediction, key, upload.name) for member, key, prediction in found]
        unread += [(f"{upload.name}/{member}", upload.name, reason) for member, reason in failed]
        zipped.update({f"{upload.name}/{member}": (member, raw) for member, raw in contents.images})
        continue
    try:
        key = image_key(data=data)
        images.append(
            (
                upload.name,
                cached_prediction(model_dir, model_mtime, key, decode_image(data, upload.name)),
                key,
                "uploaded files",
            )
        )
    except PipelineError as error:
        show_error(error)  # the message names the file
if unread:
    st.warning(
        f"{len(unread)} member(s) of the zip(s) were not read: each is named below with its reason; the rest are.",
        icon=":material/warning:",
    )
    st.dataframe(spreadsheet_safe(pd.DataFrame(unread, columns=["image", "group", "reason"])), hide_index=True)

if not uploads:
    images.extend(example_or_picked_cell(folder, model_dir, model_mtime))
if not images:
    st.caption("Nothing is predicted until you upload a cell, click one or pick one.")
    st.stop()

name = together_section(images, unread) if len(images) > 1 or unread else images[0][0]
result, key = next((prediction, key) for shown, prediction, key, _ in images if shown == name)
if name in zipped:  # a zip's answers keep no inputs: the cell explained is read and answered again (cached)
    result = cached_prediction(model_dir, model_mtime, key, decode_image(zipped[name][1], zipped[name][0]))

st.caption(f"Image: {escape_markdown(name)}")
label = "ALL (leukemic blast)" if result.predicted == "ALL" else "HEM (normal)"
flagged = result.check is not None and not result.check.in_distribution
if flagged:
    st.warning(escape_markdown(result.check.sentence()), icon=":material/help:")
cells = st.columns([2, 1, 1, 2])
cells[0].metric(
    "Predicted class",
    "not reliable" if flagged else label,
    help=f"The model's answer would be {label}, but the input is not like its training cells." if flagged else None,
)
if flagged:  # no probability of any kind for an input the model does not know
    not_given = "Not given: the input is not like the cells the model was trained on."
    cells[1].metric("Probability", "—", help=not_given)
    cells[2].metric("P(ALL)", "—", help=not_given)
else:
    cells[1].metric(
        "Probability",
        f"{result.probability:.1%}",
        help="Softmax probability of the predicted class"
        + (", averaged over the 8 flips and rotations (test-time augmentation)." if config.get("tta") else "."),
    )
    cells[2].metric("P(ALL)", f"{result.prob_all:.3f}", help="Probability of ALL; 0.5 or more is called ALL.")
opacity = cells[3].slider(
    "Heatmap opacity",
    0.0,
    1.0,
    0.6,
    0.05,
    help="Colour at the map's peak; where the map is low the cell shows through.",
)
if result.band is not None:
    members = [member.backbone for member in predictor.release.members]
    heads = "head" if len(members) == 1 else f"heads of {', '.join(members)} (the mean of their P(ALL))"
    scored = (
        f"the {heads} fit on every patient"
        if not result.fold
        else f"the fold-{result.fold} {heads}, which never saw this cell's patient"
    )
    band = (
        "No band: the input check failed"
        if flagged
        else f"{result.band[0].upper()}{result.band[1:]} (calibrated on held-out patients)"
    )
    st.markdown(
        f"**{band}**. Answered by {scored}. "
        f"Input check: {'passed' if not flagged else 'failed'} (feature distance {result.check.distance:.2f}, "
        f"threshold {result.check.threshold:.2f})."
    )
if note := true_class_note(name, "not reliable" if flagged else result.predicted):
    st.info(note, icon=":material/fact_check:")
st.caption("A research tool, not a diagnosis.")

layers = explainer.layers()
with st.expander("More explanations: other methods and layers, faithfulness, feature maps"):
    controls = st.columns(2)
    methods = controls[0].multiselect(
        "Methods",
        METHODS,
        default=["gradcam"],
        help="Grad-CAM and LayerCAM are fast; Grad-CAM++ and Faster Score-CAM take seconds.",
    )
    layer = controls[1].selectbox("Layer", layers, help="Deeper layers: coarser, more class-specific maps.")
    scorecam_channels = st.select_slider(
        "Score-CAM channels",
        [8, 16, 32, 64, 128],
        value=16,
        help="Faster Score-CAM masks in only the strongest channels of the layer.",
    )
    ensemble = predictor.release is not None and len(predictor.release.members) > 1
    want_average = ensemble and st.toggle(
        f"Grad-CAM averaged over the {len(predictor.release.members)} networks",
        help="Each network's Grad-CAM at its last convolutional stage, on its own input, resized and averaged: "
        "the map of the answer shown. The first time takes a few seconds.",
    )
    want_faithfulness = st.toggle("Faithfulness of each map (ROAD: a few seconds per map)")
    want_features = st.toggle("Feature maps of a stage")

st.subheader("Where the model looked")
if ensemble:
    count = len(predictor.release.members)
    st.caption(
        f"The maps show {predictor.release.backbone}, the first of the {count} averaged networks, with its head fit "
        "on every patient"
        + (
            f"; the last map averages the Grad-CAM of all {count}."
            if want_average
            else " (More explanations averages all)."
        )
    )
elif result.fold:
    st.caption("The maps show the head fit on every patient.")
panels = st.columns(len(methods or ["gradcam"]) + 1 + bool(want_average))
panels[0].image(result.input, caption="Model input (resized + CLAHE)", width="stretch")
for panel, method in zip(panels[1 : len(panels) - bool(want_average)], methods or ["gradcam"], strict=True):
    try:
        heatmap = heatmap_of(model_dir, model_mtime, key, method, layer, scorecam_channels, result)
    except PipelineError as error:
        panel.error(str(error))
        continue
    panel.image(
        overlay(result.input, heatmap, opacity),
        width="stretch",
        caption=f"{explainer.label(method, layer, scorecam_channels)} (yellow = most important)",
    )
    on_cell = share_on_cell(result.input, heatmap)
    panel.metric(
        "Map on the cell",
        "—" if on_cell is None else f"{on_cell:.0%}",
        help="Share of the map's weight inside the segmented cell (which covers about a sixth of the picture); a "
        "low share: the map's weight lies off the cell, on the background. A dash: the map is empty (nothing in "
        "this layer points to the class shown).",
    )
    if want_faithfulness:
        faith = explainer.road(result.input, heatmap, result.class_index, fractions=QUICK_FRACTIONS)
        panel.metric(
            "ROAD",
            f"{faith['combined']:+.3f}",
            delta=f"{faith['combined'] - faith['random_in_cell']:+.3f} vs random maps in the cell",
            help="Higher: more faithful.",
        )
if want_average:
    averaged = cached_averaged_gradcam(model_dir, model_mtime, key, result)
    names = ", ".join(backbone_name(member.backbone) for member in predictor.release.members)
    panels[-1].image(
        overlay(result.input, averaged, opacity),
        width="stretch",
        caption=f"Grad-CAM averaged over {names}"
        + (", each against its average training cell" if explainer.reference is not None else "")
        + " (yellow = most important)",
    )
    on_cell = share_on_cell(result.input, averaged)
    panels[-1].metric("Map on the cell", "—" if on_cell is None else f"{on_cell:.0%}")
if want_faithfulness:
    st.caption(
        "Faithfulness (ROAD): the predicted class's probability as the map's most relevant pixels are removed "
        "first (it should fall) or its least relevant first (it should hold), the holes filled from their "
        "neighbours; compared with random maps inside the cell, since any map on the cell beats random pixels."
    )

if want_features:
    st.subheader("Feature maps")
    stages = explainer.stages()
    stage = st.select_slider("EfficientNet stage", stages, value=stages[-1])
    grid = explainer.feature_maps(result.input, [stage], channels=16)[stage]
    st.image(
        colorize(grid, 640),
        caption=f"The 16 most active channels at the end of {stage} (viridis, each scaled to its own range)",
        width=640,
    )
