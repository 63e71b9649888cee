"""Merge parents' confidence per evidence kind (issue 11, "at most 5% of wrong edges at confidence >= 0.8"; benchmarks/
RESULTS.md, "Merge parents' confidence per evidence kind").

Two readings added after the typed zoo's calibration carry their own kind and their counted rate, not the strict
kinds' 0.99:

- an exact merge whose negative-weight base passes one of the two base tests (norm growth, additivity) only: a
  real mergekit NuSLERP with a base of two masked-LM fine-tunes of a RoBERTa (``benchmarks/elsewhere2_set.py``'s
  recipe: the fine-tunes share a direction, so additivity through the base fails). On main it read "merge: exact"
  at 0.986. Checked by :func:`assert_counted_one_base_test`, called from ``test_elsewhere2``'s NuSLERP test, which
  trains that family (once for both);
- a sparse merge read on the signs of its entries (the opt-in ``merge-signs``): real mergekit DELLA and Breadcrumbs
  merges of really trained tiny Llamas (``tests/test_merge_signs.py``'s family). On main its confidence was the
  detector's own, its evidence silent on how often such readings were right.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.relations.calibration import kind_of
from mother_core.relations.detect import DETECTORS, OPTIONAL_DETECTORS

#: What the evidence of a counted kind says (``calibration.counted_note``), and the relaxed reading's words
#: (``calibration.ONE_BASE_TEST``), spelled out: main has neither, and the test must fail there on its assertions.
COUNTED = "merge parents on the fitting sets: confidence"
ONE_BASE_TEST = "passes one base test of two"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_merge_signs import family  # noqa: E402,F401  (the sign reading's real merges, built once)


def _merge_edges(folder: Path, settings: RecoverySettings) -> tuple[dict[str, list], dict[str, str]]:
    """Every merge edge by child, and each typed child's evidence."""
    rec = recover(compute_statistics(discover([folder]), device="cpu"), settings)
    evidence = {rec.model_ids[int(link["child"])]: str(link.get("evidence", ""))
                for link in (rec.problem.links if rec.problem is not None else [])}
    edges: dict[str, list] = {}
    for e in rec.edges:
        if e.relation == "merge":
            edges.setdefault(e.child, []).append(e)
    return edges, evidence


def assert_counted_one_base_test(folder: Path, child: str) -> None:
    """``child``, an exact merge whose negative-weight base passes one base test of two, reads that kind, its
    count in its evidence and a confidence under 0.8. Called by ``test_elsewhere2``'s NuSLERP test (a real
    mergekit NuSLERP with a base of two masked-LM fine-tunes of a RoBERTa), which trains that family once."""
    edges, evidence = _merge_edges(folder, RecoverySettings())
    got = edges.get(child, [])
    assert got, edges
    # the reading's own kind, said in its evidence with its count (before: "merge: exact" at 0.986, no word of it)
    assert ONE_BASE_TEST in evidence[child], evidence[child]
    assert kind_of("merge", got[0].relation_detail, evidence[child]) == "merge: exact, one base test"
    assert COUNTED in evidence[child] and "to read 0.8 or more" in evidence[child], evidence[child]
    # counted 10 of 16 on the fitting sets: under 0.8 (before: 0.986)
    assert all(e.relation_confidence < 0.8 and e.confidence < 0.8 for e in got), [e.confidence for e in got]


@pytest.mark.xdist_group("sparse-merge")
def test_sign_read_merge_reads_its_counted_rate(family: Path) -> None:  # noqa: F811
    edges, evidence = _merge_edges(family, RecoverySettings(relations=",".join(DETECTORS + OPTIONAL_DETECTORS)))
    signed = [c for c, es in edges.items() if "(signs of its entries)" in es[0].relation_detail]
    assert signed, {c: [e.relation_detail for e in es] for c, es in edges.items()}
    for c in signed:
        # its own kind, its count in the evidence (main: the detector's own number, no word of how often such
        # readings were right), its confidence never above the counted rate (39 of 39: 0.898)
        assert kind_of("merge", edges[c][0].relation_detail) == "merge: signs"
        assert COUNTED in evidence[c], evidence[c]
        assert all(e.relation_confidence <= 0.9 for e in edges[c]), [e.relation_confidence for e in edges[c]]
