"""Home: pick a model set in the sidebar (a demo set is picked and recovered at once), see the tree, click
through it (a model opens its card, an edge its evidence), then use the other pages."""

import streamlit as st

# Draw the heading before importing the engine (torch takes seconds on a cold start).
st.title("MoTHer Explorer")
st.caption("Which model was fine-tuned from which? Recovered from the weights alone "
           "(distance places the edges; kurtosis and norm growth orient them).")

from explorer_ui import views
from explorer_ui.safe_text import md

ctx = views.page("Home")

st.subheader(md(ctx.model_set.label))
views.summary(ctx)
if ctx.model_set.kind == "preset":
    views.about_preset()

# A click in the tree reruns only the tree and its selection (nested fragments), not this page.
views.explore(ctx, where="home", height=520)
views.least_confident(ctx)
st.markdown("Next: **Tree** to inspect an edge, **Edge** to correct it, **Declared vs recovered** for "
            "declared parents, **Export** for GraphML / Newick / `base_model:` lines and slides.")
