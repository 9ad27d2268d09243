"""The docs a newcomer reads stay short and true: the README fits a screen or three and links every guide, the
command-line reference is the parser's own help, and every relative link points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.cli.reference import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ("user-guide.md", "cli.md", "methods.md", "hosting.md", "architecture.md", "contributing.md")


def test_the_readme_is_short_and_links_every_guide_and_its_two_commands_are_cis() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for guide in GUIDES:
        assert f"(docs/{guide})" in readme, f"the README links docs/{guide}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements.txt -r requirements-dev.txt && python -m pytest" in readme
    assert "readme_command test" in ci and "-m venv" in ci, "CI runs the README's own command in a fresh environment"
    assert "streamlit run streamlit_app.py" in readme.split("## ")[1], "the dashboard's command on the first screen"


def test_the_cli_reference_is_current() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == reference_markdown(), (
        "regenerate it: python -m pipeline.cli.reference > docs/cli.md"
    )


def test_every_relative_link_of_the_docs_points_at_a_file() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links {target}, which does not exist"
