"""MoTHer Explorer: recover a model family tree from weights and explore it.

Run with ``streamlit run app.py`` and open http://localhost:8501 (the server only listens on this
machine; see ``.streamlit/config.toml``). This file names the pages (``st.navigation``); the home page
is ``app_pages/home.py``. Fully offline.

Operator settings (environment variables):

* ``MOTHER_BROWSE_ROOTS``: folders users may browse for models and result files, ``os.pathsep``-
  separated. Default: the project's ``assets/`` only (safe for a shared server).
* ``HF_HUB_CACHE``: the Hugging Face cache to scan (default ``~/.cache/huggingface/hub``); read-only.
* ``MOTHER_DEMO_ROOT`` / ``MOTHER_DEFAULT_DEMO``: where demo sets live (``assets/demo``) / which is
  picked first.
* ``MOTHER_WARM_DEMOS=0``: do not recover the other demo sets in the background once one is shown.
"""

import streamlit as st

st.set_page_config(page_title="MoTHer Explorer", page_icon="🌳", layout="wide")
st.navigation([
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/1_Tree.py", url_path="tree", title="Tree", icon=":material/account_tree:"),
    st.Page("app_pages/2_Edge.py", url_path="edge", title="Edge", icon=":material/search:"),
    st.Page("app_pages/3_Lineage.py", url_path="lineage", title="Declared vs recovered",
            icon=":material/compare_arrows:"),
    st.Page("app_pages/4_Ambiguous.py", url_path="ambiguous", title="Ambiguous edges", icon=":material/help:"),
    st.Page("app_pages/5_Matrices.py", url_path="matrices", title="Matrices", icon=":material/grid_on:"),
    st.Page("app_pages/6_Export.py", url_path="export", title="Export", icon=":material/download:"),
    st.Page("app_pages/7_Talk_mode.py", url_path="talk", title="Talk mode", icon=":material/slideshow:"),
]).run()
