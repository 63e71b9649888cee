"""A width-pruned child's parent: the relative whose weights made the cut (docs/RELATIONS.md, "Pruned
children").

Structured magnitude pruning (``torch.nn.utils.prune.ln_structured``, LLM-Pruner's weight criteria, the
typed zoo's ``prune``) keeps the ``K`` neurons of a layer whose weights have the largest norm in the
model that was pruned, then trains the narrower model. Its narrower tensors hold those neurons' rows
(or columns) in the parent's order, so which ``K`` of the ``I`` neurons were kept can be read from the
child's weights (each kept row is nearest the same neuron's row in every relative: training moves a row
far less than neurons differ). The cut was made on the parent's weights: in the parent the kept neurons
are exactly the ``K`` largest, while in a sibling, the grandparent or a later fine-tune their own updates
move a few neurons across the cut. Distances cannot tell these apart (the pruned child's training update
is correlated with a fine-tune sibling's, or points back toward the grandparent: profile C, issue 11),
and the statistics pass compares only tensors of one shape.

The statistics of the pass do not hold rows, so this is a second, targeted look at the weights,
bounded: for each model with narrower tensors, :data:`GROUPS` neuron groups
(layers) of :data:`CANDIDATES` relatives, nearest first. Pruning by activations (Minitron) or by
gradients leaves no cut in the weights: then no relative separates the kept neurons and the forest
places the child as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mother_core.errors import MotherError
from mother_core.io.registry import needs_base
from mother_core.relations.calibration import confidence
from mother_core.relations.evidence import PairLayers, TypedLink
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Relatives of a pruned child looked at again, nearest first (relative squared distance on the tensors
#: they share): the parent is among the nearest few, and each costs a read of :data:`GROUPS` layers.
CANDIDATES = 6
#: Neuron groups (layers) read per relative, spread over the depth: a few layers' cuts tell the parent
#: (profile C seeds 5-23, 3 layers: 3-16 kept neurons outside the runner-up's cut, none outside the
#: parent's); more only add bytes.
GROUPS = 4
#: Columns on which the child's kept rows are matched to the relative's rows (evenly spaced): rows of one
#: neuron in two relatives differ by a few percent, rows of two neurons by ~sqrt(2) of their norm.
MATCH_COLUMNS = 256
#: Neuron importances of magnitude pruning: the norm of a neuron's weights (its rows in the input
#: projections, its column in the output one), per tensor then summed over the layer's tensors ("sum"),
#: or over the layer's tensors at once ("joint"). L2 summed is the typed zoo's; the others are there so
#: that a cut made by a neighbouring magnitude criterion is read too.
CRITERIA: tuple[tuple[int, str], ...] = ((2, "sum"), (2, "joint"), (1, "sum"))
#: Layer kinds never read as pruned: a vocabulary grown or cut changes embeddings and heads the other
#: way round (the child holds more rows), so their shapes say nothing of who came first.
SKIP_KINDS = frozenset({"embedding", "head"})


@dataclass(frozen=True)
class NeuronGroup:
    """The tensors of one layer narrowed from ``wide`` to ``kept`` neurons.

    Attributes
    ----------
    prefix : str
        The layer (the tensors' names without their last two parts: ``layers.3.mlp``).
    wide, kept : int
        Neurons in the wider version and in the narrowed one.
    tensors : tuple of (name, axis, ndim)
        ``axis`` is the neuron axis (rows of an input projection, columns of an output one).
    wide_slots : tuple of int
        The slots holding the wider version of each tensor (a relative holding all of them can have made
        the cut).
    """

    prefix: str
    wide: int
    kept: int
    tensors: tuple[tuple[str, int, int], ...]
    wide_slots: tuple[int, ...]

    @property
    def matrices(self) -> tuple[tuple[str, int], ...]:
        """``(name, axis)`` of the group's 2-D tensors (a bias alone says nothing of which neuron it is)."""
        return tuple((n, ax) for n, ax, nd in self.tensors if nd == 2)


def _shapes_by_name(stats: WeightStatistics) -> dict[str, list[int]]:
    """Slots per tensor name, for the names held in more than one shape."""
    by_name: dict[str, list[int]] = {}
    for slot, t in enumerate(stats.tensors):
        by_name.setdefault(t.name, []).append(slot)
    return {n: slots for n, slots in by_name.items() if len(slots) > 1}


def narrowed_groups(stats: WeightStatistics, c: int, by_name: dict[str, list[int]] | None = None
                    ) -> list[NeuronGroup]:
    """Model ``c``'s narrowed tensors grouped by layer and width.

    A tensor is narrowed when another model holds one of the same name and rank that is larger along
    exactly one axis (and equal along the others); a layer's tensors narrowed from the same width to the
    same width are one group of neurons. A neuron has weights in and out, so a group needs a matrix
    narrowed along its rows and one along its columns (an MLP's input and output projections, attention
    heads' q/k/v and o): a classification head or a vocabulary narrowed alone is another task or
    tokenizer, not a cut."""
    by_name = _shapes_by_name(stats) if by_name is None else by_name
    groups: dict[tuple[str, int, int], list[tuple[str, int, int, int]]] = {}
    for slot in np.flatnonzero(stats.present[c]):
        t = stats.tensors[int(slot)]
        if t.name not in by_name or t.kind in SKIP_KINDS or not t.shape:
            continue
        for w in by_name[t.name]:
            shape = stats.tensors[w].shape
            if w == int(slot) or len(shape) != len(t.shape) or not stats.present[:, w].any():
                continue
            diff = [k for k in range(len(shape)) if shape[k] != t.shape[k]]
            if len(diff) == 1 and shape[diff[0]] > t.shape[diff[0]]:
                key = (t.name.rsplit(".", 2)[0], shape[diff[0]], t.shape[diff[0]])
                groups.setdefault(key, []).append((t.name, diff[0], len(t.shape), w))
    out = [NeuronGroup(p, wide, kept, tuple((n, ax, nd) for n, ax, nd, _ in sorted(ts)),
                       tuple(w for *_, w in sorted(ts))) for (p, wide, kept), ts in sorted(groups.items())]
    return [g for g in out if {ax for _, ax in g.matrices} == {0, 1}]


def find_pruned(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, skip: set[int]) -> list[TypedLink]:
    """A ``prune`` link for each model with narrower tensors whose kept neurons are exactly the largest of
    one relative (and of no other of the :data:`CANDIDATES` nearest): that relative made the cut.

    A model of the same narrowed layout that sits between the child and that relative (nearer to each
    than they are to each other) is where the child came from: a fine-tune of a pruned model keeps its
    cut, so the cut's maker separates its neurons too; the forest places it among its own shapes.

    Parameters
    ----------
    stats : WeightStatistics
    pl : PairLayers
    labels : ndarray (N,)
        Tree of each model; the parent is looked for in the child's tree.
    skip : set of int
        Models already typed (copies, quantized models, adapters, merges): neither child nor candidate.
    """
    by_name = _shapes_by_name(stats)
    if not by_name:
        return []
    links = []
    for c in range(stats.n_models):
        if c in skip or needs_base(stats.models[c]):
            continue
        groups = narrowed_groups(stats, c, by_name)
        if not groups:
            continue
        # the layers read: spread over the depth; a candidate holds each one's wider version (one width)
        layers = _spread(sorted({g.prefix for g in groups}, key=_depth_key))
        tree = [int(g) for g in np.flatnonzero(labels == labels[c])
                if g != c and int(g) not in skip and not needs_base(stats.models[int(g)])]
        held: dict[int, list[NeuronGroup]] = {}
        for h in tree:
            mine = [g for g in groups if g.prefix in layers and stats.present[h, list(g.wide_slots)].all()]
            if len({g.prefix for g in mine}) == len(layers) == len(mine):
                held[h] = mine
        cands = sorted(held, key=lambda h: pl.relative_sq(c, h))[:CANDIDATES]
        link = _cut_maker(stats, c, {h: held[h] for h in cands}) if cands else None
        if link is None:
            continue
        p = link.parents[0]
        narrow = [h for h in tree if h not in held and stats.present[h, stats.present[c]].all()]
        to_parent = pl.relative_sq(c, p)
        if not any(pl.relative_sq(c, h) < to_parent and pl.relative_sq(h, p) < to_parent for h in narrow):
            links.append(link)
    return links


def _depth_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key reading the numbers in a name as numbers (``layers.10`` after ``layers.2``)."""
    # isdecimal, not isdigit: a superscript two is a digit that int() refuses; and at most 9 digits, as int() refuses
    # more than 4,300 (a tensor name is data from the file).
    return tuple((0, int(x), "") if x.isdecimal() and len(x) <= 9 else (1, 0, x) for x in name.split("."))


def _spread(layers: list[str]) -> list[str]:
    """At most :data:`GROUPS` layers, evenly spread over the list (over the depth)."""
    if len(layers) <= GROUPS:
        return layers
    return [layers[int(k)] for k in np.linspace(0, len(layers) - 1, GROUPS).round().astype(int)]


def _by_neuron(w: np.ndarray, axis: int) -> np.ndarray:
    """``w`` with its neuron axis first, flattened to (neurons, rest)."""
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _columns(n: int) -> np.ndarray:
    """The :data:`MATCH_COLUMNS` (or fewer) evenly spaced columns of ``n`` on which rows are matched."""
    return np.unique(np.linspace(0, n - 1, min(MATCH_COLUMNS, n)).round().astype(int))


def kept_neurons(child: np.ndarray, relative: np.ndarray) -> np.ndarray | None:
    """Which neurons (rows) of ``relative`` the child's rows are, in its order: each child row's nearest
    row (both given neuron-first, on the same columns); None when two child rows pick one neuron."""
    a, b = child.astype(np.float64), relative.astype(np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    idx = d.argmin(axis=1)
    return idx if len(np.unique(idx)) == len(idx) else None


def neuron_norms(w: np.ndarray, axis: int) -> np.ndarray:
    """(2, neurons): the L1 norm and the squared L2 norm of each neuron's slice of ``w``, in float64."""
    rows = _by_neuron(w, axis).astype(np.float64)
    return np.stack([np.abs(rows).sum(axis=1), (rows * rows).sum(axis=1)])


def cut_violations(norms: list[np.ndarray], kept: np.ndarray) -> dict[tuple[int, str], int]:
    """Per criterion (:data:`CRITERIA`), how many of the ``kept`` neurons are not among the ``len(kept)``
    largest by one model's weights (``norms``: :func:`neuron_norms` of each of a group's matrices); 0: that
    model's weights make exactly this cut."""
    out = {}
    for order, how in CRITERIA:
        if order == 1:  # L1 per tensor summed and over the tensors at once are one score
            score = sum(x[0] for x in norms)
        elif how == "sum":
            score = sum(np.sqrt(x[1]) for x in norms)
        else:
            score = np.sqrt(sum(x[1] for x in norms))
        top = np.argsort(-np.asarray(score), kind="stable")[:len(kept)]
        out[(order, how)] = int(len(kept) - len(np.intersect1d(top, kept)))
    return out


def _cut_maker(stats: WeightStatistics, c: int, held: dict[int, list[NeuronGroup]]) -> TypedLink | None:
    """The one candidate (of ``held``: candidate -> the groups read, nearest first) whose weights make the
    child's cut in every group read, or None.

    One model is open and one tensor held at a time; of a candidate's tensors only per-neuron norms are
    kept (and, for the first matrix of each group, the rows on the matched columns)."""
    from mother_core.io.readers import open_model

    firsts = sorted({g.matrices[0] for gs in held.values() for g in gs})
    kept: dict[tuple[str, int, int], np.ndarray] = {}  # per (layer, wide, kept): matched on the nearest holder
    violations = {h: {crit: 0 for crit in CRITERIA} for h in held}
    try:
        with open_model(stats.models[c]) as reader:
            child = {}
            for n, ax in firsts:
                rows = _by_neuron(reader.read(n).float().numpy(), ax)
                child[(n, ax)] = rows[:, _columns(rows.shape[1])]  # the other axes are the relatives' too
        for h, groups in held.items():
            with open_model(stats.models[h]) as reader:
                for group in groups:
                    key, first = (group.prefix, group.wide, group.kept), group.matrices[0]
                    norms = []
                    for n, ax in group.matrices:
                        w = reader.read(n).float().numpy()
                        norms.append(neuron_norms(w, ax))
                        if key not in kept and (n, ax) == first:
                            rows = _by_neuron(w, ax)
                            found = kept_neurons(child[first], rows[:, _columns(rows.shape[1])])
                            if found is None:
                                return None  # no clean match: the rows are not a subset of this relative's
                            kept[key] = found
                    for crit, v in cut_violations(norms, kept[key]).items():
                        violations[h][crit] += v
    except (MotherError, OSError, KeyError):
        return None  # weights no longer readable (statistics loaded without their files): the forest decides
    exact = {h: [crit for crit, v in vs.items() if v == 0] for h, vs in violations.items()}
    makers = [h for h in held if exact[h]]
    if len(makers) != 1:
        return None
    p = makers[0]
    others = sorted((min(violations[h].values()), stats.models[h].id) for h in held if h != p)
    order, how = exact[p][0]
    n_kept = sum(g.kept for g in held[p])
    n_wide = sum(g.wide for g in held[p])
    evidence = (f"{len(held[p])} of its layers read: their {n_kept} neurons are exactly the largest {n_kept} of "
                f"{n_wide} in {stats.models[p].id} (L{order} norm{', per tensor' if how == 'sum' else ''}), the "
                f"cut structured pruning makes on its parent"
                + (f"; in the next relative ({others[0][1]}) {others[0][0]} kept neurons fall outside it"
                   if others else ""))
    return TypedLink(c, (p,), Relation.PRUNE, f"{n_kept} of {n_wide} neurons kept",
                     confidence(Relation.PRUNE.value, 0.9), evidence=evidence)


def narrow_to_wide(stats: WeightStatistics) -> list[tuple[int, int]]:
    """(narrow, wide) model pairs: ``wide`` holds a wider version of a tensor ``narrow`` holds narrowed
    (:func:`narrowed_groups`). Pruning removes neurons and nothing puts them back, so ``narrow`` is never
    ``wide``'s parent: the fine-tune forest would otherwise read a pruned child, near its relatives on
    the tensors they share, as the parent of its own parent or of a merge of its relatives (profile C
    seed 19)."""
    by_name = _shapes_by_name(stats)
    if not by_name:
        return []
    out = []
    for c in range(stats.n_models):
        wide = sorted({w for g in narrowed_groups(stats, c, by_name) for w in g.wide_slots})
        if wide:
            out += [(c, int(g)) for g in np.flatnonzero(stats.present[:, wide].any(axis=1)) if g != c]
    return out


def grown_vocabulary(stats: WeightStatistics) -> list[tuple[int, int]]:
    """(larger, smaller) model pairs: ``larger`` holds an embedding table (tokens, or learned positions)
    with more rows than ``smaller``'s of the same name and width, and every tensor both hold by name in
    one shape is otherwise the same shape (no cut).

    Vocabularies grow: a fine-tune that adds tokens (``resize_token_embeddings``, chat or domain tokens)
    appends rows and trains on, while nothing in fine-tuning removes a token. A grown model trained
    little stays near its parent on every shared tensor, where the fine-tune forest, reading distances
    only, can hang the parent's other children under it (profile D: an added-token fine-tune at lr 7e-5
    read as the parent of its parent's children). So ``larger`` is never ``smaller``'s parent. Positions
    (a learned position table) grow the same way, with context extension. Output heads are not read:
    an untied LM head grows with its embedding anyway, and a classification head is replaced freely in
    either direction (a 1000-class parent, a 10-class child)."""
    by_name = _shapes_by_name(stats)
    if not by_name:
        return []
    out: set[tuple[int, int]] = set()
    for slots in by_name.values():
        if any(stats.tensors[s].kind != "embedding" for s in slots):
            continue
        for a in slots:
            for b in slots:
                sa, sb = stats.tensors[a].shape, stats.tensors[b].shape
                if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[1] or sa[0] <= sb[0]:
                    continue
                for x in np.flatnonzero(stats.present[:, a]):
                    for y in np.flatnonzero(stats.present[:, b]):
                        if x != y and not narrowed_groups(stats, int(y), by_name):
                            out.add((int(x), int(y)))
    return sorted(out)
