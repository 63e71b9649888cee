"""Talk mode: a dark, full-width tree in large type for a projector; arrow keys step through the least
confident edges (each one's confidence and best alternative shown below the tree)."""

import streamlit as st

st.set_page_config(initial_sidebar_state="collapsed")

from explorer_ui import views

ctx = views.page("Talk mode", talk=True)
views.talk(ctx)
