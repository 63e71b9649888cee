"""Ambiguous edges: every edge ranked by confidence, lowest first, with its best alternative."""

import streamlit as st

from explorer_ui import views

ctx = views.page("Ambiguous edges", heading="Ambiguous edges",
           caption="Least confident first. *Extra cost* is how much worse the best alternative parent is: "
           "near zero means the data barely prefers the recovered parent; below zero, that parent is "
           "closer pairwise but the whole tree fits the measured distances better with this one "
           "(refinement by additivity).")

df = views.edge_table(ctx.key, tuple(sorted(ctx.statuses.items())), ctx.rec)
if df.empty:
    st.info("No edges to rank.")
    st.stop()
st.dataframe(df, hide_index=True, width="stretch",
             column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0.0,
                                                                          max_value=1.0, format="%.2f")})
weak = df[df["confidence"].fillna(0) < 0.5]
st.markdown(f"**{len(weak)}** of {len(df)} edges have confidence below 0.5.")
