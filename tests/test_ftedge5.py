"""A contested merge parent of an exact merge is replaced by the better reading the contest found
(benchmarks/RESULTS.md, "Fine-tune edges and merge parents of typed sets, fifth pass").

On the typed profile D fitting sets every contested parent of an exact merge was wrong, and every rival the contest
named was the true parent: a task arithmetic read on its true input's near-copy parent (a few small steps apart),
a linear merge of a merge read as the merge's inputs. The contest already found the better reading; the fit now
takes it where it is better by the detector's own bars. Real training (the typed zoo's ops) and real mergekit merges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typed_family import qwen3_family, qwen3_finetunes, qwen3_node, qwen3_task_arithmetic

from mother_core import compute_statistics, discover
from mother_core.relations import Relation
from mother_core.relations.calibration import SWAPPED_KIND, counted_rate
from mother_core.relations.evidence import TypedLink, pair_layers
from mother_core.relations.merge import CONTESTED_NOTE_SWAPPED, affine_fit, contest_parents

pytestmark = pytest.mark.xdist_group("typed-zoo-d")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen3 root; fine-tunes m-f1, m-f2, m-f3 of it and m-f11, a near copy of m-f1 (4 steps at 2e-4); a real
    mergekit task arithmetic m-ta = root + 0.5 (f11 - root) - 0.45 (f2 - root) (profile D's negation); a linear
    merge m-m1 of f1 and f2 and a linear merge m-mm of m-m1 and m-f3 (profile D's merge of a merge)."""
    from mother_zoo.typed import ops

    out = qwen3_family(tmp_path_factory, "ftedge5")
    qwen3_finetunes(out, [("m-f1", "m-root", 0, 10, 1e-3), ("m-f2", "m-root", 2, 10, 1e-3),
                          ("m-f3", "m-root", 4, 10, 1e-3), ("m-f11", "m-f1", 6, 4, 2e-4)])
    qwen3_task_arithmetic(out, 10, {0: "m-root", 1: "m-f11", 2: "m-f2"}, [0.5, -0.45], "m-ta", seed=50)
    for index, name, a, b in ((11, "m-m1", "m-f1", "m-f2"), (12, "m-mm", "m-m1", "m-f3")):
        node = qwen3_node(index, "merge", "merge", (1, 2), index, method="linear", weights=[0.6, 0.4], base=None,
                          store="float32")
        ops.make_merge(node, {1: out / a, 2: out / b}, {1: a, 2: b}, out / name)
    return out


def _read_as(stats, pl, child: str, parents: tuple[str, ...], detail: str) -> TypedLink:
    """The merge link a fit would give ``child`` on ``parents`` (one set of coefficients over the layers)."""
    ids = [m.id for m in stats.models]
    c, ps = ids.index(child), tuple(ids.index(p) for p in parents)
    layers = np.isfinite(pl.sq[:, c, list(ps)]).all(axis=1)
    total = pl.sq[layers].sum(axis=0)
    coeffs, _ = affine_fit(total[c, list(ps)], total[np.ix_(ps, ps)])
    return TypedLink(c, ps, Relation.MERGE, detail, 0.986, tuple(float(w) for w in coeffs))


@pytest.mark.slow
def test_contested_parent_of_an_exact_merge_is_replaced(family: Path) -> None:
    """Read on the near copy's parent m-f1 in the place of its true input m-f11 (typed D 204, D 228), the task
    arithmetic's contest names m-f11, which leaves markedly less residual: the link now holds m-f11 (main: m-f1 kept,
    noted only), says what it replaced and reads that parent under 0.8. Read as a merge of m-m1's inputs and m-f3
    (typed D 208, D 222), the linear merge of a merge takes m-m1 in the place of both: the same residual with fewer
    parents."""
    stats = compute_statistics(discover([family]), device="cpu")
    pl = pair_layers(stats)
    ids = [m.id for m in stats.models]
    labels = np.zeros(stats.n_models, dtype=int)
    ta = _read_as(stats, pl, "m-ta", ("m-root", "m-f1", "m-f2"), "task arithmetic")
    got = contest_parents(stats, pl, labels, set(), ta, [ta])
    names = [ids[p] for p in got.parents]
    assert sorted(names) == ["m-f11", "m-f2", "m-root"], (names, got.parent_notes)
    k = names.index("m-f11")
    assert CONTESTED_NOTE_SWAPPED in got.note_of(k) and "m-f1 " in got.note_of(k)
    assert got.confidence_of(k) == pytest.approx(counted_rate(SWAPPED_KIND)) and got.confidence_of(k) < 0.8
    m1 = _read_as(stats, pl, "m-m1", ("m-f1", "m-f2"), "linear")
    mm = _read_as(stats, pl, "m-mm", ("m-f1", "m-f2", "m-f3"), "linear")
    got = contest_parents(stats, pl, labels, set(), mm, [m1, mm])
    assert sorted(ids[p] for p in got.parents) == ["m-f3", "m-m1"], ([ids[p] for p in got.parents], got.parent_notes)
