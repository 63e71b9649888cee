"""Depth-pruned students get the parent whose layers they kept (issue 11: "a pruned model's layers match a
subset of its parent's"; typed profile S seeds 400 and 402, a student with layer 1 of 4 dropped left a root).

The family (:mod:`depth_family`) is really trained: students built with fewer ``num_hidden_layers`` and
loaded with a subset of their parent's layers (first, middle, last, several dropped; one pruned in width too,
one trained ten times longer, one from a GGUF Q4_0 parent, one from a bf16 cast, two pruned alike), then
trained; a student's own fine-tune, and unrelated distractors of three and five layers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from depth_family import STUDENTS, TRUTH, build, build_gpt2
from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation

pytestmark = pytest.mark.xdist_group("depth-pruned")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("depth-pruned")
    build(d)
    stats = compute_statistics(discover([d]), device="cpu")
    return {"dir": d, "stats": stats, "rec": recover(stats)}


def _parents(rec: Any) -> dict[str, tuple[str, str]]:
    return {e.child: (e.parent, e.relation) for e in rec.edges}


def test_a_lone_student_with_a_middle_layer_dropped_is_no_root(family: dict[str, Any], tmp_path: Path) -> None:
    """Typed profile S seeds 400 and 402: the only student of its family, layer 1 of 4 dropped. Compared by
    name its renumbered layers sit at the distance of unrelated weights from its parent's, so the split into
    trees cut it off with its own fine-tune, a root; its kept layers tell its parent."""
    from mother_core.recovery.forest import UNRELATED

    for name in ("m-root", "m-a", "m-b", "m-a-a", "s-mid", "s-mid-ft", "m-x3", "m-x3-ft", "m-x5"):
        shutil.copytree(family["dir"] / name, tmp_path / name)
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    rec = recover(stats)
    s, p = stats.index("s-mid"), stats.index("m-a")
    assert rec.problem.relative[s, p] > UNRELATED  # the premise: by name, no relative
    got = _parents(rec)
    assert got["s-mid"] == ("m-a", Relation.DISTILL.value)
    assert got["s-mid-ft"] == ("s-mid", Relation.FINETUNE.value)
    assert "m-x3" not in got and "m-x5" not in got


@pytest.mark.parametrize("child", sorted(STUDENTS))
def test_student_gets_the_parent_whose_layers_it_kept(family: dict[str, Any], child: str) -> None:
    assert _parents(family["rec"]).get(child) == (STUDENTS[child][0], Relation.DISTILL.value)


def test_the_link_names_the_layers_kept(family: dict[str, Any]) -> None:
    from mother_core.recovery.typed import links_of

    stats = family["stats"]
    links = {stats.model_ids[x.child]: x for x in links_of(family["rec"].problem)}
    assert links["s-mid"].detail == "3 of 4 layers kept (dropped 1)"
    assert "layers 0, 2, 3 of m-a" in links["s-mid"].evidence
    assert links["s-two"].detail == "2 of 4 layers kept (dropped 1, 2)"


def test_a_students_fine_tune_stays_under_the_student(family: dict[str, Any]) -> None:
    assert _parents(family["rec"])["s-mid-ft"] == ("s-mid", Relation.FINETUNE.value)


def test_no_prune_edge_to_or_from_unrelated_models_of_other_depths(family: dict[str, Any]) -> None:
    got = _parents(family["rec"])
    assert "m-x3" not in got and "m-x5" not in got  # roots: their layers are their own
    assert got["m-x3-ft"] == ("m-x3", Relation.FINETUNE.value)
    assert not [c for c, (p, _) in got.items() if p in ("m-x3", "m-x5") and c != "m-x3-ft"]


def test_every_edge_right(family: dict[str, Any]) -> None:
    assert _parents(family["rec"]) == TRUTH



def test_gpt2_teachers_are_no_stacks_of_their_students(tmp_path: Path) -> None:
    """Another layout (``transformer.h.N``, Conv1D): each teacher's students hold all its layers between them
    (``g-s1`` 0, 2, 3 of ``g-a``, ``g-s2`` 1, 3 of ``g-b``: every layer index of the family), which read
    as passthrough stacks of the students; they are the teachers' students."""
    build_gpt2(tmp_path)
    got = _parents(recover(compute_statistics(discover([tmp_path]), device="cpu")))
    assert got == {"g-a": ("g-root", Relation.FINETUNE.value), "g-b": ("g-root", Relation.FINETUNE.value),
                   "g-s1": ("g-a", Relation.DISTILL.value), "g-s2": ("g-b", Relation.DISTILL.value)}


def test_a_rerun_of_the_detectors_reads_no_layer_again(family: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``recover`` reruns the detectors after a stack's split and after joining trees; the stack and depth
    detectors' layer reads do not depend on the trees, so a rerun on the same statistics reuses them
    (:class:`mother_core.relations.stack.LayerReads`): the same links, no model file opened again."""
    import numpy as np

    import mother_core.io.readers as readers
    from mother_core.relations.detect import detect_relations
    from mother_core.relations.stack import LayerReads

    stats = family["stats"]
    opened: list[str] = []
    real_open = readers.open_model

    def counting_open(ref: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(ref.id)
        return real_open(ref, *args, **kwargs)

    monkeypatch.setattr(readers, "open_model", counting_open)
    one_tree = np.zeros(stats.n_models, dtype=int)
    alone = detect_relations(stats, one_tree)  # its own reads, as before
    read_alone = len(opened)
    reads = LayerReads(stats)
    first = detect_relations(stats, one_tree, reads=reads)
    read_first = len(opened) - read_alone
    again = detect_relations(stats, one_tree, reads=reads)
    assert read_alone > 0 and read_first == read_alone == reads.opened  # the students' and teachers' layers
    assert len(opened) - read_alone - read_first == 0  # the rerun opened no file
    assert again == first == alone  # and found the same links
    assert any(x.relation is Relation.DISTILL for x in again.links)
    with pytest.raises(ValueError, match="another statistics"):
        detect_relations(compute_statistics(discover([family["dir"] / "m-root", family["dir"] / "m-a"]),
                                            device="cpu"), np.zeros(2, dtype=int), reads=reads)


def test_a_students_link_reads_the_calibrated_rate_of_layer_maps(family: dict[str, Any]) -> None:
    """``distill`` links of the depth detector read the rate fitted on typed profile S (12 of 12 right); a forest
    edge read ``distill`` by its shapes alone is another kind (0 of 7 right there before stacks' fine-tunes were
    barred from parenting shallower models) and keeps the detector's own value."""
    from mother_core.recovery.typed import links_of
    from mother_core.relations.calibration import CONFIDENCE, kind_of

    stats = family["stats"]
    links = {stats.model_ids[x.child]: x for x in links_of(family["rec"].problem)}
    assert links["s-mid"].confidence == CONFIDENCE["distill"] > 0.85
    assert kind_of("distill", links["s-mid"].detail) == "distill"
    assert kind_of("distill", "9 fewer tensors") == "distill: shapes only" not in CONFIDENCE
