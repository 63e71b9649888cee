"""Declared vs recovered lineage: does each model's stated base model match its weights?"""

import pandas as pd
import streamlit as st

from explorer_ui.safe_text import md
from explorer_ui import views
from mother_core.lineage import compare_declared, findings

ctx = views.page("Lineage", heading="Declared vs recovered",
           caption="Declared parent: `base_model:` in the model card or the config. Recovered parent: from "
           "the weights.")

rows = compare_declared(ctx.rec)
counts = {s: sum(r.status == s for r in rows) for s in ("agree", "conflict", "undocumented", "external")}
cols = st.columns(4)
for col, (status, n) in zip(cols, counts.items()):
    col.metric(f"{views.STATUS_ICON[status]} {status}", n)

found = findings(rows)
if found:
    st.subheader("Findings")
    for f in found:
        st.warning(md(f))
elif not any(r.declared_parent for r in rows):
    st.info("No model in this set declares a parent, so there is nothing to check: every recovered "
            "edge is undocumented.")
else:
    st.success("No conflicts: every declared parent matches the weights.")

st.dataframe(pd.DataFrame([{"model": r.model, "status": f"{views.STATUS_ICON[r.status]} {r.status}",
                            "declared parent": r.declared_parent or "", "recovered parent": r.recovered_parent
                            or "(root)", "note": r.note} for r in rows]), hide_index=True,
             width="stretch")
if ctx.truth and ctx.reference != "declared lineage":
    st.caption(f"The tree page compares against the {ctx.reference}; with no truth, it compares against "
               "this declared lineage.")
