"""One edge in depth: all its evidence, and controls to flip, force or forbid it and re-solve."""

import streamlit as st

from explorer_ui import views

ctx = views.page("Edge", heading="Edge")

views.what_changed(ctx)
edge = views.edge_picker(ctx)
if edge is None:
    st.stop()

views.edge_evidence(ctx, edge, full=True)
st.subheader("Correct the tree")
st.caption("Constraints re-solve the tree from the cached distance and cost matrices (no weights are re-read).")
views.constraint_controls(ctx, edge)
views.tree_on_demand(ctx, "The tree with your constraints", height=420, where="edge")
