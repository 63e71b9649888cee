"""The recovered tree beside its ranked edge table; the selected model's card or edge's evidence below.

Everything below the heading is one fragment (``st.fragment``): a click in the tree or the table reruns
it alone, not the sidebar (which reloads nothing but costs 0.3-0.4 s of widgets per run under load).
"""

import streamlit as st

from explorer_ui import views

ctx = views.page("Tree", heading="Tree")


@st.fragment
def body(ctx: views.Loaded) -> None:
    left, right = st.columns([3, 2])
    with left:
        views.tree(ctx, height=600, where="tree", aspect=1.2)
    with right:
        st.markdown("**Edges, least confident first** — pick one (or click a row, or an edge in the tree)")
        views.edge_picker(ctx, height=430, default_first=False)
    views.selection_panel(ctx)


body(ctx)
