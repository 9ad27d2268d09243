"""Streamlit glue shared by the pages: `settings` (where things are, demo mode), `loaders` (cached data,
models and tables) and `widgets` (sidebar, messages, live progress). All the work is in `pipeline`."""
