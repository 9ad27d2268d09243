"""The app's pages, and the one door into them: streamlit_app.py (page config, sidebar, the released model)."""

import streamlit as st

from pages.common.settings import demo_mode

THROUGH_THE_APP = "entered_through_streamlit_app"
"""Set by streamlit_app.py in every run, before it runs the page."""


def app_pages() -> list:
    """The pages in the navigation, Home first; a hosted demo has no Train page (it trains nothing)."""
    pages = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/results.py", title="Results", icon=":material/insights:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/biotech:"),
    ]
    return [page for page in pages if not (demo_mode() and page.title == "Train")]


def through_the_app() -> None:
    """Run this page through streamlit_app.py. A fresh server that has a `pages/` folder serves a page opened by
    its address (say /predict) straight from its file, with Streamlit's own navigation and without the app's
    frame, until some session runs `st.navigation`; this page then declares the app's navigation itself (after
    which Streamlit ignores the folder, for every session) and runs again, through the app."""
    if not st.session_state.get(THROUGH_THE_APP):
        st.navigation(app_pages(), position="hidden")
        st.rerun()
