"""ALL vs HEM dashboard: page config, navigation over pages/, the shared sidebar, demo data on first start."""

import streamlit as st

from pages.common.settings import DEMO_DATA_DIR, data_dir
from pages.common.widgets import sidebar
from pipeline.synthetic import ensure_demo_data

st.set_page_config(page_title="ALL vs HEM · C-NMC cell classifier", page_icon=":material/biotech:", layout="wide")

if data_dir() == str(DEMO_DATA_DIR) and not (DEMO_DATA_DIR / "SYNTHETIC.json").is_file():
    with st.status("First start: generating the synthetic demo data set…", expanded=True) as status:
        bar = st.progress(0.0, text="Drawing synthetic cells")
        ensure_demo_data(DEMO_DATA_DIR, progress=lambda fraction: bar.progress(fraction, text="Drawing cells"))
        status.update(label="Demo data ready.", state="complete", expanded=False)

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/results.py", title="Results", icon=":material/insights:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/biotech:"),
])
sidebar()
navigation.run()
