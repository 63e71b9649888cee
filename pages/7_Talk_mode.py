"""Talk mode: large fonts and a clean, full-width tree for presenting."""

import streamlit as st

from explorer_ui import views

ctx = views.page("Talk mode", talk=True)

st.title(ctx.model_set.label)
n_trees = len(ctx.rec.trees) or len(ctx.rec.roots)
st.markdown(f"{len(ctx.rec.models)} models · {len(ctx.rec.edges)} recovered edges · {n_trees} tree(s)"
            + (f" · compared with the {ctx.reference}" if ctx.reference else ""))
views.tree(ctx, height=780, font_size=24)
