"""The typed lineage graph around the fine-tune forest (docs/RELATIONS.md).

The detectors (:mod:`mother_core.relations`) decide the near-exact relations first; this module
turns them into what the forest solver understands and back:

- :func:`solver_constraints`: every typed child's (first) parent is a forced edge; copies, quantized
  models and unmerged adapters cannot parent anything in the fine-tune forest (their original, source
  or base stands for them), nor can merges (merges are not hubs, see :data:`LEAF_RELATIONS`);
- :func:`apply_relations`: the solved forest's edges get their relation, detail and confidence; a
  merge gets one more edge per further parent, with its weight.

The links and the forest edges' labels live in the :class:`~mother_core.recovery.problem.RecoveryProblem`
(``typed_links`` and ``edge_labels`` in result.json's ``extra``), so
:func:`~mother_core.recovery.recover.resolve` keeps them without weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from mother_core.recovery.problem import RecoveryProblem, edge_label_key
from mother_core.recovery.result import Edge, Recovery
from mother_core.relations.evidence import TypedLink
from mother_core.relations.stack import stacked
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Relations whose child is never a parent in the fine-tune forest. A merge sits between its parents
#: (closer to each than they are to their own parent, and with a smaller norm), so in the forest it
#: would parent its parents' relatives; it parents nothing there. Known cost: a model fine-tuned from a
#: merge is placed under the merge's nearest relative instead (typed children, e.g. a quantized copy
#: of the merge, still attach to it). A layer-stacking merge (:func:`.stack.stacked`) is deeper than its
#: parents and sits between nothing: it may parent models of its own layout (its fine-tunes), and never
#: one lacking a tensor it holds (:func:`mother_core.relations.stack.shallower_than`).
LEAF_RELATIONS = (Relation.CONVERT, Relation.QUANTIZED, Relation.ADAPTER, Relation.MERGE)


def join_linked_trees(labels: np.ndarray, links: Sequence[TypedLink]) -> np.ndarray:
    """``labels`` with every two trees that a typed link joins (a child in one, a parent in the other)
    made one tree; the labels are unchanged where no link crosses trees.

    The conversion, quantization and adapter detectors look for a child's source across the whole set,
    while the forest is cut by distance alone: an adapter's base or a quantized model's source can land
    in another tree than its child. The forest solver forces the link's edge, so the two trees must be
    one (left apart, the child's tree has no allowed root: a ConstraintError on a typed set made
    elsewhere, profile C seed 65).
    """
    k = int(labels.max()) + 1 if len(labels) else 0
    pairs = [(int(labels[link.child]), int(labels[p])) for link in links for p in link.parents]
    if not pairs or all(a == b for a, b in pairs):
        return labels
    rows, cols = zip(*pairs)
    graph = csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(k, k))
    _, component = connected_components(graph, directed=False)  # numbered by each's lowest tree
    _, relabelled = np.unique(component[labels], return_inverse=True)
    return relabelled.astype(labels.dtype)


def links_of(problem: RecoveryProblem | None) -> list[TypedLink]:
    """The typed links a recovery problem carries."""
    return [] if problem is None else [TypedLink.from_dict(dict(d)) for d in problem.links]


def solver_constraints(links: list[TypedLink], user_forced_children: set[int]) -> tuple[
        list[tuple[int, int]], list[tuple[int, int]], set[int]]:
    """(forced edges, forbidden edges, models that parent nothing) for the forest solver.

    A child the user forced a parent for keeps the user's choice (no typed forced edge).
    """
    forced, forbidden, leaves = [], [], set()
    for link in links:
        if link.child not in user_forced_children:
            forced.append((link.parents[0], link.child))
        if link.relation in LEAF_RELATIONS and not stacked(link):
            leaves.add(link.child)
        if link.relation is Relation.MERGE:
            forbidden += [(link.child, p) for p in link.parents]
    return forced, forbidden, leaves


def refinement_core(stats: WeightStatistics, members: np.ndarray, typed: set[int],
                    partial: frozenset[int] = frozenset()) -> np.ndarray:
    """The models of one tree whose squared distances the additivity refinement fits
    (:mod:`mother_core.recovery.additive`): its fine-tune skeleton, without the typed children
    (copies, quantized models, adapters and merges keep the parents their detectors gave them) and
    without the models that lack a tensor slot (name and shape) most of the skeleton holds (a pruned
    or distilled child, whose tensors are narrower). Both would otherwise take layers out of every
    pair's distance: the refinement uses only the layers every model of the fit holds, and a quantized
    copy whose reader leaves some matrices out, or a pruned child with narrower ones, would leave it a
    few norms and biases. They stay where the arborescence placed them.

    The test is on the slots most models hold, not on the whole layout: fine-tunes of one backbone
    for different tasks each carry their own classification head (a slot of another shape, held by a
    few models), which the refinement leaves out anyway (:func:`.additive.squared_distances`); a
    whole-layout match would keep only the largest group of same-head models (the demo vit-tree: 5 of
    its 13).

    ``partial`` (merged LoRAs, :func:`mother_core.relations.detect._partial_pairs`) leave the fit
    only where they are fewer than half of the skeleton: one merged LoRA among full fine-tunes stays
    where the arborescence placed it, but a tree whose models are all merged LoRAs is a fine-tune tree
    of low-rank updates, which add up as full ones do (excluding them left the generalise collection
    held-lora unrefined: 85% directed against 100%).
    """
    skeleton = np.array([int(g) for g in members if int(g) not in typed], dtype=int)
    low_rank = [int(g) for g in skeleton if int(g) in partial]
    if 2 * len(low_rank) < len(skeleton):  # a tree of merged LoRAs is fitted whole (see above)
        skeleton = np.array([int(g) for g in skeleton if int(g) not in partial], dtype=int)
    if not len(skeleton):
        return skeleton
    present = stats.present[skeleton].astype(bool)
    common = 2 * present.sum(axis=0) > len(skeleton)  # the slots most of the skeleton holds
    return skeleton[present[:, common].all(axis=1)]


def lora_without_its_update(links: Sequence[TypedLink], distance: np.ndarray,
                            linked: AbstractSet[int]) -> list[tuple[int, int]]:
    """(merged LoRA, model) pairs where the model is not the merged LoRA's child: it is nearer the LoRA's
    base than the LoRA itself, so it does not carry the LoRA's update.

    A merged LoRA ``L`` is its base ``p`` plus a low-rank update ``B·A`` on the targeted layers, and equal
    to ``p`` elsewhere (:func:`mother_core.relations.detect.lora_links`). A model trained from ``L`` starts
    from ``p + B·A``: on the layers where ``L`` and ``p`` are equal both are equally far from it, and on
    the targeted ones it holds ``B·A`` plus its own update, so it lies nearer ``L`` unless its training
    undid more than half of ``B·A``. A model nearer ``p`` than ``L`` (``distance`` counts only the
    targeted layers' difference between the two) is one trained beside the LoRA, from ``p``; the cues
    that may still favour ``L`` (kurtosis, norm growth) differ from ``p``'s only by the LoRA's rank-r
    update, which says nothing about the model. Profile C seed 21: a fine-tune of the root 0.00192 from
    it and 0.00198 from the root's merged LoRA was hung under the LoRA by the direction penalty.

    ``linked`` (typed children: their parent is the detector's, a forced edge) are never returned, nor is
    the base itself (``L``'s own parent).
    """
    out: list[tuple[int, int]] = []
    for link in links:
        if link.relation is not Relation.LORA or not link.parents:
            continue
        lora, base = link.child, link.parents[0]
        nearer_base = np.flatnonzero(distance[base] < distance[lora])
        out += [(lora, int(c)) for c in nearer_base if int(c) not in linked and int(c) not in (lora, base)]
    return out


def block_leaves(cost: np.ndarray, leaves: set[int]) -> np.ndarray:
    """``cost`` with the rows of ``leaves`` infinite: they parent nothing."""
    out = cost.copy()
    for i in leaves:
        out[i, :] = np.inf
    return out


def apply_relations(recovery: Recovery) -> Recovery:
    """Type every edge of a solved forest and add the further parents of merges."""
    links = {link.child: link for link in links_of(recovery.problem)}
    labels = {} if recovery.problem is None else recovery.problem.edge_labels
    ids = recovery.model_ids
    dist = recovery.distance_matrix
    index = {m: i for i, m in enumerate(ids)}
    edges: list[Edge] = []
    for e in recovery.edges:
        c = index[e.child]
        link = links.get(c)
        if link is not None and ids[link.parents[0]] == e.parent:
            weight = link.weights[0] if link.weights else None
            # The relation's confidence is the link's (for a merge: that the child is one); each edge's own is its
            # parent's (a merge parent another relative can take the place of reads lower: merge.contest_parents).
            rel_conf, conf = link.confidence, link.confidence_of(0)
            edges.append(replace(e, relation=link.relation.value, relation_detail=link.detail,
                                 relation_confidence=rel_conf, merge_weight=weight, confidence=conf,
                                 placement_confidence=conf, direction_confidence=max(conf, e.direction_confidence)
                                 if link.relation is Relation.MERGE else conf, parent_note=link.note_of(0)))
            for k, p in enumerate(link.parents[1:], start=1):
                d = float(dist[p, c]) if dist is not None else math.nan
                conf = link.confidence_of(k)
                edges.append(Edge(parent=ids[p], child=e.child, distance=d, confidence=conf,
                                  placement_confidence=conf, direction_confidence=conf,
                                  relation=link.relation.value, relation_detail=link.detail,
                                  relation_confidence=rel_conf, merge_weight=link.weights[k] if link.weights else None,
                                  parent_note=link.note_of(k)))
            continue
        label = labels.get(edge_label_key(e.parent, e.child))
        if label is not None:
            edges.append(replace(e, relation=label[0], relation_detail=label[1],
                                 relation_confidence=float(label[2]) if label[2] is not None else math.nan))
        else:
            edges.append(replace(e, relation=Relation.FINETUNE.value, relation_detail="",
                                 relation_confidence=math.nan, merge_weight=None))
    return replace(recovery, edges=edges)
