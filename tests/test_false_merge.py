"""A near-copy fine-tune of a negation's base is no merge (issue 11, ``falsemerge``; mother_core/relations/merge.py:
``_one_parent_share``).

Built with the zoo's own ops (transformers, mergekit; real AdamW steps): a root, a large update of it (a fine-tune
at lr 5e-3, then a small fine-tune of that: the subtracted input), a small fine-tune (the added input), a mergekit
task arithmetic root + 0.6 (added - root) - 0.4 (subtracted - root), a near-copy fine-tune of the root (8 AdamW steps
at lr 5e-5) and two unrelated fine-tunes. The root lies near the line from the negation to its subtracted input
(it is between them: base - l (M - base)), so its near-copy is an exact SLERP of those two (residual 0.0025 of its
squared distance to them), as profile D's seeds 204 and 206 read two fine-tunes at 0.986. Its own update is what
that SLERP leaves: the root alone leaves less (the merge's residual is 2.5 times the root's distance).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typed_family import qwen3_family, qwen3_finetunes, qwen3_task_arithmetic

from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation

pytestmark = pytest.mark.xdist_group("typed-zoo-d")


@pytest.fixture(scope="module")
def near_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = qwen3_family(tmp_path_factory, "false-merge")
    qwen3_finetunes(out, [("m-b0", "m-root", 0, 12, 5e-3), ("m-big", "m-b0", 1, 20, 1e-4),
                          ("m-small", "m-root", 2, 10, 2e-4), ("m-near", "m-root", 3, 8, 5e-5),
                          ("m-u1", "m-root", 4, 10, 8e-4), ("m-u2", "m-root", 5, 10, 8e-4)])
    qwen3_task_arithmetic(out, 30, {0: "m-root", 3: "m-small", 2: "m-big"}, [0.6, -0.4], "m-neg")
    return out


@pytest.mark.slow
def test_near_copy_of_a_negation_base_is_a_fine_tune(near_copy: Path) -> None:
    """The near-copy is a fine-tune of the root (before the rule: the SLERP of the negation and its subtracted
    input), and the negation keeps its three parents."""
    from mother_core.relations import merge as mg
    from mother_core.relations.evidence import pair_layers

    stats = compute_statistics(discover([near_copy]), device="cpu")
    rec = recover(stats)
    parents: dict[str, list[tuple[str, str]]] = {}
    for e in rec.edges:
        parents.setdefault(e.child, []).append((e.parent, e.relation))
    assert parents["m-near"] == [("m-root", Relation.FINETUNE.value)]
    assert sorted(parents["m-neg"]) == sorted((p, Relation.MERGE.value) for p in ("m-root", "m-small", "m-big"))
    # the case the rule is for: exact as a SLERP of the two, and no better than the root alone
    pos = {m.id: i for i, m in enumerate(stats.models)}
    pl = pair_layers(stats)
    c, pair = pos["m-near"], (pos["m-neg"], pos["m-big"])
    layers = mg._common_layers(pl, [c, *pair])
    nearest = min(float(pl.sq[layers, c, p].sum()) for p in pair)
    assert mg._subset_residual(pl, c, pair, layers, False, False) <= mg.EXACT * nearest
    share, rival = mg._one_parent_share(pl, c, pair, [i for i in range(stats.n_models) if i != c], False, False)
    assert rival == pos["m-root"] and share > mg.PARSIMONY
