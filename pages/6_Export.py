"""Export the recovered tree: result JSON, GraphML, Newick, base_model lines, and an SVG for slides."""

import json

import streamlit as st

from explorer_ui import svg, views
from mother_core import export

ctx = views.page("Export", heading="Export")

rec, stem = ctx.rec, ctx.model_set.label.replace(" ", "_")
files = [
    ("Result (JSON, reload it here or in the CLI)", f"{stem}.result.json",
     json.dumps(rec.to_dict(), indent=1, allow_nan=False), "application/json"),
    ("GraphML (Gephi, yEd, networkx)", f"{stem}.graphml", export.to_graphml(rec), "application/xml"),
    ("Newick (phylogenetics tools)", f"{stem}.nwk", export.to_newick(rec), "text/plain"),
    ("Suggested base_model: lines for model cards", f"{stem}.base_model.txt", export.base_model_lines(rec),
     "text/plain"),
    ("Tree image for slides (SVG)", f"{stem}.svg", svg.tree_svg(rec, ctx.statuses, ctx.model_set.label),
     "image/svg+xml"),
]
for i, (what, name, data, mime) in enumerate(files):
    st.download_button(f"⬇ {what}", data, file_name=name, mime=mime, key=f"dl_{i}")

st.subheader("Suggested base_model: lines")
st.code(files[3][2] or "(no edges)", language="yaml")
st.subheader("Preview of the SVG")
st.image(files[4][2], caption=files[4][1])
