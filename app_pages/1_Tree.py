"""The recovered tree with the selected model's card or edge's evidence beside it; the ranked edge table
below.

The body is two nested fragments (:func:`explorer_ui.views.explore`): a click in the tree reruns only the
tree and the selection panel; a control, the edge search or a table row reruns the body, never the sidebar
(which reloads nothing but costs 0.3-0.4 s of widgets per run under load).
"""

from explorer_ui import views

ctx = views.page("Tree", heading="Tree")
views.explore(ctx, where="tree", height=600, aspect=1.2, table=True, table_height=430, overview=True)
