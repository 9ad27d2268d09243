"""The command-line reference (`docs/cli.md`), written from the argument parser itself so it cannot drift:
`python -m pipeline.cli.reference > docs/cli.md` rewrites it, and a test checks it is current."""

from __future__ import annotations

import argparse
import os


def reference_markdown() -> str:
    """Every command's `--help`, in Markdown, in the parser's order."""
    from . import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "120"  # argparse wraps at the terminal's width: fixed, so the text is the same anywhere
    try:
        return _reference(build_parser())
    finally:  # the process's environment as it was
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def _reference(parser: argparse.ArgumentParser) -> str:
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    parts = [
        "# Command-line reference",
        "",
        "Generated from the argument parser (`python -m pipeline.cli.reference > docs/cli.md`); every command "
        "also answers `--help`. `cnmc` is the same as `python -m pipeline` once the package is installed. Back "
        "to the [README](../README.md); examples are in the [user guide](user-guide.md).",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, subparser in commands.choices.items():
        parts += ["", f"## {name}", "", "```text", subparser.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
