"""Sparse merges confirmed by the signs of their entries: a second read of sampled entries (docs/RELATIONS.md).

Every sparse merge method of mergekit adds to its base a sum of its inputs' task vectors t_k = P_k - base
with weights that are never negative, entry by entry: TIES trims and elects a sign (Yadav et al. 2023), DARE
and DELLA drop entries at random and rescale the survivors by a positive factor (Yu et al. 2023; Deep et al.
2024), Breadcrumbs drops the largest and the smallest of each task vector, SCE weighs each input by its share
of the task vectors' energy, Model Stock interpolates towards the inputs' mean; normalising divides by a
positive sum. So wherever every input's task vector has one sign, the merge's own difference from its base
has that sign or is zero: rounding to the stored dtype is monotone and cannot flip it. A fine-tune's own
update is new, and it flips the sign of some of those entries wherever it outweighs them.

The pass's statistics cannot see this (they are sums over entries), and they cannot tell a high-density
DELLA or Breadcrumbs merge from a fine-tune of its heaviest input: such a merge keeps almost none of its
base's entries (the inputs rarely all drop one: ``merge.EQUAL_SHARE`` does not confirm it), and its dropped
entries leave 0.8 of its squared distance to its nearest parent unexplained (benchmarks/RESULTS.md, branch
mergemeth). The signs do: on the ten profile C fitting sets every DELLA, DELLA-linear, Breadcrumbs,
Breadcrumbs-TIES and SCE merge has no entry against its inputs' common sign (0 of 22,000-63,000 such
entries), the same merge read on three of its four parents has 1-25% against, and a fine-tune read on its
parent, its parent's siblings or its own children has 0.3% and more (benchmarks/RESULTS.md, branch
mergesparse).

The entries are the stack detector's sample (:data:`~mother_core.relations.stack.SAMPLE` evenly spaced
entries of each matrix of the numbered layers, read once per model and recovery through
:class:`~mother_core.relations.stack.LayerReads`), read only for children that some reading on the pass's
distances could make a sparse merge: one more read of the sampled entries of a child and its
:data:`~mother_core.relations.merge.CANDIDATES` nearest relatives.
"""

from __future__ import annotations

import itertools

import numpy as np

from mother_core.relations import merge as mg
from mother_core.relations.calibration import EQUAL_ENTRIES, SIGNS_READ, confidence, counted_note, kind_of
from mother_core.relations.evidence import PairLayers, TypedLink
from mother_core.relations.stack import LayerReads, _read_layers, blocks
from mother_core.stats.result import WeightStatistics

#: Share of the entries where every input's task vector has one sign at which the merge may differ from its
#: base against it, for rounding's sake (a sparse merge of non-negative weights has none: 0 on every sparse
#: merge of the profile C fitting sets; the fine-tunes of the fitting sets read on their relatives 0.003 and
#: more). Not fitted: a hundredth of the lowest fine-tune's share.
AGAINST_MAX = 3e-5
#: Readings checked on the entries per child, lowest residual first: a fine-tune sits within the residual cap on
#: many sets of its relatives, and each check reads the sampled entries of all of them.
READINGS_MAX = 48
#: Fewest sampled entries where the inputs agree in sign that a reading must have to be confirmed: on fewer
#: a fine-tune's 0.3% would be expected to show fewer than three entries against.
AGREEING_MIN = 1000


def sampled(stats: WeightStatistics, m: int, reads: LayerReads) -> dict[tuple[str, int, str], np.ndarray]:
    """Model ``m``'s sampled matrices of its numbered layers, by (block, layer, name within the layer)."""
    out: dict[tuple[str, int, str], np.ndarray] = {}
    for name, block in blocks(stats, m, min_layers=1).items():
        for k, layer in _read_layers(stats, m, block, reads).items():
            for r, values in layer.items():
                out[(name, k, r)] = values
    return out


def against_share(child: np.ndarray, base: np.ndarray, inputs: list[np.ndarray]) -> tuple[int, int]:
    """(entries where every input's task vector has one sign and the child differs from ``base`` against it,
    entries where every input's task vector has one sign and the child differs from ``base``), over flat
    vectors of the same sampled entries (NaN where a model lacks one: never counted)."""
    t = np.stack([p - base for p in inputs])  # (K, n)
    pos = (t > 0).all(axis=0)
    neg = (t < 0).all(axis=0)
    d = child - base
    agreeing = int(((pos | neg) & (d != 0) & ~np.isnan(d)).sum())
    against = int((pos & (d < 0)).sum() + (neg & (d > 0)).sum())
    return against, agreeing


def _flat(values: dict[tuple[str, int, str], np.ndarray], like: dict[tuple[str, int, str], np.ndarray]) -> np.ndarray:
    """``values``' sampled matrices laid out as ``like``'s (a child's), NaN where ``values`` lacks one or holds
    another shape."""
    parts = [values[k] if k in values and values[k].shape == v.shape else np.full(v.shape, np.nan)
             for k, v in like.items()]
    return np.concatenate(parts) if parts else np.zeros(0)


def confirms(against: int, agreeing: int) -> bool:
    """Whether a reading with these counts (:func:`against_share`) is a sparse merge's."""
    return agreeing >= AGREEING_MIN and against <= AGAINST_MAX * agreeing


def sign_merges(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int],
                children: set[int], found: dict[int, TypedLink], reads: LayerReads,
                not_bases: frozenset[int] | set[int] = frozenset()) -> dict[int, TypedLink]:
    """Sparse merges among ``children`` confirmed by their signs, by child.

    For each child, every reading of its :data:`~mother_core.relations.merge.CANDIDATES` nearest relatives
    (not in ``excluded``) as a base and two or three inputs is fitted on the pass's squared distances; those
    within :data:`~mother_core.relations.merge.RESIDUAL_MAX_EQUAL` (of the nearest parent, or of the merge's own
    update: DELLA rescales past its heaviest input) and off the child's own direction are checked on the
    sampled entries, the lowest residual first. A reading must leave more than
    :data:`~mother_core.relations.merge.EXACT` (an exact combination is the distance detector's, whose guards
    tell which of models in one another's span is the merge), its base not in ``not_bases`` (merges found),
    and no child may be a parent of a merge read before it (lowest residual first): a cycle. A child already read as a
    sparse merge (``found``) keeps that reading where its signs confirm it or where none confirms another.
    The weights are not held to the affine fit's range: a random drop leaves coefficients far from the
    configured ones (a DELLA merge of weights 0.24 / 0.45 / 0.22 fits at -0.22 / 0.79 / 0.07), and the
    signs, not the fit, tell the reading here (a fine-tune read on its relatives has entries against). They do
    not always tell its direction (a base read as the merge of its merge and that merge's inputs may pass too:
    :func:`mother_core.relations.merge._with_signs` keeps out the bases and inputs of the fits it trusts).
    """

    out: dict[int, tuple[float, TypedLink]] = {}
    cache: dict[int, dict[tuple[str, int, str], np.ndarray]] = {}

    def entries(m: int) -> dict[tuple[str, int, str], np.ndarray]:
        if m not in cache:
            cache[m] = sampled(stats, m, reads)
        return cache[m]

    for c in sorted(children):
        pool = mg.tree_inputs(pl, labels, excluded, c)
        if len(pool) < 3:
            continue
        d_all = np.array([mg._total(pl, c, p) for p in pool])
        cand = [pool[k] for k in np.argsort(d_all)[:mg.CANDIDATES]]
        layers = mg._common_layers(pl, [c, *cand])
        if not layers.any():
            continue
        total = pl.sq[layers].sum(axis=0)
        readings: list[tuple[int, float, tuple[int, ...], np.ndarray]] = []
        for size in range(3, mg.MAX_PARENTS + 1):
            for subset in itertools.combinations(cand, size):
                idx = np.array(subset)
                dc = total[c, idx]
                if (dc <= 0).any():
                    continue
                a, res = mg.affine_fit(dc, total[idx[:, None], idx[None, :]])
                if res / float(dc.min()) <= mg.EXACT:
                    continue
                for b in range(size):
                    if subset[b] in not_bases:
                        continue
                    ratio = res / float(dc.min())
                    own = res / float(dc[b])
                    if min(ratio, own) <= mg.RESIDUAL_MAX_EQUAL:
                        readings.append((size, ratio, (subset[b],) + subset[:b] + subset[b + 1:], a))
        if not readings:
            continue
        child = entries(c)
        flat: dict[int, np.ndarray] = {}

        def vec(m: int) -> np.ndarray:
            if m not in flat:
                flat[m] = _flat(entries(m), child)
            return flat[m]

        def signs(order: tuple[int, ...]) -> tuple[int, int]:
            return against_share(vec(c), vec(order[0]), [vec(p) for p in order[1:]])

        prior = found.get(c)
        if prior is not None and any(confirms(*signs((b,) + tuple(p for p in prior.parents if p != b)))
                                     for b in prior.parents):
            continue
        readings.sort(key=lambda r: r[1])
        for size, ratio, order, a in readings[:READINGS_MAX]:
            if not confirms(*signs(order)):
                continue
            # a set holding the inputs and more confirms too: the fewest parents that still do
            for k in range(size - 1, 2, -1):
                fewer = [o for o in itertools.combinations(order[1:], k - 1) if confirms(*signs((order[0], *o)))]
                if not fewer:
                    break
                order = min(((order[0], *o) for o in fewer),
                            key=lambda o: _ratio(total, c, o))
            counts = signs(order)
            parents = tuple(sorted(order))
            ratio = _ratio(total, c, parents)
            base = order[0]
            off_ray = mg.off_ray_ratio(pl, c, parents)
            if not off_ray <= mg.RESIDUAL_MAX_EQUAL:
                continue
            idx = np.array(parents)
            coeffs, _ = mg.affine_fit(total[c, idx], total[idx[:, None], idx[None, :]])
            out[c] = (ratio, _link(stats, c, parents, base, coeffs, ratio, off_ray, counts))
            break
    # (a merge's input read as a merge of it and the other inputs: keep the reading that leaves less)
    kept: dict[int, TypedLink] = {}
    for c, (_, link) in sorted(out.items(), key=lambda x: x[1][0]):
        if any(c in k.parents for k in kept.values()) or any(p in kept for p in link.parents):
            continue
        kept[c] = link
    return kept


def refuted(stats: WeightStatistics, links: list[TypedLink], reads: LayerReads) -> set[int]:
    """The children of ``links`` (sparse merge readings) whose signs refute them under every choice of base: more
    than :data:`AGAINST_MAX` of at least :data:`AGREEING_MIN` agreeing entries against."""
    out: set[int] = set()
    for link in links:
        child = sampled(stats, link.child, reads)
        vec = {p: _flat(sampled(stats, p, reads), child) for p in link.parents}
        own = _flat(child, child)
        counts = [against_share(own, vec[b], [vec[p] for p in link.parents if p != b]) for b in link.parents]
        if all(agreeing >= AGREEING_MIN and not confirms(against, agreeing) for against, agreeing in counts):
            out.add(link.child)
    return out


def _ratio(total: np.ndarray, c: int, parents: tuple[int, ...]) -> float:
    """The affine fit's residual of ``c`` on ``parents`` (summed squared distances ``total``) over the nearest
    parent's squared distance."""

    idx = np.array(parents)
    dc = total[c, idx]
    _, res = mg.affine_fit(dc, total[idx[:, None], idx[None, :]])
    return float(res / dc.min())


def sign_step(stats: WeightStatistics, labels: np.ndarray, excluded: set[int], reads: LayerReads) -> mg.FitStep:
    """The step :func:`.merge.find_merges` takes as ``more``: its fits widened by :func:`_with_signs`."""
    def step(pl: PairLayers, fits: list[tuple[float, TypedLink]], settled: set[int]) -> list[tuple[float, TypedLink]]:
        return _with_signs(stats, pl, labels, excluded, fits, settled, reads)
    return step


def _with_signs(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int],
                fits: list[tuple[float, TypedLink]], settled: set[int], reads: LayerReads
                ) -> list[tuple[float, TypedLink]]:
    """``fits`` with the sparse merges the signs of the entries confirm (:func:`sign_merges`) added,
    or in place of a sparse fit of the same child they do not confirm; ``settled`` (exact, per-layer and scaled
    fits) are left alone. A sparse fit the signs refute gives way where it would close a cycle with a confirmed
    one (a base read as the merge of its merge and that merge's inputs: weights summing under 1 shrink a merge
    below its base's norm, which the distance fits read the other way round)."""
    sparse = {link.child: link for ratio, link in fits if link.child not in settled}
    # (a fit whose base the equal entries name keeps its standing: the signs refute it where it lacks an input,
    # and they cannot tell its direction where its base reads as the merge of it and its inputs as well: a
    # DELLA merge at density 0.5, tests/test_sparse_merge.py)
    wrong = refuted(stats, [link for link in sparse.values() if EQUAL_ENTRIES not in link.evidence], reads)
    # A model a trusted fit took as a merge's input is not read as a merge of that merge and its other
    # relatives, nor is a trusted merge read as another's base: an exact merge (a task arithmetic that subtracts
    # a task vector) puts its inputs in one another's span with weights of one sign too (profile D, seeds 200
    # and 206: an input of a negation read so at 0.95), and a merge of a model's children sits where the
    # model's own update, read from it, has the children's signs (seed 204).
    trusted = [link for _, link in fits if link.child not in wrong]
    inputs = {p for link in trusted for p in link.parents}
    merges = {link.child for link in trusted}
    children = {c for c in range(stats.n_models) if c not in excluded and c not in settled and c not in inputs}
    signed = sign_merges(stats, pl, labels, excluded, children, sparse, reads, not_bases=merges)
    used = {p for link in signed.values() for p in link.parents}
    kept = [fit for fit in fits if fit[1].child not in signed
            and not (fit[1].child in wrong and (fit[1].child in used or signed.keys() & set(fit[1].parents)))]
    return kept + [(mg._whole_ratio(pl, c, link.parents), link) for c, link in signed.items()]



def _link(stats: WeightStatistics, c: int, parents: tuple[int, ...], base: int, coeffs: np.ndarray, ratio: float,
          off_ray: float, counts: tuple[int, int]) -> TypedLink:
    """The typed link of a sign-confirmed sparse merge; its confidence is the detector's own (0.95 falling to 0.55 at
    :data:`~mother_core.relations.merge.RESIDUAL_MAX_EQUAL`), never more than the rate of right parents this kind
    had on the fitting typed sets (:data:`.calibration.SIGNS_KIND`, :func:`.calibration.counted_rate`), which the
    evidence gives."""
    from mother_core.relations.vocabulary import Relation

    order = np.argsort(-coeffs)
    parents = tuple(parents[k] for k in order)
    coeffs = coeffs[order]
    names = ", ".join(stats.models[p].id for p in parents)
    against, agreeing = counts
    detail = f"ties/dare/della/breadcrumbs {SIGNS_READ} " + "/".join(f"{w:.2f}" for w in coeffs)
    kind = kind_of(Relation.MERGE.value, detail)
    conf = confidence(kind, float(0.55 + 0.4 * (1.0 - min(ratio, mg.RESIDUAL_MAX_EQUAL) / mg.RESIDUAL_MAX_EQUAL)))
    return TypedLink(c, parents, Relation.MERGE, detail, conf, tuple(float(w) for w in coeffs), evidence=(
        f"its difference from {stats.models[base].id} has the inputs' sign wherever all of {names} but it "
        f"agree ({agreeing - against:,} of {agreeing:,} sampled entries; a sparse merge adds its inputs' task "
        "vectors with weights never negative, a fine-tune's own update flips some); residual "
        f"{ratio:.2g} of its squared distance to the nearest parent, {off_ray:.2g} off its own direction "
        "(dropped and rescaled entries: no combination explains them); " + counted_note(kind)))


__all__ = ["AGAINST_MAX", "AGREEING_MIN", "READINGS_MAX", "against_share", "confirms", "refuted", "sign_merges",
           "sampled", "sign_step"]
