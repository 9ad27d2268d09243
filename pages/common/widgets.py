"""Widgets every page shares: the sidebar, messages about data and weights, live training progress."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pipeline.core.config import EMBEDDED_SAMPLE
from pipeline.core.errors import PipelineError
from pipeline.data.synthetic import ensure_demo_data
from pipeline.evaluation.figures import curves_figure
from pipeline.evaluation.intervals import interval_line
from pipeline.runs.catalog import progress_summary
from pipeline.runs.contract import ACTIVE_STATES
from pipeline.runs.display import (
    escape_markdown,
    format_duration,
    held_out_line,
    images_label,
    model_name,
    shown_path,
    without_paths,
)
from pipeline.runs.folder import RunFolder
from pipeline.training.launch import cancel, failed_demo_model, is_demo_group, launch_demo_model

from .check_views import other_subjects_section
from .loaders import model_card_of, runs_table
from .settings import (
    DEMO_DATA_DIR,
    configured_data_dirs,
    data_dir,
    data_label,
    demo_mode,
    models,
    run_folder,
    runs_dir,
    synthetic_ready,
)

DISCLAIMER = "Research tool, not a diagnostic device: its predictions must never guide the care of a patient."


def figure_text(value: Any, undefined: str | None = None) -> str:
    """A figure to three decimals; a dash (or "undefined") where there is no number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "undefined" if undefined else "—"
    return f"{value:.3f}"


def skipped_files(skipped: list[tuple[str, str]], what: str) -> None:
    """Files left out, by name and reason, in a closed expander headed by how many and `what` happens to them."""
    if not skipped:
        return
    with st.expander(f"{len(skipped)} file(s) {what}", icon=":material/warning:"):
        st.dataframe(
            [{"file": str(path), "reason": str(reason)} for path, reason in skipped], hide_index=True, width="stretch"
        )


def synthetic_warning(config: dict[str, Any]) -> None:
    """Warn when a run's figures come from synthetic data."""
    if str(config.get("data_kind", "")).startswith("synthetic"):
        st.warning(
            "Trained and tested on **synthetic demo data**: these figures say nothing about real cells.",
            icon=":material/warning:",
        )
    if str(config.get("weights_used") or "").startswith("none"):
        st.info(
            "This model started from **random weights**, not ImageNet: expect weaker results.", icon=":material/info:"
        )


def run_label(run_id: str) -> str:
    """A run as a picker names it: its id, or in a hosted demo the model's name (backbone, size, weights)."""
    if not demo_mode():
        return run_id
    folder = run_folder(run_id)
    return model_name(model_card_of(folder))


def sidebar() -> None:
    """Dataset root and current run, shared by all pages."""
    with st.sidebar:
        st.caption("Dataset")
        roots = configured_data_dirs()
        if demo_mode():
            st.session_state["data_dir"] = st.selectbox("Dataset", roots, key="data_dir_choice", format_func=data_label)
        else:
            chosen = st.text_input(
                "Dataset root",
                value=data_dir(),
                help="The C-NMC root (holding training_data/) or a folder with all/ and hem/. "
                "Default: the real C-NMC sample that ships with the project.",
            )
            st.session_state["data_dir"] = chosen.strip()
            if st.button(
                "Synthetic demo data",
                help="Cells drawn by this project, for tests and scale: they say nothing about real cells.",
            ):
                use_synthetic_data()
        st.caption(f"In use: **{escape_markdown(data_label(data_dir()))}**")
        runs = models()
        st.caption("Run")
        if runs:
            current = st.session_state.get("run_id")
            index = runs.index(current) if current in runs else 0
            st.session_state["run_id"] = st.selectbox(
                "Current model" if demo_mode() else "Current run", runs, index=index, format_func=run_label
            )
        else:
            st.write("No finished run yet.")
        if demo_mode():
            st.info("Hosted demo: training is switched off.", icon=":material/lock:")
        st.caption(DISCLAIMER)


def use_synthetic_data() -> None:
    """Generate the synthetic demo data on first use (with a progress bar), then make it the dataset in use."""

    if not synthetic_ready():
        bar = st.progress(0.0, text="Drawing synthetic cells (about 10 s)")
        ensure_demo_data(DEMO_DATA_DIR, progress=lambda fraction: bar.progress(fraction, text="Drawing cells"))
    st.session_state["data_dir"] = str(DEMO_DATA_DIR)
    st.rerun()


def show_error(error: PipelineError) -> None:
    """The error's message as it is written: names it quotes (files, folders, runs) are text, never Markdown."""
    st.error(escape_markdown(error), icon=":material/error:")


@st.fragment(run_every=2)
def live_progress(allow_cancel: bool = False) -> None:
    """Queued and training runs, refreshed every 2 s: epoch and step progress, time, curves, cancel."""
    runs = runs_table()
    active = runs[runs["state"].isin(ACTIVE_STATES)] if not runs.empty else runs
    if active.empty:
        st.caption("No run is training now.")
        if st.session_state.pop("was_training", False):
            st.rerun(scope="app")  # a run just finished: refresh the run lists everywhere
        return
    st.session_state["was_training"] = True
    for run_id in active["run_id"]:
        folder = run_folder(run_id)
        status = folder.status()
        summary = progress_summary(status)
        st.markdown(
            f"**{escape_markdown(run_id)}** · {escape_markdown(status.get('state'))} · "
            f"{escape_markdown(status.get('phase', ''))}"
        )
        st.progress(summary["fraction"], text=f"Epoch {summary['epoch']} of {summary['epochs']}")
        st.progress(min(1.0, summary["within_epoch"]), text=f"Within the epoch or phase: {summary['within_epoch']:.0%}")
        cols = st.columns(3)
        cols[0].metric("Elapsed", format_duration(summary["elapsed_s"]))
        cols[1].metric(
            "Remaining (estimate)",
            format_duration(summary["eta_s"]),
            help="Extrapolated from the time per epoch so far.",
        )
        if allow_cancel and cols[2].button("Cancel", key=f"cancel-{run_id}", type="secondary"):
            st.toast("Cancelling…" if cancel(folder.path) else "That run is no longer running.")
        history = folder.history()
        if not history.empty:
            left, right = st.columns(2)
            left.plotly_chart(curves_figure(history, "accuracy"), width="stretch", key=f"acc-{run_id}")
            right.plotly_chart(curves_figure(history, "loss"), width="stretch", key=f"loss-{run_id}")


def _card_figures(card: dict[str, Any], test: dict[str, Any]) -> None:
    """The model card's figures on its held-out patients, their intervals and its recipe's cross-validation."""
    cells = st.columns(5)
    label, help_text = images_label(card)
    cells[0].metric(label, test["images"], help=help_text)
    for cell, (label, key) in zip(
        cells[1:],
        [
            ("Balanced accuracy", "balanced_accuracy"),
            ("ROC AUC", "roc_auc"),
            ("Sensitivity (ALL)", "sensitivity"),
            ("Specificity (HEM)", "specificity"),
        ],
        strict=True,
    ):
        value = test.get(key)
        cell.metric(label, figure_text(value))
    if interval_line(card.get("intervals")):
        st.caption(
            "95 % intervals: " + interval_line(card.get("intervals")) + ". With few patients the "
            "figures above could be this far off on other patients."
        )
    means = (card.get("out_of_fold") or {}).get("fold_mean") or {}
    if means.get("roc_auc") is not None:
        st.caption(
            f"Pooled over the folds. The mean of the folds' own figures (the cross-validation's headline): ROC AUC "
            f"{means['roc_auc']:.3f}, balanced accuracy {figure_text(means.get('balanced_accuracy'))}."
        )
    crossval = card.get("crossval")
    if crossval and crossval["pooled"]:
        st.caption(
            f"**Its recipe over all {crossval['patients']} patients** ({crossval['folds']}-fold patient "
            f"cross-validation, every patient held out once; this model is fold {crossval['fold']}): "
            + interval_line(crossval["pooled"])
            + "."
        )
    elif crossval:
        st.caption(
            f"This model is fold {crossval['fold']} of a {crossval['folds']}-fold patient "
            "cross-validation; the figure over all patients follows when the other folds are done."
        )


def show_model_card(folder: RunFolder) -> None:
    """The model in a few lines: data, patients held out, weights, figures on those patients, time taken."""
    card = model_card_of(folder)
    test = card["test"]
    with st.container(border=True):
        text = escape_markdown
        named = "" if demo_mode() else f" · `{card['run_id']}`"
        st.markdown(
            f"**Model card**{named} · recipe {text(card['recipe'])} · {text(card['backbone'])} at "
            f"{text(card['image_size'])} px · weights: {text(card['weights'])}"
            + (" · test-time augmentation" if card["tta"] else "")
        )
        release_card = folder.release_card_path
        held = held_out_line(card, release_card.is_file())
        st.markdown(
            f"Data: **{text(card['data'])}** ({text(shown_path(card['data_dir'], demo_mode()))}); trained "
            f"on {card.get('trained_on', '?')} images. {held}"
        )
        if release_card.is_file():
            st.caption(
                "Released model: every figure below is out of fold (each cell scored by the heads of the "
                "patient fold that never saw its patient); uploads are answered by the heads fit on every "
                "patient."
            )
            with st.expander("The release's card"):
                st.markdown(release_card.read_text())
        if test:
            _card_figures(card, test)
            other_subjects_section(card)  # the card carries the metrics' other_subjects section
        for warning in card["model_warnings"]:
            st.warning(warning, icon=":material/report:")
        device = card.get("device") or {}
        spread = (
            f" on {device['replicas']} replicas, global batch {device['global_batch']} "
            f"({device['per_replica_batch']:g} per replica"
            + (", BatchNorm synchronised)" if device.get("synchronized_batchnorm") else ")")
            if device.get("replicas", 1) > 1
            else ""
        )
        st.caption(
            f"Training took {format_duration(card['duration_s'])}{spread}. "
            + " ".join(w for w in card["warnings"] if w not in card["model_warnings"])
        )


def demo_model_failure() -> bool:
    """In a hosted demo whose model could not be prepared: the reason (no server path) and a button to try again;
    False when there is no such failure."""

    failed = failed_demo_model(runs_dir())
    if failed is None:
        return False
    reason = without_paths(str(failed.get("error") or failed.get("state")))
    st.warning(
        f"**The demo model could not be prepared** ({reason}). Try again; if it fails again, the host's logs say more.",
        icon=":material/error:",
    )
    if st.button("Try again", type="primary", key="demo-retry"):
        try:
            if launch_demo_model(str(EMBEDDED_SAMPLE), runs_dir()):
                st.rerun()
        except PipelineError as error:
            show_error(error)
    return True


def demo_model_progress() -> bool:
    """While the demo model is being prepared, say so plainly with its progress; False when none is."""
    runs = runs_table()
    if runs.empty or "group" not in runs:
        return False
    demo = runs[runs["group"].map(is_demo_group)]
    preparing = demo[demo["state"].isin(ACTIVE_STATES)]
    if preparing.empty or (runs["state"] == "completed").any():  # the later folds train while the first serves
        return demo_model_failure() if demo_mode() else False
    st.info(
        "**The demo model is being prepared** on the embedded real C-NMC sample (a few minutes on 2 CPU "
        "cores). Predictions are possible as soon as it is ready; this page follows its progress.",
        icon=":material/hourglass_top:",
    )
    live_progress()
    return True
