"""Declared vs recovered lineage: the two trees side by side, the disagreements listed and clickable."""

import streamlit as st

from explorer_ui import views
from explorer_ui.safe_text import md
from mother_core.lineage import findings
from mother_core.statuses import DECLARED_STATUSES

ctx = views.page("Declared vs recovered", heading="Declared vs recovered",
                 caption="Declared parent: `base_model:` in the model card or the config. Recovered parent: "
                 "from the weights.")

rows = views.lineage_rows(ctx.key, ctx.rec)[0]
counts = {str(s): sum(r.status == s for r in rows) for s in DECLARED_STATUSES}
cols = st.columns(4)
for col, (status, n) in zip(cols, counts.items()):
    col.metric(f"{views.STATUS_ICON[status]} {status}", n)

found = findings(rows)
for f in found:
    st.warning(md(f))
if not found and not any(r.declared_parent for r in rows):
    st.info("No model in this set declares a parent, so there is nothing to check: every recovered "
            "edge is undocumented.")

views.lineage_diff(ctx)
views.selection_panel(ctx)
with st.expander("Every model"):
    st.dataframe(views.lineage_frame(rows), hide_index=True, width="stretch")
if ctx.truth and ctx.reference != "declared lineage":
    st.caption(f"The tree page compares against the {ctx.reference}; with no truth, it compares against "
               "this declared lineage.")
