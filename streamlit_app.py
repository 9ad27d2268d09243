"""ALL vs HEM dashboard: page config, navigation over pages/, the shared sidebar; a hosted demo serves the released
model (or the host's), and only without either trains a demo model once per server, whatever visitors do."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: its start-up chatter hides ours

import streamlit as st  # noqa: E402 - after the line above

from pages.common.frame import THROUGH_THE_APP, app_pages
from pages.common.settings import configured_model, demo_mode, released_model, runs_dir
from pages.common.widgets import sidebar
from pipeline.core.config import EMBEDDED_SAMPLE
from pipeline.data.decode import quiet_opencv
from pipeline.training.launch import launch_demo_model


def _keep_keras_session() -> None:
    """Streamlit calls `keras.backend.clear_session()` after every script run, for apps that build models per run;
    that also empties TensorFlow's kernel cache, so the next model call re-instantiates its kernels (released model,
    prediction with Grad-CAM: 0.06 s warm, 0.50 s after a reset; more for B3). The dashboard keeps its models in
    `st.cache_resource` and never needs the reset: this entry point, which owns the process, switches it off once
    Keras is loaded (the run that loads it ends with one reset)."""
    if "keras" in sys.modules:  # loaded already: importing it costs nothing
        import keras

        keras.backend.clear_session = lambda *args, **kwargs: None


_keep_keras_session()
quiet_opencv()  # an upload that does not decode is named on the page; OpenCV's own line names no file
st.set_page_config(page_title="ALL vs HEM · C-NMC cell classifier", page_icon=":material/biotech:", layout="wide")


@st.cache_resource(show_spinner=False)
def _demo_model_started() -> bool:
    """Once per server process: prepare the demo model on the embedded real sample if there is no run yet."""
    return launch_demo_model(str(EMBEDDED_SAMPLE), runs_dir()) is not None


if demo_mode() and not configured_model() and not released_model():  # with a model to serve, train none
    _demo_model_started()

navigation = st.navigation(app_pages())
sidebar()
st.session_state[THROUGH_THE_APP] = True  # the pages check it: opened by their address, they come back through here
navigation.run()
