"""The recovered tree beside its ranked edge table; the selected edge's evidence below."""

import streamlit as st

from explorer_ui import views

ctx = views.page("Tree", heading="Tree")

left, right = st.columns([3, 2])
with right:
    st.markdown("**Edges, least confident first** — pick one (or click a row)")
    edge = views.edge_picker(ctx, height=380)
with left:
    find = st.selectbox("Find a model", ["—"] + sorted(ctx.rec.model_ids), key="find_model")
    views.tree(ctx, height=560, highlight=None if find == "—" else find, aspect=1.2)

if edge is not None:
    st.subheader(f"Edge {views.label(edge)}")
    views.edge_evidence(ctx, edge, full=False)
    st.page_link("pages/2_Edge.py", label="All evidence, and flip / force / forbid this edge →")
