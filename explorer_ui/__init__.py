"""Streamlit-only helpers of MoTHer Explorer (the engine, ``mother_core``, never imports streamlit).

* :mod:`explorer_ui.sources`: where model sets come from (demo sets, browse roots, result files).
* :mod:`explorer_ui.engine`: cached wrappers around engine calls (with live progress).
* :mod:`explorer_ui.sidebar`: the shared sidebar and :func:`~explorer_ui.sidebar.page`, which every page
  calls first.
* :mod:`explorer_ui.views`: rendering blocks shared by pages.
* :mod:`explorer_ui.graph`, :mod:`explorer_ui.plots`, :mod:`explorer_ui.svg`: the tree (pyvis, offline),
  plotly figures, a static SVG for slides.
"""
