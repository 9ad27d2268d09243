"""One self-contained HTML report per run: settings, provenance, validation and test figures with their
warnings, curves, confusion matrix, ROC, calibration, per-class and per-patient tables, a few explained
examples. Figures are plotly's own HTML; plotly.js is embedded once, so the file reads offline."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..core.errors import ImageReadError, PipelineError
from ..core.files import write_bytes_atomic
from ..evaluation.evaluate import confusion_cell, patient_summary
from ..evaluation.figures import confusion_matrix_figure, curves_figure, roc_figure, run_calibration_figure
from ..evaluation.intervals import interval_line
from ..evaluation.metrics import Metrics
from ..evaluation.other_subjects import LABEL, OtherSubjects
from ..inference.predict import Predictor
from ..runs.catalog import model_card
from ..runs.display import final_sentence, provenance, shown_path, without_paths
from ..runs.folder import RunFolder
from .pictures import explainer_of, saved_row_overlay

EXAMPLES = 4
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1F2933}table{border-collapse:collapse;"
    "margin:.5em 0}td,th{border:1px solid #ccd;padding:3px 8px;font-size:13px}.warn{background:#FFF4D6;"
    "padding:6px 10px;margin:4px 0}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:240px}"
    "figcaption{font-size:12px}"
)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, escape=True)


def _figures(figures: list[Any]) -> str:
    parts = []
    for index, figure in enumerate(figures):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0, config={"displaylogo": False}))
    return "".join(parts)


def _png(image_rgb: np.ndarray) -> str:
    data = cv2.imencode(".png", cv2.cvtColor(np.asarray(image_rgb, np.uint8), cv2.COLOR_RGB2BGR))[1].tobytes()
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


def _examples(folder: RunFolder, predictions: pd.DataFrame, hide_paths: bool = False) -> str:
    """Grad-CAM of the most confident mistakes and of correct answers, as embedded images."""

    try:
        predictor = Predictor.from_run(folder.path)
    except PipelineError as error:
        reason = without_paths(str(error)) if hide_paths else str(error)
        return f"<p>No explained examples: the model does not load ({html.escape(reason)}).</p>"
    explainer = explainer_of(predictor)
    picked = pd.concat(
        [
            confusion_cell(predictions, "ALL", "HEM").head(1),
            confusion_cell(predictions, "HEM", "ALL").head(1),
            confusion_cell(predictions, "ALL", "ALL").head(1),
            confusion_cell(predictions, "HEM", "HEM").head(1),
        ]
    ).head(EXAMPLES)
    cells = []
    for row in picked.itertuples(index=False):
        try:
            picture = saved_row_overlay(predictor, explainer, row.path, row.predicted)
        except ImageReadError:
            continue
        caption = (
            f"{html.escape(Path(row.path).name)} · {row.patient} · true {row.label}, called {row.predicted} "
            f"(P(ALL) {row.prob_all:.2f})"
        )
        cells.append(f'<figure><img width="240" src="{_png(picture)}"><figcaption>{caption}</figcaption></figure>')
    return f'<div class="grid">{"".join(cells)}</div>' if cells else "<p>No test image could be read.</p>"


def _figure_row(name: str, source: dict[str, Any], key: str) -> dict[str, Any]:
    """One figure of the report's table, with why it is undefined when it is."""
    return {
        "figure": name,
        "value": Metrics.of(source).figure(key),
        "undefined": (source.get("undefined") or {}).get(key, ""),
    }


def _figure_rows(metrics: dict[str, Any], validation: dict[str, Any]) -> list[dict[str, Any]]:
    """The validation and test figures, one row each."""
    return [
        _figure_row(f"{subset} {name}", source, key)
        for subset, source in (("validation", validation), (Metrics.of(metrics).scored_on.lower(), metrics))
        if source
        for name, key in (
            ("accuracy", "accuracy"),
            ("balanced accuracy", "balanced_accuracy"),
            ("weighted F1", "weighted_f1"),
            ("ROC AUC", "roc_auc"),
            ("MCC", "mcc"),
            ("Brier", "brier"),
        )
    ]


def _held_out(card: dict[str, Any]) -> str:
    """Whom the run held out: its validation and test patients, or (a final model) nobody, with its folds."""
    if card.get("out_of_fold"):
        return final_sentence(card["out_of_fold"])
    return (
        f"Held out: validation patients {', '.join(card['held_out'].get('val', []))}; test patients "
        f"{', '.join(card['held_out'].get('test', []))}. Runs are chosen on validation; the test subset is evaluated "
        "once."
    )


def _other_subjects(metrics: dict[str, Any], hide_paths: bool) -> list[str]:
    """The other-subject check's section: its figures in words and its cells, or a line saying there is none."""
    check = OtherSubjects.of(metrics)
    if check is None:
        return [f"<h2>On {LABEL}</h2>", "<p>Not scored on other subjects' cells (<code>pipeline check</code>).</p>"]
    lines = check.lines()
    if hide_paths:
        lines[0] = without_paths(lines[0])
    cells = pd.DataFrame(check.values.get("predictions") or [])
    return [f"<h2>On {LABEL}</h2>", *(f"<p>{html.escape(line)}</p>" for line in lines), _table(cells)]


def build_report(run_dir: str | Path, explained: bool = True, hide_paths: bool = False) -> str:
    """The report of a completed run as one HTML string; `hide_paths` (a hosted demo) names data folders without
    the server's paths."""
    folder = RunFolder(Path(run_dir))
    config, metrics, history = folder.config(), folder.metrics() or {}, folder.history()
    predictions = folder.predictions()
    card = model_card(folder)
    validation = metrics.get("validation") or {}

    rows = _figure_rows(metrics, validation)
    view = Metrics.of(metrics)
    scored_on, per_class = view.scored_on, view.per_class()
    figures = [
        curves_figure(history, "accuracy"),
        curves_figure(history, "loss"),
        confusion_matrix_figure(metrics),
        roc_figure(predictions, metrics.get("roc_auc")),
    ]
    if metrics.get("calibration"):
        figures.append(run_calibration_figure(metrics))
    warnings = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in metrics.get("warnings") or [])
    shown = {**config, "data_dir": shown_path(config.get("data_dir"), hide_paths)}
    settings = pd.DataFrame(
        [
            {"setting": key, "value": json.dumps(value) if isinstance(value, dict | list) else value}
            for key, value in shown.items()
        ]
    )
    body = [
        f"<h1>Run {html.escape(folder.run_id)}</h1>",
        "<p><b>Research tool, not a diagnostic device.</b> "
        f"{html.escape(provenance(config, hide_paths, markdown=False))}</p>",
        f"<p>{html.escape(_held_out(card))}</p>",
        warnings,
        f"<p>{scored_on} figures with 95 % intervals: "
        f"{html.escape(interval_line(card.get('intervals')) or 'none')}.</p>",
        "<h2>Figures</h2>",
        _table(pd.DataFrame(rows)),
        f"<h2>Per class ({scored_on.lower()})</h2>",
        _table(per_class),
        *_other_subjects(metrics, hide_paths),
        "<h2>Curves, confusion matrix, ROC, calibration</h2>",
        _figures(figures),
        "<h2>Per patient (test)</h2>",
        _table(patient_summary(predictions)),
    ]
    if explained:
        body += ["<h2>Explained examples (Grad-CAM)</h2>", _examples(folder, predictions, hide_paths)]
    body += ["<h2>Settings and provenance</h2>", _table(settings)]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run {html.escape(folder.run_id)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(run_dir: str | Path, out: Path | None = None) -> Path:
    """`report.html` in the run folder (or `out`), written atomically."""

    folder = RunFolder(Path(run_dir))
    target = Path(out) if out else folder.report_path
    write_bytes_atomic(target, build_report(run_dir).encode())
    return target
