"""Train: settings or the paper's grid, launched as a background process; live progress and curves."""

import streamlit as st

from pages.common.loaders import runs_table
from pages.common.settings import data_dir, demo_mode, run_folder, runs_dir
from pages.common.widgets import live_progress, show_error
from pipeline.config import BACKBONES, PAPER_BATCH_SIZES, PAPER_EPOCHS, SPLITS, ClaheSettings, TrainConfig
from pipeline.errors import PipelineError
from pipeline.launch import gpu_present, launch, resume
from pipeline.runs import RESUMABLE_STATES
from pipeline.train import grid

st.title(":material/model_training: Train")
if demo_mode():
    st.info("Training is switched off in the hosted demo. Train with the command line or a local dashboard, "
            "then point the demo at the run (see the README).", icon=":material/lock:")
    st.stop()


paper = st.toggle("Paper protocol preset", help="EfficientNet-B3 at 224 px, ImageNet weights, image-level split of "
                  "fold 0, 50 epochs, batch 16, learning rate 1e-4 as in the paper.")
if paper:
    st.warning("The paper's image-level split lets images of the same patient fall in training and test: "
               "results are optimistic. The patient split is the honest default.", icon=":material/warning:")

with st.form("train"):
    columns = st.columns(4)
    backbone = columns[0].selectbox("Backbone", BACKBONES, index=BACKBONES.index("efficientnet_b3"))
    image_size = columns[1].select_slider("Image size (px)", [64, 96, 128, 160, 224, 300], value=224)
    weights = columns[2].selectbox("Weights", ["imagenet", "none"], index=0 if paper else 1,
                                   help="ImageNet needs the weights cached or an internet connection once; "
                                        "'none' starts from random weights.")
    split = columns[3].selectbox("Split", SPLITS, index=SPLITS.index("image" if paper else "patient"),
                                 help="patient: no patient in two subsets; image: the paper's random split; "
                                      "folds: the C-NMC folds, tested on the prelim set.")
    columns = st.columns(4)
    epochs = columns[0].number_input("Epochs", 1, 200, 50 if paper else 10)
    batch_size = columns[1].selectbox("Batch size", [8, 16, 32, 64], index=1)
    learning_rate = columns[2].number_input("Learning rate", 1e-6, 1e-1, 1e-4, format="%.0e")
    max_images = columns[3].number_input("Use at most N images (0 = all)", 0, 100000, 0)
    columns = st.columns(3)
    fast = columns[0].checkbox("Fast mode (frozen backbone)", value=not paper and not gpu_present(),
                               help="Suggested without a GPU. Backbone features are computed once and cached, "
                                    "then only the head trains: under a second per epoch on a CPU instead of "
                                    "minutes.")
    augment = columns[1].checkbox("Augment (flips, 90° rotations)")
    clahe = columns[2].checkbox("CLAHE", value=True)
    sweep = st.checkbox("Run the paper's grid (epochs × batch sizes) instead")
    grid = st.columns(2)
    sweep_epochs = grid[0].multiselect("Grid epochs", PAPER_EPOCHS, default=list(PAPER_EPOCHS))
    sweep_batches = grid[1].multiselect("Grid batch sizes", PAPER_BATCH_SIZES, default=list(PAPER_BATCH_SIZES))
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    try:
        base = TrainConfig(
            data_dir=data_dir(), backbone=backbone, image_size=int(image_size), weights=weights, split=split,
            folds="0" if paper else "", epochs=int(epochs), batch_size=int(batch_size),
            learning_rate=float(learning_rate), freeze_backbone=fast, augment=augment,
            clahe=ClaheSettings(enabled=clahe), max_images=int(max_images))
        group, configs = grid(base, sweep_epochs, sweep_batches) if sweep else ("", [base])
        folders = launch(configs, runs_dir(), group=group)
        st.success(f"Started {len(folders)} run(s): {', '.join(f.run_id for f in folders)}. "
                   "They keep going if you close this tab.", icon=":material/rocket_launch:")
    except PipelineError as error:
        show_error(error)

st.subheader("Now training")
live_progress(allow_cancel=True)

runs = runs_table()
stopped = runs[runs["state"].isin(RESUMABLE_STATES)] if not runs.empty else runs
if not stopped.empty:
    st.subheader("Stopped runs")
    for row in stopped.itertuples(index=False):
        cols = st.columns([4, 1])
        cols[0].write(f"**{row.run_id}** · {row.state} · {row.error or ''}")
        if cols[1].button("Resume", key=f"resume-{row.run_id}"):
            try:
                resume(run_folder(row.run_id).path)
                st.rerun()
            except PipelineError as error:
                show_error(error)
