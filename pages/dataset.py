"""Dataset: counts per class, fold and patient; a paged thumbnail grid; raw vs preprocessed with CLAHE."""

from pathlib import Path

import streamlit as st

from pages.common.frame import through_the_app
from pages.common.loaders import current_dataset, mtime, thumbnail_of
from pages.common.settings import demo_mode
from pages.common.widgets import show_error, skipped_files
from pipeline.core.config import ClaheSettings
from pipeline.core.errors import PipelineError
from pipeline.data.decode import read_image
from pipeline.data.preprocess import preprocess
from pipeline.evaluation.figures import counts_figure, histogram_figure
from pipeline.runs.display import escape_markdown, shown_path

through_the_app()  # a page opened by its address on a fresh server comes back through streamlit_app.py

PAGE_SIZE = 24

st.title(":material/photo_library: Dataset")
try:
    dataset = current_dataset()
except PipelineError as error:
    show_error(error)
    st.stop()

info = dataset.info()
frame = dataset.frame().fillna({"label": "unlabelled"})
frame["fold"] = frame["subset"].replace("", "—")
st.caption(f"{escape_markdown(shown_path(dataset.root, demo_mode()))} · {info['layout']} layout · **{dataset.kind}**")
columns = st.columns(5)
columns[0].metric("Images", info["images"])
columns[1].metric("ALL", info["per_class"]["ALL"], help="Leukemic blasts (label 1 in C-NMC).")
columns[2].metric("HEM", info["per_class"]["HEM"], help="Normal cells (label 0 in C-NMC).")
labelled = max(1, info["per_class"]["ALL"] + info["per_class"]["HEM"])
columns[3].metric(
    "ALL share",
    f"{info['per_class']['ALL'] / labelled:.0%}",
    help="Class balance: the share of labelled images that are ALL.",
)
columns[4].metric("Patients", info["patients"], help="Distinct subjects parsed from C-NMC file names.")
skipped_files(dataset.skipped, "skipped: they are not images (whatever their names say)")

left, right = st.columns(2)
left.plotly_chart(counts_figure(frame, "fold", "Images per fold or subset and class"), width="stretch")
by_patient = frame[frame["patient"] != "unknown"]
if not by_patient.empty:
    right.plotly_chart(counts_figure(by_patient, "patient", "Images per patient and class"), width="stretch")
else:
    right.info("Patients are unknown in this layout (file names are not C-NMC names).")

st.subheader("Browse")
filters = st.columns(3)
label = filters[0].selectbox("Class", ["all classes", *sorted(frame["label"].unique())])
fold = filters[1].selectbox("Fold / subset", ["all", *sorted(frame["fold"].unique())])
patient = filters[2].selectbox("Patient", ["all", *sorted(frame["patient"].unique())])
shown = frame
if label != "all classes":
    shown = shown[shown["label"] == label]
if fold != "all":
    shown = shown[shown["fold"] == fold]
if patient != "all":
    shown = shown[shown["patient"] == patient]
pages = max(1, -(-len(shown) // PAGE_SIZE))
page = st.number_input(f"Page (of {pages}, {len(shown)} images)", 1, pages, 1)
batch = shown.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
grid = st.columns(8)
for index, row in enumerate(batch.itertuples(index=False)):
    try:
        grid[index % 8].image(
            thumbnail_of(row.path, mtime(Path(row.path))),
            width="stretch",
            caption=escape_markdown(f"{row.label} · {row.patient}"),
        )
    except PipelineError as error:
        grid[index % 8].warning(escape_markdown(error))

st.subheader("Raw vs preprocessed")
if shown.empty:
    st.info("No image matches these filters.")
    st.stop()
choice = st.selectbox("Image", shown["path"].tolist(), format_func=lambda p: p.split("/")[-1])
settings = st.columns(3)
size = settings[0].select_slider("Model input size (px)", [64, 128, 224, 300], value=224)
clip = settings[1].slider("CLAHE clip limit", 0.5, 8.0, 2.0, 0.5, help="Higher: stronger local contrast.")
tiles = settings[2].slider("CLAHE tile grid", 2, 16, 8, help="Tiles per side over which contrast is equalized.")
try:
    original = read_image(choice)
except PipelineError as error:
    show_error(error)
    st.stop()
resized = preprocess(original, size, ClaheSettings(enabled=False))
enhanced = preprocess(original, size, ClaheSettings(clip_limit=clip, tile_grid=tiles))
views = st.columns(3)
views[0].image(original, caption=f"Original {original.shape[1]}×{original.shape[0]}", width="stretch")
views[1].image(resized, caption=f"Resized to {size}×{size}", width="stretch")
views[2].image(enhanced, caption=f"Resized + CLAHE (clip {clip}, grid {tiles})", width="stretch")
st.plotly_chart(histogram_figure({"resized": resized, "resized + CLAHE": enhanced}), width="stretch")
