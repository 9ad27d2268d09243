"""The self-contained HTML report of a run."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_report_is_one_offline_html_file_with_explained_examples(finished_run: Path) -> None:
    from pipeline.explain.report import write_report

    path = write_report(finished_run)
    text = path.read_text()
    assert path == finished_run / "report.html"
    assert text.count("Plotly.newPlot") >= 4 and not re.search(r"<script[^>]*src=", text), "reads offline"
    assert text.count("data:image/png;base64,") >= 1 and "Per patient" in text and "Held out" in text
