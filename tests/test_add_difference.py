"""Task arithmetic whose two inputs both enter at weight 1 (mergekit ``task_arithmetic`` with weights 1 and 1; the
Stable Diffusion checkpoint mergers' "add difference" A + (B - C) m at m = 1, its common recipe), read with the
merge as the merge (mother_core/relations/merge.py: ``_one_reading``).

The four models lie on a parallelogram: every corner is exactly its two neighbours minus its opposite corner, at
the same weights and residual, so the residual cannot choose, and before the rule the tie went to float noise
(benchmarks/sd_typed.py seed 1: the add difference's first input read as the merge of it, the base and the other
input, ``benchmarks/RESULTS.md``). Built with the zoo's own ops (transformers, mergekit; real AdamW steps): a root,
two inputs, three unrelated fine-tunes of the root, the merge; each input's name sorting before and after the
merge's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typed_family import qwen3_family, qwen3_finetunes, qwen3_task_arithmetic

from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation

pytestmark = pytest.mark.xdist_group("typed-zoo-d")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = qwen3_family(tmp_path_factory, "add-difference")
    qwen3_finetunes(out, [(name, "m-root", k, 10, 1e-3)
                          for name, k in [("m-a", 0), ("m-z", 2), ("m-u1", 3), ("m-u2", 4), ("m-u3", 5)]])
    qwen3_task_arithmetic(out, 20, {0: "m-root", 1: "m-a", 2: "m-z"}, [1.0, 1.0], "m-merge")
    return out


def test_weight_one_task_arithmetic_reads_the_merge(family: Path) -> None:
    """The merge has its three parents; its inputs and the root are fine-tunes and a root, not merges."""
    rec = recover(compute_statistics(discover([family]), device="cpu"))
    parents: dict[str, list[tuple[str, str]]] = {}
    for e in rec.edges:
        parents.setdefault(e.child, []).append((e.parent, e.relation))
    assert sorted(parents["m-merge"]) == sorted((p, Relation.MERGE.value) for p in ("m-root", "m-a", "m-z")), parents
    assert parents["m-a"] == [("m-root", Relation.FINETUNE.value)], parents
    assert parents["m-z"] == [("m-root", Relation.FINETUNE.value)], parents
    assert "m-root" not in parents
