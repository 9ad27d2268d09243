"""Plotly figures shared by the pages: built from run-folder tables, no Streamlit here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .evaluate import roc_points

# Okabe-Ito, safe for the common colour-vision deficiencies; lines also differ by dash.
COLORS = {"train": "#0072B2", "val": "#E69F00", "ALL": "#D55E00", "HEM": "#009E73"}
SEQUENTIAL = "Cividis"


def confusion_matrix_figure(metrics: dict[str, Any], normalized: bool = False) -> go.Figure:
    """A heatmap of the confusion matrix, counts or row shares."""
    labels = metrics["labels"]
    counts = np.array(metrics["confusion_matrix"], dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalized else counts
    text = [[f"{v:.1%}" if normalized else f"{int(v)}" for v in row] for row in values]
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            colorscale=SEQUENTIAL,
            showscale=False,
            hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis_title="Predicted class",
        yaxis_title="True class",
        height=360,
        yaxis_autorange="reversed",
        margin=dict(l=10, r=10, t=30, b=10),
        title="Row-normalized (recall per class)" if normalized else "Counts",
    )
    return figure


def curves_figure(history: pd.DataFrame, metric: str = "accuracy", title: str = "") -> go.Figure:
    """Training and validation curves of one metric over epochs."""
    figure = go.Figure()
    for prefix, name, dash in (("", "train", "solid"), ("val_", "val", "dash")):
        column = f"{prefix}{metric}"
        if column in history and history[column].notna().any():
            figure.add_scatter(
                x=history["epoch"],
                y=history[column],
                name=f"{name} {metric}",
                mode="lines+markers",
                line=dict(color=COLORS[name], dash=dash),
            )
    figure.update_layout(
        xaxis_title="Epoch",
        yaxis_title=metric,
        height=320,
        title=title or metric.capitalize(),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


def overlaid_curves_figure(histories: dict[str, pd.DataFrame], column: str = "val_accuracy") -> go.Figure:
    """One metric's curve for several runs on one plot."""
    figure = go.Figure()
    for run_id, history in histories.items():
        if column in history:
            figure.add_scatter(x=history["epoch"], y=history[column], name=run_id, mode="lines")
    figure.update_layout(xaxis_title="Epoch", yaxis_title=column, height=360, margin=dict(l=10, r=10, t=30, b=10))
    return figure


def roc_figure(predictions: pd.DataFrame, auc: float | None) -> go.Figure:
    """The ROC curve of a run's test predictions, with its AUC."""
    points = roc_points(predictions)
    figure = go.Figure()
    figure.add_scatter(
        x=points["fpr"], y=points["tpr"], mode="lines", name="ROC (ALL positive)", line=dict(color=COLORS["train"])
    )
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="gray", dash="dot"))
    figure.update_layout(
        xaxis_title="False positive rate (HEM called ALL)",
        yaxis_title="True positive rate (ALL found)",
        height=360,
        title=f"ROC AUC {auc:.3f}" if auc is not None else "ROC",
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


def counts_figure(frame: pd.DataFrame, by: str, title: str) -> go.Figure:
    """Images per class, grouped by `by`, as bars."""
    counts = frame.groupby([by, "label"]).size().reset_index(name="images")
    figure = px.bar(
        counts,
        x=by,
        y="images",
        color="label",
        barmode="group",
        title=title,
        text="images",
        color_discrete_map=COLORS,
        pattern_shape="label",
    )
    figure.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def histogram_figure(images: dict[str, np.ndarray]) -> go.Figure:
    """Luminance histograms of the cell pixels of several versions of an image (same size); the cell is
    where the first version is not black, so the background CLAHE lifts a little is left out of all."""
    figure = go.Figure()
    cell = next(iter(images.values())).max(axis=2) > 8
    for name, image in images.items():
        luminance = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        values = luminance[cell]
        figure.add_histogram(x=values, name=name, opacity=0.6, nbinsx=64)
    figure.update_layout(
        barmode="overlay",
        xaxis_title="Luminance (0-255), cell pixels",
        yaxis_title="Pixels",
        height=300,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return figure


def calibration_figure(
    calibration: dict[str, Any], before: dict[str, Any] | None = None, temperature: float | None = None
) -> go.Figure:
    """Reliability diagram: share of ALL against mean P(ALL) per bin (marker size: images), and the diagonal;
    with `before`, the same model's curve before temperature scaling beside it."""
    figure = go.Figure()
    figure.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", line=dict(color="gray", dash="dot")
    )
    curves = [(before, "before temperature scaling", COLORS["val"]), (calibration, "this model", COLORS["train"])]
    if before:
        curves[1] = (calibration, f"after (T = {temperature:.2f})", COLORS["train"])
    for curve, name, color in curves:
        if not curve:
            continue
        counts = np.asarray(curve["count"], dtype=float)
        figure.add_scatter(
            x=curve["prob_pred"],
            y=curve["prob_true"],
            mode="lines+markers",
            name=name,
            line=dict(color=color),
            marker=dict(size=6 + 14 * np.sqrt(counts / max(1.0, counts.max()))),
            customdata=counts,
            hovertemplate="mean P(ALL) %{x:.2f}: %{y:.0%} ALL (%{customdata:.0f} images)<extra></extra>",
        )
    title = (
        f"Reliability (ECE {before['ece']:.3f} → {calibration['ece']:.3f})"
        if before
        else f"Reliability (ECE {calibration['ece']:.3f})"
    )
    figure.update_layout(
        xaxis_title="Mean predicted P(ALL) in the bin",
        yaxis_title="Share of ALL images",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        height=400,
        margin=dict(l=10, r=10, t=40, b=10),
        title=title,
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
    )
    return figure


def run_calibration_figure(metrics: dict[str, Any]) -> go.Figure:
    """A run's reliability diagram, with the curve before temperature scaling when the run fitted a temperature."""
    scaling = metrics.get("temperature_scaling") or {}
    fitted = scaling.get("temperature")
    return calibration_figure(metrics["calibration"], scaling.get("calibration_before") if fitted else None, fitted)


def sweep_heatmap(runs: pd.DataFrame, value: str, title: str, beside: str | None = None) -> go.Figure:
    """One cell per (epochs, batch size) holding `value` of the run given for it; `beside` is written next to
    it in the cell (e.g. the chosen run's test figure beside the validation figure that chose it)."""
    table = runs.pivot_table(index="batch_size", columns="epochs", values=value, aggfunc="first")
    text = table.map(lambda v: f"{v:.3f}" if v == v else "")
    if beside:
        other = runs.pivot_table(index="batch_size", columns="epochs", values=beside, aggfunc="first")
        other = other.reindex(index=table.index, columns=table.columns)
        text = text + other.map(lambda v: f"<br>test {v:.3f}" if v == v else "")
    figure = go.Figure(
        go.Heatmap(
            z=table.values,
            x=[str(c) for c in table.columns],
            y=[str(i) for i in table.index],
            colorscale=SEQUENTIAL,
            text=text.values,
            texttemplate="%{text}",
            hovertemplate="epochs %{x}, batch %{y}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis_title="Epochs", yaxis_title="Batch size", title=title, height=300, margin=dict(l=10, r=10, t=40, b=10)
    )
    return figure


def patient_dots_figure(summary: pd.DataFrame) -> go.Figure:
    """Per patient, the mean P(ALL) of its images as a dot, coloured by its true class, against the 0.5 line: a
    dot on the wrong side of the line is a patient called wrong."""
    ordered = summary.sort_values(["label", "mean_prob_all"])
    figure = go.Figure()
    for label in ("ALL", "HEM"):
        part = ordered[ordered["label"] == label]
        figure.add_scatter(
            x=part["mean_prob_all"],
            y=part["patient"].astype(str),
            mode="markers",
            name=f"true {label}",
            marker=dict(color=COLORS[label], size=11, symbol="circle" if label == "ALL" else "diamond"),
            customdata=part["images"],
            hovertemplate="%{y}: mean P(ALL) %{x:.3f} over %{customdata} images<extra></extra>",
        )
    figure.add_vline(x=0.5, line=dict(color="gray", dash="dash"), annotation_text="called ALL at 0.5 or more")
    figure.update_layout(
        xaxis=dict(title="Mean P(ALL) of the patient's images", range=[0, 1]),
        yaxis_title="Patient",
        height=max(220, 28 * len(ordered) + 80),
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return figure


def folds_strip_figure(
    table: pd.DataFrame, figures: dict[str, str], intervals: dict[str, tuple[float, float]] | None = None
) -> go.Figure:
    """A cross-validation's folds as dots per figure, with the mean as a bar and, where given, its interval."""
    figure = go.Figure()
    for name, label in figures.items():
        values = pd.to_numeric(table[name], errors="coerce").dropna()
        if values.empty:
            continue
        figure.add_scatter(
            x=values,
            y=[label] * len(values),
            mode="markers",
            name=label,
            showlegend=False,
            marker=dict(color=COLORS["train"], size=10, opacity=0.7),
            customdata=table.loc[values.index, "fold"],
            hovertemplate="fold %{customdata}: %{x:.3f}<extra></extra>",
        )
        low, high = (intervals or {}).get(name, (None, None))
        error = (
            dict(type="data", array=[high - values.mean()], arrayminus=[values.mean() - low])
            if low is not None
            else None
        )
        figure.add_scatter(
            x=[values.mean()],
            y=[label],
            mode="markers",
            showlegend=False,
            error_x=error,
            marker=dict(color=COLORS["ALL"], size=18, symbol="line-ns-open", line=dict(width=3)),
            hovertemplate=f"mean %{{x:.3f}}<extra>{label}</extra>",
        )
    figure.update_layout(
        xaxis=dict(title="Value on each fold's test patients (bar: mean)", range=[0, 1.02]),
        height=80 + 60 * len(figures),
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return figure


def road_bars_figure(methods: dict[str, dict[str, Any]]) -> go.Figure:
    """ROAD score per explanation method as bars with their standard deviation over images."""
    names = list(methods)
    means = [methods[name]["road_mean"] for name in names]
    spreads = [methods[name].get("road_std") or 0.0 for name in names]
    figure = go.Figure(
        go.Bar(
            x=[methods[name].get("computed", name) for name in names],
            y=means,
            error_y=dict(type="data", array=spreads),
            marker_color=COLORS["train"],
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        yaxis_title="ROAD (higher: more faithful; bars ± std over images)",
        height=340,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return figure
