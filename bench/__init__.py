"""The project's benchmark: `python -m bench [--quick] [--json PATH]`."""
