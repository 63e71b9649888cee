"""Siblings read as a chain, lifted by the layers' difference kurtosis (issues 11 and 12, "fine-tune siblings
read as chains"; :func:`mother_core.recovery.ties.lift_siblings`). Real training of tiny models with the
fitting recipes of ``benchmarks/generalise.py`` (:mod:`mother_zoo.variety`), no synthetic weights; the
rule's bookkeeping is checked directly below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mother_core.recovery.ties as ties_module
from mother_core import compute_statistics, discover, recover
from mother_core.evaluate import load_truth
from mother_core.recovery.problem import TieKurtosis
from mother_core.recovery.result import Edge, Recovery
from mother_core.recovery.ties import LIFT_ALPHA, LIFT_TREE_KURTOSIS, lift_siblings, lift_trusted, sign_test


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("siblings")

@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sibling_trees(tmp_path_factory.mktemp("siblings"))


def sibling_trees(folder: Path) -> Path:
    """Train the two trees of these tests under ``folder`` (also tests/test_siblings_spectrum.py's)."""
    from mother_zoo.variety import Collection, Recipe, generate_collection

    # Two fitting recipes (benchmarks/generalise.py, _FIT) with the seeds of the fitx-2 collection:
    # continued pre-training (root -> child -> two grandchildren on the same broad task) and a barely
    # trained Llama tree (AdamW, 2-5 steps per child). In each, distance (and the additivity refinement)
    # hangs one sibling under another: siblings on a line with their parent.
    continued = Recipe("fit-vit-continued", "vit", method="continued", shape=(1, 2), child_steps=(60, 90),
                       lr=(3e-4, 1e-3), weight_decay=0.05)
    barely = Recipe("fit-llama-barely", "llama", method="fft", root_steps=60, child_steps=(2, 5))
    return generate_collection(Collection("siblings-test", ((continued, 247), (barely, 248))), folder)


def assert_only_the_lifts_move(without: Recovery, with_lifts: Recovery, lifted: list[Edge]) -> None:
    """The lifted children's edges are the only difference between a recovery without the lifts and one with."""
    off = {(e.parent, e.child) for e in without.edges}
    on = {(e.parent, e.child) for e in with_lifts.edges}
    assert off - on == {(e.tie_displaced, e.child) for e in lifted}
    assert on - off == {(e.parent, e.child) for e in lifted}


def test_siblings_on_a_line_are_lifted_from_the_chain(trees: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    stats = compute_statistics(discover([trees]), device="cpu")
    truth = set(load_truth(trees / "truth.json"))
    continued = next(t for t in json.loads((trees / "truth.json").read_text())["meta"]["trees"]
                     if t["recipe"] == "fit-vit-continued")["models"]
    rec = recover(stats)
    assert {(e.parent, e.child) for e in rec.edges if e.child in continued} <= truth
    lifted = [e for e in rec.edges if e.tie_lifted]
    assert len(lifted) == 2, "one sibling per tree was read as its sibling's child"
    for e in lifted:
        # Right, and the edge tells what distance had chosen: the sibling, whose difference to the child
        # is heavy-tailed (a difference of two Adam runs), the parent's platykurtic (one run).
        assert e.chosen_by_tie and (e.parent, e.child) in truth and (e.parent, e.tie_displaced) in truth
        assert e.tie_kurtosis[e.parent] < 0 < e.tie_kurtosis[str(e.tie_displaced)]
    assert not any(e.tie_lifted for e in rec.edges if not e.chosen_by_tie)
    # Without the lift (no significance level passes) the same statistics give the chains, nothing else moves
    # (the spectral lift, which finds the same two siblings here, set aside: tests/test_siblings_spectrum.py).
    monkeypatch.setattr(ties_module, "LIFT_ALPHA", 0.0)
    monkeypatch.setattr(ties_module, "SPECTRAL_LIFT", float("inf"))
    assert_only_the_lifts_move(recover(stats), rec, lifted)


def test_a_lift_survives_save_load_and_resolve_and_is_told(trees: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from explorer_ui.views import tie_note
    from mother_core import Constraints, resolve
    from mother_core.cli import main as cli_main
    from mother_core.recovery.result import Recovery

    rec = recover(compute_statistics(discover([trees]), device="cpu"))
    rec.save(tmp_path / "result.json")
    back = Recovery.load(tmp_path / "result.json")
    lifted = [e for e in back.edges if e.tie_lifted]
    assert [(e.parent, e.child, e.tie_displaced) for e in lifted] == \
           [(e.parent, e.child, e.tie_displaced) for e in rec.edges if e.tie_lifted] and lifted
    # Told as a move from a chain, not as a near tie: on the Edge page and by the CLI.
    assert all("Moved from a chain to a sibling" in tie_note(e) and "near-tied" not in tie_note(e) for e in lifted)
    assert cli_main(["recover", str(trees), "--out", str(tmp_path / "cli.json"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"{len(lifted)} child(ren) moved from a chain to a sibling of their parent" in said
    assert back.problem is not None and rec.problem is not None
    for c, t in rec.problem.tie_kurtosis.items():
        assert t.layers is not None and back.problem.tie_kurtosis[c].layers is not None
        np.testing.assert_array_equal(t.layers, back.problem.tie_kurtosis[c].layers)
    # A global re-solve (a root fixed where it already is) reads the stored per-layer kurtosis: same tree.
    root = next(m.id for m in back.models if m.is_root)
    again = resolve(back, Constraints(roots=(root,)))
    assert {(e.parent, e.child) for e in again.edges} == {(e.parent, e.child) for e in rec.edges}


def test_a_tree_whose_runs_read_near_gaussian_is_left_alone(tmp_path_factory: pytest.TempPathFactory,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Our zoo's recipe (children on new tasks with new heads, trained 30-80 steps after a 300-step root),
    here with the fitting ViT at width 32: single runs read near-Gaussian, one of them as heavy-tailed as
    two runs' difference, and without the tree check (:func:`.ties.lift_trusted`) a right edge is lifted
    to its grandparent. The tree check reads the tree's edges (median above
    :data:`.ties.LIFT_TREE_KURTOSIS`) and leaves it alone."""
    import json

    from mother_zoo.variety import Collection, Recipe, generate_collection

    # Recipe name and seed from the search that found it (benchmarks/RESULTS.md, issue 12, "Siblings lifted
    # where a tree's runs read alike"): the name seeds the tree's draws.
    zoo_like = Recipe("zoolike", "vit", method="fft", head="new", root_steps=300, child_steps=(30, 80),
                      shape=(3, 3))
    folder = generate_collection(Collection("zl-10", ((zoo_like, 10),)), tmp_path_factory.mktemp("zoolike"))
    stats = compute_statistics(discover([folder]), device="cpu")
    truth = set(load_truth(folder / "truth.json"))
    rec = recover(stats)
    assert not any(e.tie_lifted for e in rec.edges)
    assert rec.problem is not None and rec.problem.tie_kurtosis, "the tree reads Adam-like (near-tie gate)"
    parent = np.full(rec.problem.n_models, -1)
    index = {m: i for i, m in enumerate(rec.problem.ids)}
    for e in rec.edges:
        parent[index[e.child]] = index[e.parent]
    assert not lift_trusted(parent, np.arange(rec.problem.n_models), rec.problem.tie_kurtosis)
    # Without the tree check the lift moves a right edge to the grandparent.
    monkeypatch.setattr(ties_module, "LIFT_TREE_KURTOSIS", float("inf"))
    off = recover(stats)
    lifted = [e for e in off.edges if e.tie_lifted]
    assert lifted and all((e.tie_displaced, e.child) in truth and (e.parent, e.child) not in truth for e in lifted)
    assert json.loads((folder / "truth.json").read_text())["meta"]["trees"][0]["recipe"] == "zoolike"


def test_lift_trusted_reads_the_median_edge() -> None:
    # 0 -> 1 -> {2, 3}: the edges 1 -> 2 and 1 -> 3 and 0 -> 1, read through each child's candidates.
    parent = np.array([-1, 0, 1, 1])
    sign_like = {1: _tie((0,), [[-1.6] * 4]), 2: _tie((1, 0), [[-1.5] * 4, [-1.0] * 4]),
                 3: _tie((1, 0), [[2.0] * 4, [-1.2] * 4])}
    assert lift_trusted(parent, np.arange(4), sign_like)  # one heavy edge does not decide the median
    gaussian = {c: _tie(t.candidates, [[v + 1.3] * 4 for v in t.kurtosis]) for c, t in sign_like.items()}
    assert not lift_trusted(parent, np.arange(4), gaussian)
    # Only the tree's own members count, and a tree with nothing read is not trusted.
    assert not lift_trusted(parent, np.array([0]), sign_like)
    assert LIFT_TREE_KURTOSIS < 0


def _tie(candidates: tuple[int, ...], layers: list[list[float]]) -> TieKurtosis:
    per_layer = np.array(layers, dtype=np.float64)
    return TieKurtosis(candidates, np.nanmean(per_layer, axis=1), per_layer)


def test_sign_test_reads_layers_as_replicates() -> None:
    # 6 of 6 layers: 1/64; 5 of 6: 7/64; a layer not measured for one of the pair does not count.
    t = _tie((1, 0), [[0.5] * 6, [-1.0] * 6])
    assert sign_test(t, 1, 0) == pytest.approx(1 / 64)
    t = _tie((1, 0), [[0.5] * 5 + [-2.0], [-1.0] * 6])
    assert sign_test(t, 1, 0) == pytest.approx(7 / 64)
    t = _tie((1, 0), [[0.5] * 5 + [np.nan], [-1.0] * 6])
    assert sign_test(t, 1, 0) == pytest.approx(1 / 32)
    # One layer's heavy tail does not decide it (the mean would).
    t = _tie((1, 0), [[9.0] + [-1.0] * 7, [-0.5] * 8])
    assert float(t.kurtosis[0]) > float(t.kurtosis[1]) and sign_test(t, 1, 0) > LIFT_ALPHA
    # Not measured per layer (a problem saved before the field), or not a candidate: no evidence.
    assert sign_test(TieKurtosis((1, 0), np.array([0.5, -1.0])), 1, 0) == 1.0
    assert sign_test(t, 1, 7) == 1.0


def test_lift_siblings_cascades_and_honours_constraints(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lift's own bookkeeping; the tree check (lift_trusted, tested above) would read these few edges'
    # median as heavy-tailed, so it is set aside here.
    monkeypatch.setattr(ties_module, "LIFT_TREE_KURTOSIS", float("inf"))
    # 0 -> 1 -> 2 -> 3 read as a chain; the layers say 2 and 3 are 0's children (siblings of 1).
    parent = np.array([-1, 0, 1, 2])
    up = [[0.5] * 8, [-1.0] * 8, [-1.0] * 8]  # W_c - W_s less platykurtic than W_c - W_p in every layer
    ties = {1: _tie((0, 2), [[-1.0] * 8, [0.0] * 8]),
            2: _tie((1, 0, 3), up),
            3: _tie((2, 0, 1), [[0.5] * 8, [-1.0] * 8, [0.6] * 8])}
    out, moved = lift_siblings(parent, np.arange(4), ties)
    # 2 is lifted to 0; then 3, under 2, is asked against 2's new parent 0 and lifted too.
    assert out.tolist() == [-1, 0, 0, 0]
    assert moved[2].displaced == 1 and moved[2].candidates == (0, 1)
    assert moved[3].displaced == 2 and moved[3].candidates == (0, 2)
    # A child pinned by a constraint or a typed relation, a banned edge, a typed leaf as the new parent:
    # nothing moves.
    assert lift_siblings(parent, np.arange(4), ties, pinned={2, 3})[0].tolist() == parent.tolist()
    banned = lift_siblings(parent, np.arange(4), ties, banned={(0, 2)})[0]
    assert banned[2] == 1
    assert lift_siblings(parent, np.arange(4), ties, no_children={0})[0].tolist() == parent.tolist()
    # A parent without its own TieKurtosis (not a full fine-tune) is not lifted past.
    assert lift_siblings(parent, np.arange(4), {2: ties[2]})[0].tolist() == parent.tolist()
    # A chain the layers confirm (W_c - W_s the more platykurtic) stays; so does one whose edge reads
    # platykurtic (an Adam run) however the layers lean, and one whose grandparent's difference is not.
    for layers in ([[-1.0] * 8, [0.5] * 8], [[-0.2] * 8, [-1.0] * 8], [[0.5] * 8, [0.2] * 8]):
        chain = {1: ties[1], 2: _tie((1, 0), layers)}
        assert lift_siblings(parent[:3], np.arange(3), chain)[1] == {}
