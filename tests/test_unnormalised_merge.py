"""Merges and fine-tunes made as another team might (benchmarks/elsewhere_set.py), on a real Phi family:

- a mergekit ``linear`` merge with ``normalize: false`` and per-layer gradient weights that do not sum to 1 is
  read as a merge of its two inputs (``merge._scaled_fits``): no affine fit explains it, and it was read as the
  root of its own tree;
- a BitFit fine-tune (biases and norms trained, every matrix its parent's) does not make its parent read as a
  merge of it and a sibling (``merge._copied_parent``): the root was hung under its BitFit child.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from format_factory import elsewhere_family
from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.stats.result import WeightStatistics

pytest.importorskip("transformers")
pytest.importorskip("mergekit")

#: The stress set's Phi family (benchmarks/elsewhere_set.py), made by the set's own recipe; its quantized copies
#: are left out (they are decided before merges, and take time to write).
# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("unnormalised-merge")

_ROLES = ("p_root", "p_wd", "p_bitfit", "p_frozen_emb", "p_linear", "p_ta")


@pytest.fixture(scope="module")
def phi_family(tmp_path_factory: pytest.TempPathFactory) -> WeightStatistics:
    out = tmp_path_factory.mktemp("phi")
    elsewhere_family(_ROLES, out)
    return compute_statistics(discover([out]), device="cpu")


def _edges(stats: WeightStatistics) -> dict[tuple[str, str], str]:
    rec = recover(stats, RecoverySettings())
    return {(Path(e.parent).name, Path(e.child).name): e.relation for e in rec.edges}


def test_unnormalised_linear_merge_is_a_merge_of_its_inputs(phi_family: WeightStatistics) -> None:
    edges = _edges(phi_family)
    assert edges.get(("p_wd", "p_linear")) == "merge"
    assert edges.get(("p_frozen_emb", "p_linear")) == "merge"


def test_bitfit_child_does_not_make_its_parent_a_merge(phi_family: WeightStatistics) -> None:
    edges = _edges(phi_family)
    # the task arithmetic (root + 0.8 (wd - root) - 0.4 (bitfit - root)) is read, and the root is no merge
    assert {p for (p, c), r in edges.items() if c == "p_ta" and r == "merge"} == {"p_root", "p_wd", "p_bitfit"}
    assert not any(c == "p_root" and r == "merge" for (_, c), r in edges.items()), edges
