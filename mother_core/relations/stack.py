"""Layer-stacking merges: a deeper child made of its parents' layers (docs/RELATIONS.md, "Layer-stacking merges").

mergekit's ``passthrough`` method with ``slices`` stacks layer ranges of one or more models (a
"frankenmerge": layers ``[0, 24)`` of one model then ``[8, 32)`` of another; SOLAR-style depth up-scaling
repeats one model's overlapping ranges), often trained further. The child holds more layers than any
parent, and its layer ``k`` is some parent's layer ``j`` under another index, so the streaming pass, which
compares tensors of one name, cannot see it: the layers past the parents' depth have no counterpart, and
the ones that do are compared with the wrong layer.

This is a second, bounded look at the weights (as :mod:`.prune` takes for neurons): each model holding
more layers of a block (``model.layers.N``) than a relative of the same layer layout has each of its
layers compared with every layer of the :data:`CANDIDATES` shallower relatives whose layer norms could
match, on up to :data:`SAMPLE` evenly spaced entries of each matrix. Its layers copied unchanged sit at
distance 0 from their source, trained further at fine-tuning distance; another model's layers, or
another layer of the same model, at the distance of unrelated weights (~1.4 relative). When every layer
of the child is some candidate's layer within :data:`~mother_core.recovery.forest.UNRELATED`, the child
is a ``merge`` of the candidates whose layers it uses (one parent for a depth up-scaling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from mother_core.errors import MotherError
from mother_core.io.registry import needs_base
from mother_core.recovery.forest import UNRELATED
from mother_core.relations.calibration import confidence
from mother_core.relations.evidence import PairLayers, TypedLink, quantization_scheme
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Shallower relatives whose layers are read, the likeliest first (by how closely their layers' norms can
#: match the child's): a stack's parents are among them, and each costs a read of its block's matrices.
CANDIDATES = 8
#: Entries of each matrix compared (evenly spaced over the flattened tensor; all of a smaller one): a
#: fine-tuning update is spread over every entry, so a few thousand estimate a relative distance within a
#: few percent, and memory stays bounded by layers x matrices x SAMPLE per model.
SAMPLE = 4096
#: Relative margin of squared distance from which a layer's source keeps the full confidence: the next
#: model's nearest layer at 1.5 times the squared distance of the chosen one (it differs by the child's
#: own update plus one half as large). Below it the confidence falls linearly to half (a tie). Constant of
#: reasoning, as :data:`.detect.LORA_MARGIN` (not fitted: the typed profile S sets fit the merge's own rate). It also
#: tells a stack's fine-tune from a stack (:func:`_fine_tunes_of_stacks`): its stack contests every layer of it.
STACK_MARGIN = 1 / 3
#: Relative distance within which a stack's layer is a copy of its source's: mergekit copies layers (exactly, or
#: through a cast: bf16 rounding is ~0.003 relative, fp8's ~0.03), while a layer trained after the copy moves by a
#: fine-tuning update (a few AdamW steps at 1e-4 to 1e-3: 0.05 and more on the typed zoo's models). Constant of
#: reasoning (:func:`_teacher`), not fitted.
COPY = 0.05
#: The detail of a stacking merge starts with mergekit's name of the method (:func:`stacked`).
DETAIL = "passthrough"

# At most 9 ASCII digits: a name is data from the file, and int() refuses more than 4,300 digits.
_LAYER = re.compile(r"^(?P<block>.+?)\.(?P<index>[0-9]{1,9})\.(?P<rest>.+)$")


@dataclass(frozen=True)
class Block:
    """One model's layers of a block: ``layers[k]`` maps a tensor's name within layer ``k`` to its slot.

    Attributes
    ----------
    name : str
        The block (the tensors' names before the layer index: ``model.layers``).
    layers : dict of int -> dict of str -> int
        Layer index -> (name within the layer -> slot), matrices only (norm vectors are alike in every
        layer and would match any).
    """

    name: str
    layers: dict[int, dict[str, int]]

    def signature(self, stats: WeightStatistics, k: int) -> frozenset[tuple[str, tuple[int, ...]]]:
        """Layer ``k``'s tensors by name within the layer and shape."""
        return frozenset((r, stats.tensors[s].shape) for r, s in self.layers[k].items())


#: One model's sampled layers of a block: layer index -> (name within the layer -> sampled entries, float64).
Layers = dict[int, dict[str, np.ndarray]]


@dataclass
class LayerReads:
    """The sampled layers read from one statistics object's model files (:func:`_read_layers`), each read once.

    ``recover`` runs the detectors up to three times on the same statistics (again after a stack's split, again
    after :func:`mother_core.recovery.typed.join_linked_trees` joins trees), and the stack and depth detectors
    read the same layers each time: on typed profile S seed 400, 111 and 51 files opened over three runs, two
    thirds of them again (benchmarks/detect_rerun.py). What is read depends only on the model (its files, named
    by ``stats``), the block's tensors and :data:`SAMPLE`, never on the trees or the links found, so one object
    serves every run over ``stats``. Mutable on purpose: it is a cache, owned by one recovery (passed down, not a
    global), and refuses another statistics object.

    Attributes
    ----------
    stats : WeightStatistics
        The statistics whose models are read.
    layers : dict of (int, str) -> Layers
        Per (model, block name) the sampled layers.
    opened : int
        Model files opened so far (a read).
    """

    stats: WeightStatistics
    layers: dict[tuple[int, str], Layers] = field(default_factory=dict)
    opened: int = 0

    @classmethod
    def of(cls, stats: WeightStatistics, reads: LayerReads | None) -> LayerReads:
        """``reads`` when given (it must hold ``stats``' layers: a model index means another model in other
        statistics), else a fresh one."""
        if reads is None:
            return cls(stats)
        if reads.stats is not stats:
            raise ValueError("these LayerReads hold the layers of another statistics object")
        return reads


def stacked(link: TypedLink) -> bool:
    """Whether ``link`` is a layer-stacking merge (it may parent models of its own, deeper layout)."""
    return link.relation is Relation.MERGE and link.detail.startswith(DETAIL)


def blocks(stats: WeightStatistics, m: int, min_layers: int = 2) -> dict[str, Block]:
    """Model ``m``'s blocks of at least ``min_layers`` numbered layers (matrices only), by block name (a depth-pruned
    child may keep one layer, :mod:`.depth`)."""
    out: dict[str, dict[int, dict[str, int]]] = {}
    for slot in np.flatnonzero(stats.present[m]):
        t = stats.tensors[int(slot)]
        hit = _LAYER.match(t.name)
        if hit is None or len(t.shape) < 2:
            continue
        out.setdefault(hit["block"], {}).setdefault(int(hit["index"]), {})[hit["rest"]] = int(slot)
    return {b: Block(b, layers) for b, layers in out.items() if len(layers) >= min_layers}


def _layouts(stats: WeightStatistics, block: Block) -> set[frozenset[tuple[str, tuple[int, ...]]]]:
    return {block.signature(stats, k) for k in block.layers}


@dataclass(frozen=True)
class _Fit:
    """A deep model's layers matched to shallower relatives' layers."""

    block: str
    source: tuple[tuple[int, int], ...]  # per child layer (in index order): (model, its layer index)
    residual: tuple[float, ...]  # per child layer: relative distance to its source (sampled)
    runner_up: tuple[float, ...]  # per child layer: squared relative distance to another model's nearest layer


def find_stacks(stats: WeightStatistics, pl: PairLayers, skip: set[int],
                quantized: dict[int, float] | None = None, reads: LayerReads | None = None) -> list[TypedLink]:
    """A ``merge`` link (mergekit ``passthrough``) for each model whose every layer of a block is a layer of
    shallower relatives of the same layer layout.

    Models of the same deep layout fitted by the same layers are a stack and its fine-tunes (a fine-tune
    keeps the layer map, its layers moved by its own update): only the one nearest its sources is linked,
    and the forest places the others (a stacking merge may parent models of its own layout,
    :func:`mother_core.recovery.typed.solver_constraints`).

    Parameters
    ----------
    stats : WeightStatistics
    pl : PairLayers
    skip : set of int
        Models already typed as copies, quantized models or adapters: neither child nor candidate (their
        original stands for them).
    quantized : dict of int -> float, optional
        Quantized models (:func:`quantized_sources`) fitted as children too, never as candidates: a quantized
        copy of a stack the set lacks. Each is linked as a stack only where its fit is nearer than the
        relative distance to its source (by name) by the margin :data:`STACK_MARGIN` (a quantized copy of a
        stack that is in the set fits that stack's sources at its own rounding, as near as its source).
    reads : LayerReads, optional
        Layers already read from ``stats``' models (:class:`LayerReads`); a fresh one when not given.
    """
    quantized = quantized or {}
    usable = [m for m in range(stats.n_models) if m not in skip and not needs_base(stats.models[m])]
    layout = {m: blocks(stats, m) for m in sorted(set(usable) | set(quantized))}
    fits: dict[int, _Fit] = {}
    read = LayerReads.of(stats, reads)  # a model's sampled layers, read once
    for c in usable + sorted(set(quantized) - set(usable)):
        for name, block in layout[c].items():
            kinds = _layouts(stats, block)
            shallower = [h for h in usable if h != c and name in layout[h]
                         and len(layout[h][name].layers) < len(block.layers)
                         and _layouts(stats, layout[h][name]) <= kinds]
            if not shallower:
                continue
            held = {h: layout[h][name] for h in shallower}
            fit = _fit(stats, c, block, {h: held[h] for h in _likeliest(stats, c, block, held)}, read)
            if fit is not None and c in quantized and max(fit.residual) ** 2 >= (1 - STACK_MARGIN) * quantized[c] ** 2:
                continue  # its source (by name) explains it as well: the quantized copy of that model
            if fit is not None and (c not in fits or max(fit.residual) < max(fits[c].residual)):
                fits[c] = fit
    fits = {c: fit for c, fit in fits.items() if c in quantized or not _teacher(stats, pl, c, fit, layout)}
    # of the models fitted by the same layers (a stack and its fine-tunes), the nearest to them is the stack
    best: dict[tuple[str, tuple[tuple[int, int], ...]], int] = {}
    for c, fit in fits.items():
        key = (fit.block, fit.source)
        if key not in best or sum(np.square(fit.residual)) < sum(np.square(fits[best[key]].residual)):
            best[key] = c
    stacks = set(best.values())
    stacks -= _fine_tunes_of_stacks(stats, layout, fits, stacks, read)
    return [_link(stats, pl, c, fits[c]) for c in sorted(stacks)]


def _teacher(stats: WeightStatistics, pl: PairLayers, c: int, fit: _Fit, layout: dict[int, dict[str, Block]]) -> bool:
    """Whether ``c``'s fit is better read the other way round: ``c`` is the teacher of depth-pruned students
    (:mod:`.depth`) that hold its layers between them, not a stack of them.

    The two readings have one geometry (a deeper model whose layers are, in order, near layers of shallower
    ones) but for training: mergekit copies a stack's layers, each at a copy's distance (:data:`COPY`) from
    its source, while a teacher's layers are each a student's own training away. A stack trained after
    stacking moves every layer as well, but it has no relative of its own depth but its own fine-tunes and
    copies, where a teacher sits in a family of its depth (its parent, siblings, fine-tunes), all of them
    near the students' layers too (so fitted by them as well). So a fit with a layer that is no copy is
    dropped where a model of ``c``'s depth in the block is related to it by name (within
    :data:`~mother_core.recovery.forest.UNRELATED`). Known cost: a stack in the set only through a fine-tune
    and that fine-tune's own fine-tunes (no exact copy of it) is left to the forest."""
    if max(fit.residual) <= COPY:
        return False
    depth = sorted(layout[c][fit.block].layers)
    for g, theirs in layout.items():
        if g == c or fit.block not in theirs or sorted(theirs[fit.block].layers) != depth:
            continue
        if pl.relative_sq(c, g) < UNRELATED ** 2:
            return True
    return False


def _fine_tunes_of_stacks(stats: WeightStatistics, layout: dict[int, dict[str, Block]], fits: dict[int, _Fit],
                          stacks: set[int], read: LayerReads) -> set[int]:
    """The fitted models that are a fine-tune of another fitted stack of their layout, not stacks themselves.

    A stack's fine-tune moves every layer by its own update, as large in a small model as the distance
    between its parents' siblings: some of its layers may then come nearer a sibling or a merge of the
    stack's parents than to the layer the stack copied, and its fit names other sources than the stack's
    (the grouping by sources misses it). Its stack, of the same layout, holds each of its layers under the
    same index, as near as the source it was fitted to: within :data:`STACK_MARGIN`, the margin from which a
    stack parent's layer stands uncontested. A model every layer of which another fitted model of its layout
    contests so, with a smaller residual (the stack copied its layers: residual near 0; its fine-tune's is its
    update), is that model's fine-tune; the forest places it under its stack.
    """
    out: set[int] = set()
    for c in stacks:
        fit = fits[c]
        mine = read.layers[(c, fit.block)]
        for s in stacks - {c}:
            other = fits[s]
            if other.block != fit.block or sum(np.square(other.residual)) >= sum(np.square(fit.residual)):
                continue
            block = layout[s][fit.block]
            if sorted(block.layers) != sorted(mine) or _layouts(stats, block) != _layouts(stats, layout[c][fit.block]):
                continue
            theirs = _read_layers(stats, s, block, read)  # read when fitted: no second read
            if all(set(theirs[k]) == set(mine[k]) and _relative2(mine[k], theirs[k]) * (1.0 - STACK_MARGIN) <= r * r
                   for k, r in zip(sorted(mine), fit.residual)):
                out.add(c)
                break
    return out


def _relative2(layer: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> float:
    """Squared relative distance of two layers' sampled matrices (as :func:`_fit` scores them)."""
    d2 = sum(float(np.sum((layer[r] - other[r]) ** 2)) for r in layer)
    s2 = sum(float(np.sum(layer[r] ** 2) + np.sum(other[r] ** 2)) / 2 for r in layer)
    return d2 / max(s2, 1e-300)


def _likeliest(stats: WeightStatistics, c: int, block: Block, held: dict[int, Block]) -> list[int]:
    """The :data:`CANDIDATES` relatives of ``held`` whose layers' norms come nearest the child's: per child
    layer the norms' difference bounds its relative distance to a layer from below (triangle inequality),
    and a copied layer keeps its norms."""
    norm = np.asarray(stats.norm, dtype=np.float64)

    def bound(h: int) -> float:
        total = 0.0
        for layer in block.layers.values():
            mine = norm[c, list(layer.values())]
            scale = max(float(np.sum(mine ** 2)), 1e-300)
            total += min((float(np.sum((mine - norm[h, [theirs[r] for r in layer]]) ** 2)) / scale
                          for theirs in held[h].layers.values() if set(layer) <= set(theirs)), default=np.inf)
        return total

    return sorted(held, key=lambda h: (bound(h), h))[:CANDIDATES]


def _sample(n: int) -> np.ndarray:
    """The :data:`SAMPLE` (or fewer) evenly spaced flat indices of a tensor of ``n`` entries."""
    return np.unique(np.linspace(0, n - 1, min(SAMPLE, n)).round().astype(np.int64))


def _read_layers(stats: WeightStatistics, m: int, block: Block, read: LayerReads) -> Layers:
    """Model ``m``'s layers of ``block``, each matrix sampled (:func:`_sample`), float64; one tensor held at a
    time; kept in ``read`` (a candidate of several deep models, or of the detectors' reruns, is read once)."""
    from mother_core.io.readers import open_model

    if (m, block.name) in read.layers:
        return read.layers[(m, block.name)]
    out: Layers = {}
    read.opened += 1
    with open_model(stats.models[m]) as reader:
        for k, layer in block.layers.items():
            out[k] = {}
            for r, slot in layer.items():
                flat = reader.read(stats.tensors[slot].name).float().numpy().reshape(-1)
                out[k][r] = flat[_sample(flat.size)].astype(np.float64)
    read.layers[(m, block.name)] = out
    return out


def _fit(stats: WeightStatistics, c: int, block: Block, held: dict[int, Block], read: LayerReads) -> _Fit | None:
    """Each of ``c``'s layers matched to the nearest layer (same tensors within the layer) of the relatives
    in ``held``; None when a layer has no match within :data:`UNRELATED` (a layer of its own: trained from
    scratch, or the teacher's layer a distilled student dropped) or when the weights are no longer readable."""
    try:
        mine = _read_layers(stats, c, block, read)
        theirs = {h: _read_layers(stats, h, b, read) for h, b in held.items()}
    except (MotherError, OSError, KeyError, ValueError):
        return None  # statistics loaded without their files: nothing to read again
    source, residual, runner_up = [], [], []
    for k in sorted(mine):
        layer = mine[k]
        # (squared relative distance, depth, model, layer): of layers at the same distance (a shallower stack
        # holds its sources' layers unchanged) the shallower model's, the original the copies came from
        scores: list[tuple[float, int, int, int]] = []
        for h, layers in theirs.items():
            for j, other in layers.items():
                if set(other) != set(layer):
                    continue
                scores.append((_relative2(layer, other), len(layers), h, j))
        if not scores:
            return None
        d2, depth, h, j = min(scores)
        if np.sqrt(d2) > UNRELATED:
            return None
        source.append((h, j))
        residual.append(float(np.sqrt(d2)))
        runner_up.append(_rival(scores, theirs, d2, depth, h, j))
    return _Fit(block.name, tuple(source), tuple(residual), tuple(runner_up))


def _rival(scores: list[tuple[float, int, int, int]], theirs: dict[int, dict[int, dict[str, np.ndarray]]],
           d2: float, depth: int, h: int, j: int) -> float:
    """The squared relative distance of the nearest layer of a model other than the source ``h`` (layer ``j``,
    at ``d2``), a copy of the source's layer left out: a deeper model (a stack of the source) holding a layer
    nearer the source's than the child's is. Where the child is a quantized copy of a stack, such a copy sits
    at the child's distance from the source (its rounding), and would read as a tie."""
    for s2, deep, g, i in sorted(scores):
        if g == h:
            continue
        if deep > depth and _relative2(theirs[g][i], theirs[h][j]) < d2:
            continue  # the source's layer copied into a stack of it
        return s2
    return np.inf


def _slices(fit: _Fit) -> list[tuple[int, int, int]]:
    """The fit's sources as mergekit slices: runs of consecutive layers of one model, ``(model, start, end)``
    (``end`` exclusive, as mergekit's ``layer_range``)."""
    out: list[tuple[int, int, int]] = []
    for h, j in fit.source:
        if out and out[-1][0] == h and out[-1][2] == j:
            out[-1] = (h, out[-1][1], j + 1)
        else:
            out.append((h, j, j + 1))
    return out


def _link(stats: WeightStatistics, pl: PairLayers, c: int, fit: _Fit) -> TypedLink:
    """The ``merge`` link of a fitted stack: its parents by the share of its layers they gave (ties: the
    first in the stack first), the slices as detail, the layer map and residual as evidence."""
    ids = [m.id for m in stats.models]
    used = [h for h, _ in fit.source]
    parents = sorted(dict.fromkeys(used), key=lambda h: (-used.count(h), used.index(h)))
    weights = tuple(used.count(h) / len(used) for h in parents)
    slices = _slices(fit)
    detail = f"{DETAIL} " + " + ".join(f"{ids[h]}[{a}:{b}]" for h, a, b in slices)
    margins = [1.0 - (r * r) / u if np.isfinite(u) and u > 0 else 1.0 for r, u in zip(fit.residual, fit.runner_up)]
    # the merge's own confidence (every layer is a shallower model's): the calibrated rate (typed profile S's
    # fitting seeds; the detector's own value where none is fitted); each parent's lower where another model's layer
    # comes nearly as near as the layers it gave (.merge.contest_parents gives affine merges' parents theirs)
    conf = confidence("merge: passthrough", 0.9)
    own = [max(0.0, min(m for m, (g, _) in zip(margins, fit.source) if g == h)) for h in parents]
    parent_conf = tuple(conf * 0.5 * (1.0 + min(1.0, m / STACK_MARGIN)) for m in own)
    notes = tuple("" if m >= STACK_MARGIN else
                  f"another model's layer comes within {m:.0%} (squared distance) of a layer it gave" for m in own)
    rest = [int(s) for s in np.flatnonzero(stats.present[c]) if not _LAYER.match(stats.tensors[int(s)].name)]
    outside = _nearest_outside(stats, pl, c, rest, parents)
    n_layers = len(fit.source)
    starts = np.cumsum([0] + [b - a for _, a, b in slices])
    evidence = (f"its {n_layers} layers ({fit.block}.N) are layers of "
                + ", ".join(f"{ids[h]} ({a}-{b - 1} as its {k}-{k + b - a - 1})"
                            for (h, a, b), k in zip(slices, starts))
                + f" (mergekit passthrough slices), at relative distance {max(fit.residual):.3f} at most "
                f"(median {float(np.median(fit.residual)):.3f}, on up to {SAMPLE} entries per matrix); "
                f"another model's nearest layer is at least {np.sqrt(min(fit.runner_up)):.3f} away"
                + ("; outside the layers " + ", ".join(f"{', '.join(names)} nearest {ids[h]} ({rel:.3f})"
                                                       for h, names, rel in outside) if outside else "")
                + _quantized_note(stats, c))
    return TypedLink(c, tuple(parents), Relation.MERGE, detail, conf, weights=weights, evidence=evidence,
                     parent_confidence=parent_conf, parent_notes=notes)


def quantized_sources(stats: WeightStatistics, pl: PairLayers, links: list[TypedLink]) -> dict[int, float]:
    """The quantized children (``quantized`` links) with the relative distance to their source over the tensors
    they share by name; ``inf`` where the source holds fewer layers of a block than the child.

    Where a stack is in the set only as a quantized copy, the quantized detector takes the nearest float model
    by name as its source, within its bound (0.8 relative for any scheme): a shallower model whose layers sit
    under other indices in it, or a stack as deep made of siblings' layers, at the distance of fine-tunes. A
    quantizer keeps every tensor, so a source lacking layers of its child is no source at all. These children
    are fitted as stacks too (:func:`find_stacks`); where one fits nearer, its stack link replaces the quantized
    one.
    """
    out: dict[int, float] = {}
    for link in links:
        if link.relation is not Relation.QUANTIZED or len(link.parents) != 1:
            continue
        q, p = link.child, link.parents[0]
        mine, theirs = blocks(stats, q), blocks(stats, p)
        if any(name in theirs and len(theirs[name].layers) < len(b.layers) for name, b in mine.items()):
            out[q] = np.inf
            continue
        ok = np.isfinite(pl.sq[:, q, p]) & np.isfinite(pl.scale2[:, q, p])
        den = float(pl.scale2[ok, q, p].sum())
        out[q] = float(np.sqrt(pl.sq[ok, q, p].sum() / den)) if den > 0 else np.inf
    return out


def _quantized_note(stats: WeightStatistics, c: int) -> str:
    """Where the stack's own weights are quantized: it is a quantized copy of a stack the set does not hold in
    full precision (were it there, the quantized file would be its ``quantized`` child, decided first)."""
    scheme = quantization_scheme(stats.models[c].format)
    if scheme is None:
        return ""
    return (f"; its weights are quantized ({scheme}): a quantized copy of a stack whose full-precision "
            "original is not in the set (the layers read through the rounding)")


def _nearest_outside(stats: WeightStatistics, pl: PairLayers, c: int, slots: list[int],
                     among: list[int]) -> list[tuple[int, list[str], float]]:
    """The tensors outside the layers (``slots``: embeddings, head, final norm; compared by name in the
    streaming pass) grouped by the model of ``among`` nearest each (mergekit takes the embeddings from the
    first slice's model, the head and final norm from the last one's): (model, names, largest relative
    distance)."""
    groups: dict[int, tuple[list[str], float]] = {}
    for s in slots:
        rel = [(float(pl.rel[s, c, h]), h) for h in among if np.isfinite(pl.rel[s, c, h])]
        if rel:
            d, h = min(rel)
            names, worst = groups.get(h, ([], 0.0))
            groups[h] = (names + [stats.tensors[s].name], max(worst, d))
    return [(h, names, worst) for h, (names, worst) in groups.items()]


def _layout_pairs(stats: WeightStatistics, link: TypedLink, relative: np.ndarray) -> tuple[list[int], list[int]]:
    """(the stack ``link.child`` and the models of its layout related to it by name: its fine-tunes and
    copies; the models lacking a tensor it holds). A model of the same layout unrelated to it (another
    family as deep, a teacher of its own students) keeps its own distances."""
    full = stats.present[:, stats.present[link.child]].all(axis=1)
    mine = [int(g) for g in np.flatnonzero(full) if g == link.child or relative[link.child, g] < UNRELATED]
    return mine, [int(g) for g in np.flatnonzero(~full)]


def shallower_than(stats: WeightStatistics, links: list[TypedLink], relative: np.ndarray) -> list[tuple[int, int]]:
    """(parent, child) pairs the fine-tune forest may not take around stacking merges (``relative``: the pass's
    relative distances, tensors compared by name).

    A stack may parent its own fine-tunes (they keep its layout), but it never parents a model lacking a
    tensor it holds: on the tensors it shares by name with its parents' relatives it is a copy of some of
    them, so the forest would hang them under it. Its fine-tunes and copies hold the same copies, moved by
    their own update only, so neither do they (typed profile S seeds 400-410, fitting: in each, a parent of
    a stack was hung under the stack's fine-tune, an edge read ``distill`` by its shapes, 0 of 7 right).
    And fine-tuning adds no layers: a model of the stack's layout related to it (its fine-tunes) never has a
    forest parent lacking part of it."""
    out: list[tuple[int, int]] = []
    for link in links:
        if stacked(link):
            mine, lacking = _layout_pairs(stats, link, relative)
            out += [(g, h) for g in mine for h in lacking]
            out += [(h, g) for g in mine if g != link.child for h in lacking]
    return out


def unrelated_by_name(stats: WeightStatistics, links: list[TypedLink], relative: np.ndarray) -> np.ndarray:
    """``relative`` (the pass's relative distances, tensors compared by name) with the pairs of a stack (and
    the models of its layout related to it) and the models lacking its layout set to ``inf`` (nothing
    shared), for splitting the set into trees.

    A stack's layer ``k`` is some parent's layer ``j``: compared by name, it is compared with the wrong layer,
    at the distance of unrelated weights on some layers and of copies on others, a distance between its
    family's fine-tunes and strangers that can move the gap the split is cut at (a GPT-2 stack split its
    root, parents and the stack into three trees). Its link joins it to its parents' tree instead."""
    out = relative.copy()
    for link in links:
        if stacked(link):
            mine, lacking = _layout_pairs(stats, link, relative)
            out[np.ix_(mine, lacking)] = np.inf
            out[np.ix_(lacking, mine)] = np.inf
    return out
