"""Ambiguous edges: every edge ranked by confidence, lowest first, with its best alternative; a row opens
the edge on the Edge page."""

from explorer_ui import views

ctx = views.page("Ambiguous edges", heading="Ambiguous edges",
                 caption="Least confident first. *Extra cost* is how much worse the best alternative parent is: "
                 "near zero means the data barely prefers the recovered parent; below zero, that parent is "
                 "closer pairwise but the whole tree fits the measured distances better with this one "
                 "(refinement by additivity).")
views.ambiguous_table(ctx)
