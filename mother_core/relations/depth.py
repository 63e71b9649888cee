"""A depth-pruned child's parent: the deeper relative whose layers it kept (docs/RELATIONS.md, "Pruned
children").

Depth pruning (ShortGPT, Minitron's depth axis, "the unreasonable ineffectiveness of the deeper layers", the
typed zoo's ``distill``) builds a model with fewer layers and loads a subset of its parent's layers into it,
renumbered: the parent's layers ``0, 2, 3`` become the child's ``0, 1, 2``; then trains it (a distillation
loss or plain fine-tuning). The streaming pass compares tensors of one name, so such a child's layer ``1``
is compared with its parent's layer ``1``, another layer: unless only the last layers were dropped, it sits
at the distance of unrelated weights from its parent on most layers, its tree is split off and it comes out
a root (typed profile S seeds 400 and 402: layer 1 of 4 dropped).

This is a second, bounded look at the weights, as :mod:`.stack` takes for the converse case (a deeper child
made of shallower models' layers): each model holding fewer layers of a block (``model.layers.N``) than
relatives of the same layer kinds has its layers compared with every layer of the :data:`CANDIDATES`
deeper relatives whose layer norms could match, on the matrices of equal shape (a child pruned in width too
keeps its attention's shapes), sampled as :mod:`.stack` samples them. The order-preserving map of the
child's layers onto a candidate's that is nearest overall (a dynamic programme: pruning keeps the layers'
order) is the candidate's fit. The child is that candidate's ``distill`` child when

- every mapped layer sits within :data:`~mother_core.recovery.forest.UNRELATED` of its source (another
  model's layer, or an unrelated model's, sits at ~1.4 relative; a layer trained from scratch has no
  source);
- the fit is nearer, by the margin :data:`MARGIN` on squared distances, than the child is to every model
  of its own depth by name (a model with fewer layers than a stack of its relatives' layers, such as the
  root of a frankenmerge's parents, fits the stack about as well as it fits its own siblings: it is no
  pruned child; a pruned child has no relative of its depth but its own fine-tunes);
- it is no fine-tune of another model fitted to the same parent (or its copies) by the same layer map: a
  student's own fine-tunes keep its layers and sit nearer it, by name, than to the parent; students pruned
  alike are each linked (:func:`find_depth_pruned`).

Layer-stacking merges (:mod:`.stack`) and the models of their layout related to them are never
candidates: their layers are their parents' copies, so every parent of a stack fits it exactly. The
parent chosen is the candidate with the nearest fit, copies and quantized models included, a copy only
where the weights tell it from its original (:func:`_original_first`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mother_core.errors import MotherError
from mother_core.io.registry import needs_base
from mother_core.recovery.forest import UNRELATED
from mother_core.relations.calibration import LAYERS_KEPT, confidence, kind_of
from mother_core.relations.evidence import PairLayers, TypedLink
from mother_core.relations.stack import SAMPLE, STACK_MARGIN, Block, LayerReads, _read_layers, blocks, stacked
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Deeper relatives whose layers are read, the likeliest first (by how closely their layers' norms can
#: match the child's): the parent is among them, and each costs a read of its block's matrices.
CANDIDATES = 8
#: Relative margin of squared distance by which the fit must beat the child's nearest model of its own depth
#: (compared by name): the margin :data:`.stack.STACK_MARGIN` from which a layer's source stands uncontested.
#: Constant of reasoning, not fitted: a model of a stack's parents' depth fits the stack's copies of its
#: siblings' layers at about its siblings' distance (ratio ~1), a pruned child's by-name relatives of its
#: depth are its own fine-tunes (left out, see the module docstring) or unrelated models (ratio ~0.1).
MARGIN = STACK_MARGIN
#: Standard errors by which a copy or quantized model must fit a student better than its original to be its
#: parent (:func:`_original_first`): a one-sided test at ~0.1% false choices of the copy. Constant of reasoning.
Z_COPY = 3.0


@dataclass(frozen=True)
class DepthFit:
    """A shallower model's layers mapped, in order, onto a deeper relative's.

    Attributes
    ----------
    block : str
        The block (``model.layers``).
    parent : int
        The deeper relative.
    kept : tuple of int
        Per child layer (in index order), the parent's layer it is.
    residual : tuple of float
        Per child layer, its relative distance to that layer (sampled matrices of equal shape).
    total2 : float
        Squared relative distance over the block (sums of squared differences over sums of squared norms).
    parent_layers : int
        Layers of the block in the parent.
    """

    block: str
    parent: int
    kept: tuple[int, ...]
    residual: tuple[float, ...]
    total2: float
    parent_layers: int


def find_depth_pruned(stats: WeightStatistics, pl: PairLayers, skip: set[int],
                      links: list[TypedLink], reads: LayerReads | None = None) -> list[TypedLink]:
    """A ``distill`` link for each model whose layers of a block are, in order, a subset of a deeper
    relative's (module docstring).

    Parameters
    ----------
    stats : WeightStatistics
    pl : PairLayers
    skip : set of int
        Models already typed (copies, quantized models, adapters, merges, stacks): never children here;
        copies and quantized models may be parents (a student pruned from a quantized model).
    links : list of TypedLink
        The links found so far (layer-stacking merges are left out as candidates, with their layout).
    reads : LayerReads, optional
        Layers already read from ``stats``' models (:class:`.stack.LayerReads`: the detectors' reruns within one
        recovery read each once); a fresh one when not given.
    """
    usable = [m for m in range(stats.n_models) if not needs_base(stats.models[m])]
    layout = {m: blocks(stats, m, min_layers=1) for m in usable}
    barred = _stack_layouts(stats, pl, links)
    read = LayerReads.of(stats, reads)
    copies = {link.child: link.parents[0] for link in links
              if link.relation in (Relation.CONVERT, Relation.QUANTIZED) and len(link.parents) == 1}
    fits: dict[int, DepthFit] = {}
    for c in usable:
        if c in skip:
            continue
        tried: dict[int, DepthFit] = {}
        for name, block in layout[c].items():
            deeper = {h: layout[h][name] for h in usable if h != c and h not in barred and name in layout[h]
                      and len(layout[h][name].layers) > len(block.layers) and _same_kinds(block, layout[h][name])}
            for h in _likeliest(stats, pl, c, block, deeper) if deeper else []:
                fit = _fit(stats, c, block, h, deeper[h], read)
                if fit is not None and (h not in tried or fit.total2 < tried[h].total2):
                    tried[h] = fit
        if tried:
            fits[c] = _original_first(c, tried, copies, read)
    # Models fitted to one parent (or its copies) by one layer map: students pruned alike, or a student and its
    # own fine-tunes (which keep its layers). A fine-tune sits nearer its student (by name) than to the parent,
    # by the student's own training; a sibling student nearer the parent than to the other student.
    groups: dict[tuple[str, int, tuple[int, ...]], list[int]] = {}
    for c, fit in fits.items():
        groups.setdefault((fit.block, copies.get(fit.parent, fit.parent), fit.kept), []).append(c)
    out = []
    for members in groups.values():
        members.sort(key=lambda m: (fits[m].total2, m))
        for k, c in enumerate(members):
            fit = fits[c]
            slots = [s for layer in layout[c][fit.block].layers.values() for s in layer.values()]
            if any(pl.relative_sq(c, m, slots) < fit.total2 for m in members[:k]):
                continue  # a fine-tune of a student nearer its parent: the forest places it under the student
            rival = _nearest_of_depth(stats, pl, c, layout, fit.block, set(members))
            if fit.total2 < (1.0 - MARGIN) * rival:
                out.append(_link(stats, c, fit, rival))
    return out


def _original_first(c: int, tried: dict[int, DepthFit], copies: dict[int, int], read: LayerReads) -> DepthFit:
    """The nearest of ``tried`` (candidate -> fit), unless it is a copy or quantized model whose original fits
    by the same layers and the weights do not tell the two apart.

    A student pruned from a quantized model sits nearer it than its original by the rounding, a student of
    the original nearer the original by as much: in expectation the nearest is right, but a student's own
    training, spread over the same entries, makes the difference noisy where the rounding is small (a cast:
    bf16 rounds at ~0.3% relative). The copy is kept only where it is nearer by :data:`Z_COPY` standard errors
    of the per-entry difference of squared distances; else its original stands for it, as the forest does
    (:data:`mother_core.recovery.typed.LEAF_RELATIONS`)."""
    best = min(tried.values(), key=lambda f: (f.total2, f.parent))
    q = best.parent
    p = copies.get(q)
    if p is None or p not in tried or tried[p].kept != best.kept or tried[p].block != best.block:
        return best
    mine, copy, original = (read.layers[(m, best.block)] for m in (c, q, p))
    diffs = []
    for k, j in zip(sorted(mine), best.kept):
        for r, x in mine[k].items():
            if r in copy[j] and r in original[j] and x.shape == copy[j][r].shape == original[j][r].shape:
                diffs.append((x - original[j][r]) ** 2 - (x - copy[j][r]) ** 2)
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    if d.size < 2:
        return tried[p]
    z = float(d.sum()) / max(float(np.sqrt(d.size * d.var())), 1e-300)
    return best if z > Z_COPY else tried[p]


def _same_kinds(block: Block, deeper: Block) -> bool:
    """Whether every layer of ``deeper`` holds every matrix (by name within the layer) the layers of ``block``
    hold; shapes may differ (a student pruned in width too), :func:`_fit` compares the equal ones."""
    mine = {r for layer in block.layers.values() for r in layer}
    theirs = [set(layer) for layer in deeper.layers.values()]
    return bool(theirs) and all(mine <= t for t in theirs)


def _stack_layouts(stats: WeightStatistics, pl: PairLayers, links: list[TypedLink]) -> set[int]:
    """The layer-stacking merges and the models of their layout related to them by name (their fine-tunes
    and copies)."""
    out: set[int] = set()
    for link in links:
        if stacked(link):
            full = stats.present[:, stats.present[link.child]].all(axis=1)
            out |= {int(g) for g in np.flatnonzero(full) if g == link.child or pl.relative_sq(link.child, int(g))
                    < UNRELATED ** 2}
    return out


def _likeliest(stats: WeightStatistics, pl: PairLayers, c: int, block: Block, deeper: dict[int, Block]) -> list[int]:
    """The :data:`CANDIDATES` deeper relatives likeliest to be the parent: nearest by name on the tensors outside
    the block (embeddings, head, final norm: a student keeps its parent's and trains them), then by how closely
    their layers' norms can match the child's (per child layer the nearest layer's, matrices of equal shape: the
    norms' difference bounds the relative distance from below, and a kept layer keeps its norms up to its
    training). Relatives with a layer no matrix of which matches a shape of the child's are left out."""
    norm = np.asarray(stats.norm, dtype=np.float64)
    prefix = block.name + "."
    outside = [int(s) for s in np.flatnonzero(stats.present[c]) if not stats.tensors[int(s)].name.startswith(prefix)]

    def bound(h: int) -> float:
        total = 0.0
        for layer in block.layers.values():
            best = np.inf
            for theirs in deeper[h].layers.values():
                pairs = [(s, theirs[r]) for r, s in layer.items()
                         if r in theirs and stats.tensors[s].shape == stats.tensors[theirs[r]].shape]
                if pairs:
                    mine = norm[c, [s for s, _ in pairs]]
                    other = norm[h, [t for _, t in pairs]]
                    best = min(best, float(np.sum((mine - other) ** 2)) / max(float(np.sum(mine ** 2)), 1e-300))
            total += best
        return total

    keys = {h: (pl.relative_sq(c, h, outside) if outside else np.inf, bound(h), h) for h in deeper}
    return sorted((h for h in deeper if np.isfinite(keys[h][1])), key=lambda h: keys[h])[:CANDIDATES]


def _fit(stats: WeightStatistics, c: int, block: Block, h: int, deeper: Block, read: LayerReads) -> DepthFit | None:
    """The order-preserving map of ``c``'s layers onto ``h``'s nearest overall, or None when a mapped layer
    sits farther than :data:`UNRELATED` from its source (or the weights are no longer readable)."""
    try:
        mine = _read_layers(stats, c, block, read)
        theirs = _read_layers(stats, h, deeper, read)
    except (MotherError, OSError, KeyError, ValueError):
        return None  # statistics loaded without their files: nothing to read again
    ks, js = sorted(mine), sorted(theirs)
    num = np.full((len(ks), len(js)), np.inf)
    den = np.ones((len(ks), len(js)))
    for a, k in enumerate(ks):
        for b, j in enumerate(js):
            common = [r for r in mine[k] if r in theirs[j] and mine[k][r].shape == theirs[j][r].shape
                      and stats.tensors[block.layers[k][r]].shape == stats.tensors[deeper.layers[j][r]].shape]
            if common:
                num[a, b] = sum(float(np.sum((mine[k][r] - theirs[j][r]) ** 2)) for r in common)
                den[a, b] = max(sum(float(np.sum(mine[k][r] ** 2) + np.sum(theirs[j][r] ** 2)) / 2 for r in common),
                                1e-300)
    d2 = num / den
    kept = _ordered_map(d2)
    if kept is None:
        return None
    residual = tuple(float(np.sqrt(d2[a, b])) for a, b in enumerate(kept))
    if max(residual) > UNRELATED:
        return None
    total2 = float(sum(num[a, b] for a, b in enumerate(kept)) / sum(den[a, b] for a, b in enumerate(kept)))
    return DepthFit(block.name, h, tuple(js[b] for b in kept), residual, total2, len(js))


def _ordered_map(d2: np.ndarray) -> list[int] | None:
    """The strictly increasing map of rows onto columns of least summed ``d2`` (rows <= columns), or None
    when every such map passes an infinite entry."""
    k, j = d2.shape
    best = np.full((k + 1, j + 1), np.inf)
    best[0, :] = 0.0  # no row mapped yet, any number of columns passed
    for a in range(1, k + 1):
        for b in range(a, j + 1):
            # row a-1 onto column b-1, or column b-1 left out
            best[a, b] = min(best[a, b - 1], best[a - 1, b - 1] + d2[a - 1, b - 1])
    if not np.isfinite(best[k, j]):
        return None
    out, b = [], j
    for a in range(k, 0, -1):
        while b > a and best[a, b] == best[a, b - 1]:
            b -= 1
        out.append(b - 1)
        b -= 1
    return out[::-1]


def _nearest_of_depth(stats: WeightStatistics, pl: PairLayers, c: int, layout: dict[int, dict[str, Block]],
                      name: str, group: set[int]) -> float:
    """Squared relative distance, by name over the block's matrices, from ``c`` to the nearest model of the
    same depth in that block (``group``, its own fine-tunes, left out); ``inf`` when there is none."""
    block = layout[c][name]
    slots = [s for layer in block.layers.values() for s in layer.values()]
    out = np.inf
    for g, theirs in layout.items():
        if g in group or name not in theirs or sorted(theirs[name].layers) != sorted(block.layers):
            continue
        out = min(out, pl.relative_sq(c, g, slots))
    return out


def _link(stats: WeightStatistics, c: int, fit: DepthFit, rival: float) -> TypedLink:
    """The ``distill`` link of a depth-pruned child, with its layer map as evidence."""
    ids = [m.id for m in stats.models]
    n = len(fit.kept)
    dropped = sorted(set(range(fit.parent_layers)) - set(fit.kept))
    detail = f"{n} of {fit.parent_layers} {LAYERS_KEPT} (dropped {', '.join(map(str, dropped))})"
    evidence = (f"its {n} layers ({fit.block}.N) are, in order, layers {', '.join(map(str, fit.kept))} of "
                f"{ids[fit.parent]} ({fit.parent_layers} layers), at relative distance {max(fit.residual):.3f} at "
                f"most (median {float(np.median(fit.residual)):.3f}, on up to {SAMPLE} entries per matrix): a "
                "subset of its layers, kept and trained (depth pruning)"
                + (f"; the nearest model of its own depth is {np.sqrt(rival):.3f} away by name" if np.isfinite(rival)
                   else "; no other model of its depth is related to it"))
    conf = confidence(kind_of(Relation.DISTILL.value, detail), 0.85)
    return TypedLink(c, (fit.parent,), Relation.DISTILL, detail, conf, evidence=evidence)
