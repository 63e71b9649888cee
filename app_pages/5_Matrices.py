"""Matrices: distances between all models (ordered by tree), kurtosis per model, and the models."""

import streamlit as st

from explorer_ui import plots, views

ctx = views.page("Matrices", heading="Matrices")

rec = ctx.rec
st.plotly_chart(plots.distance_heatmap(rec), key=f"heat_{ctx.key}")
if note := plots.distance_note(rec):
    st.caption(note)
st.plotly_chart(plots.kurtosis_models(rec), key=f"kmod_{ctx.key}")
st.subheader("Models")
st.dataframe(views.declared_frame(views.model_rows(rec)), hide_index=True, width="stretch")
