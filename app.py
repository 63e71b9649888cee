"""MoTHer Explorer: recover a model family tree from weights and explore it.

Run with ``streamlit run app.py``. This is the home page: pick a model set in the sidebar (a demo set is
picked and recovered at once), see the tree at a glance, then use the pages on the left. Fully offline.

Operator settings (environment variables):

* ``MOTHER_BROWSE_ROOTS``: folders users may browse for models and result files, ``os.pathsep``-
  separated. Default: the project's ``assets/`` only (safe for a shared server).
* ``HF_HUB_CACHE``: the Hugging Face cache to scan (default ``~/.cache/huggingface/hub``); read-only.
* ``MOTHER_DEMO_ROOT`` / ``MOTHER_DEFAULT_DEMO``: where demo sets live (``assets/demo``) / which is
  picked first.
"""

import streamlit as st

# Draw the heading before importing the engine (torch takes seconds on a cold start).
st.set_page_config(page_title="MoTHer Explorer", page_icon="🌳", layout="wide")
st.title("MoTHer Explorer")
st.caption("Which model was fine-tuned from which? Recovered from the weights alone "
           "(distance places the edges; kurtosis and norm growth orient them).")

from explorer_ui import views  # noqa: E402

ctx = views.page("Home")

st.subheader(f"{ctx.model_set.label}")
views.summary(ctx)
if ctx.model_set.kind == "preset" and "_preset_view" in st.session_state:
    with st.expander("About this family"):
        views.preset_info(*st.session_state["_preset_view"])
views.tree(ctx, height=520, inline_library=True)  # the cold path: no second request
views.least_confident(ctx)
st.markdown("Next: **Tree** to inspect an edge, **Edge** to correct it, **Lineage** for declared vs "
            "recovered parents, **Export** for GraphML / Newick / `base_model:` lines.")
