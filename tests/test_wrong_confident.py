"""Wrong edges shown at high confidence (issue 12's "at most 5% of wrong edges at >= 0.8"; benchmarks/RESULTS.md,
"Wrong edges at high confidence"; benchmarks/wrong_confident.py lists them by cause).

An exact merge is an equation among models, and it holds read for any of them. Where a parent weighs one or more (a
task arithmetic that subtracts at least as much as it adds: base + l_1 (M_1 - base) - l_2 (M_2 - base), l_2 >= l_1),
the equation solved for that parent is itself a merge whose weights pass the merge test, so the fit cannot say which
model is the merge (typed D 222: a negation read backwards, three wrong parents at the strict exact kind's 0.986).
Such a merge is its own counted kind, ``merge: exact, exchangeable``, whose evidence says so and whose confidence is
its counted rate of right parents on the fitting sets, under 0.8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typed_family import qwen3_family, qwen3_finetunes, qwen3_task_arithmetic

from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.calibration import EXCHANGE_KIND, EXCHANGEABLE, counted_rate, kind_of
from mother_core.relations.merge import exchangeable_parent

pytestmark = pytest.mark.xdist_group("typed-zoo-d")


def test_only_a_parent_weighing_one_or_more_is_exchangeable() -> None:
    """Solved for a parent of weight one or more, a negation is a merge again (D 222's reading: 1.03 / 0.60 / -0.63
    is 0.97 / -0.58 / 0.61 of the child and the others); a linear merge, a SLERP and a task arithmetic whose base
    weighs under one are not, and the counted kind reads under 0.8."""
    assert exchangeable_parent(np.array([1.03, 0.60, -0.63])) == 0
    assert exchangeable_parent(np.array([1.2, 0.4, -0.6])) == 0
    for plain in ([0.5, 0.5], [0.7, 0.3], [0.8, 0.6, -0.4], [0.6, 0.6, -0.2], [0.25, 0.25, 0.25, 0.25]):
        assert exchangeable_parent(np.array(plain)) is None
    assert kind_of(Relation.MERGE.value, "task arithmetic 1.03/0.60/-0.63", f"x {EXCHANGEABLE} y") == EXCHANGE_KIND
    assert counted_rate(EXCHANGE_KIND) < 0.8


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen3 root, two fine-tunes of it and a third, and a real mergekit task arithmetic root + 0.6 (M1 - root)
    - 0.7 (M2 - root): the root weighs 1.1 in it, and solved for it the same equation reads the root as 0.91 of the
    merge, 0.64 of M2 and -0.55 of M1, a plain task arithmetic."""
    out = qwen3_family(tmp_path_factory, "exchange")
    qwen3_finetunes(out, [("m-m1", "m-root", 0, 10, 1e-3), ("m-m2", "m-root", 2, 10, 1e-3),
                          ("m-u1", "m-root", 4, 10, 8e-4)])
    qwen3_task_arithmetic(out, 10, {0: "m-root", 1: "m-m1", 2: "m-m2"}, [0.6, -0.7], "m-neg", seed=50)
    return out


@pytest.mark.slow
def test_exchangeable_merge_reads_its_counted_rate(exchange: Path) -> None:
    """The engine reads the merge the right way round (its base at 1.10), its evidence says the combination reads as
    exactly the other way round, and no parent reads 0.8 or more (main: kind "merge: exact", 0.986 each). (At 0.4 /
    -0.6 the engine reads the root as the merge instead, a plain reading its one-base-test kind already counts.)"""
    rec = recover(compute_statistics(discover([exchange]), device="cpu"))
    merges = [e for e in rec.edges if e.relation == Relation.MERGE.value and e.child == "m-neg"]
    assert sorted(e.parent for e in merges) == ["m-m1", "m-m2", "m-root"], [(e.parent, e.child, e.relation)
                                                                            for e in rec.edges]
    assert rec.problem is not None
    evidence = {rec.model_ids[int(link["child"])]: str(link.get("evidence", "")) for link in rec.problem.links}
    for e in merges:
        assert EXCHANGEABLE in evidence[e.child], evidence[e.child]
        assert kind_of(e.relation, e.relation_detail, evidence[e.child]) == EXCHANGE_KIND
        assert e.confidence < 0.8, (e.parent, e.child, e.confidence)
