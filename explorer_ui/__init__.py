"""Streamlit-only helpers of MoTHer Explorer (the engine, ``mother_core``, never imports streamlit).

* :mod:`explorer_ui.sources`: where model sets come from (demo sets, browse roots, result files).
* :mod:`explorer_ui.engine`: cached wrappers around engine calls (with live progress).
* :mod:`explorer_ui.sidebar`: the shared sidebar and :func:`~explorer_ui.sidebar.page`, which every page
  calls first.
* :mod:`explorer_ui.state`: the one owner of ``st.session_state`` (selection, constraints, graph view).
* :mod:`explorer_ui.views`: rendering blocks shared by pages.
* :mod:`explorer_ui.graph`: the tree as a pyvis network (folding, layouts, colours, legend);
  :mod:`explorer_ui.graph_component`: the two-way component that draws it (clicks reach Python).
* :mod:`explorer_ui.plots`, :mod:`explorer_ui.slides`: plotly figures; the tree as a PNG/PDF/SVG slide.
"""
