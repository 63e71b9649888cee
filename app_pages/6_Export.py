"""Export the recovered tree: result JSON, GraphML, Newick, base_model lines, a slide (PNG, PDF, SVG with
its legend) and an interactive page that opens offline."""

import streamlit as st

from explorer_ui import slides, state, views
from explorer_ui.safe_text import md
from mother_core.export import newick_unreadable_note

ctx = views.page("Export", heading="Export")

rec, stem = ctx.rec, ctx.model_set.label.replace(" ", "_").replace("/", "_")
files = views.export_files(ctx.key, rec)
for i, (what, suffix, data, mime) in enumerate(files):
    st.download_button(f"⬇ {what}", data, file_name=f"{stem}.{suffix}", mime=mime, key=f"dl_{i}")
if note := newick_unreadable_note(rec):  # ids no Newick label carries through the `newick` package
    st.warning(md(f"Newick: {note}"))

st.subheader("Slide")
st.caption("16:9, with the legend, drawn as the Tree page shows it (layout, branch length, colours, "
           "folded subtrees). With layout *auto*, the slide and the interactive page draw the tree top-down or "
           "left to right as their own size fits, as the Tree page does for your window.")
fmt = st.radio("Format", list(slides.FORMATS), horizontal=True, key="slide_format",
               format_func=lambda f: f.upper())
view, statuses = state.graph_view(), views.st_key(ctx.statuses)
slide = views.slide(ctx.key, statuses, ctx.reference, view, fmt, ctx.model_set.label, rec)
st.download_button(f"⬇ Tree slide ({fmt.upper()})", slide, file_name=f"{stem}.{fmt}", mime=slides.FORMATS[fmt],
                   key="dl_slide")
st.download_button("⬇ Interactive tree (HTML, opens offline)", views.tree_page(
    ctx.key, statuses, ctx.reference, view, rec), file_name=f"{stem}.html", mime="text/html", key="dl_html")

# The preview under its download buttons: below the base_model lines (three lines a model) it was
# 2,500 px down the page on the typed demo.
st.subheader("Preview")
st.image(views.slide(ctx.key, statuses, ctx.reference, view, "png", ctx.model_set.label, rec))
st.subheader("Suggested base_model: lines")
st.code(files[3][2] or "(no edges)", language="yaml")
