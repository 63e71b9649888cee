"""Local corrections on the demo sets: forbid, flip and "use this parent" change only what they must."""

from __future__ import annotations

from pathlib import Path

import pytest

from mother_core import Constraints, RecoverySettings, compute_statistics, discover, recover, resolve
from mother_core.errors import ConstraintError
from mother_core.evaluate import evaluate, load_truth
from mother_core.recovery.recover import use_parent

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("corrections")

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


@pytest.fixture(scope="module", params=["vit-tree", "mixed-forest"])
def demo(request):
    folder = DEMO / request.param
    stats = compute_statistics(discover([folder]), device="cpu")
    # The app's layer selection, on which the issue measured the re-rooting; without the near-tie
    # kurtosis rule, which places the vit-tree demo's one wrong edge right (tests/test_ties.py): these
    # tests need a wrong edge to correct.
    rec = recover(stats, RecoverySettings(layers="matrices", kurtosis_ties=False))
    return rec, load_truth(folder / "truth.json")


def _edges(rec):
    return {(e.parent, e.child) for e in rec.edges}


def _wrong(rec, truth):
    t = set(truth)
    wrong = [e for e in rec.edges if (e.parent, e.child) not in t]
    assert wrong, "the demo is expected to have a wrong edge to correct"
    return wrong


def test_forbid_moves_only_the_child_and_keeps_roots(demo):
    rec, truth = demo
    for e in _wrong(rec, truth):
        fixed = resolve(rec, Constraints(forbidden=((e.parent, e.child),)))
        assert fixed.roots == rec.roots
        changed = _edges(fixed) - _edges(rec)
        assert len(changed) == 1 and next(iter(changed))[1] == e.child
        # The child took its best ranked alternative that is allowed (not below itself).
        assert fixed.parent_of(e.child) == e.alternatives[0].parent
        assert evaluate(fixed, truth).directed_accuracy >= evaluate(rec, truth).directed_accuracy


def test_forbidding_the_one_wrong_edge_fixes_the_demo(demo):
    rec, truth = demo
    wrong = _wrong(rec, truth)
    if len(wrong) == 1:
        fixed = resolve(rec, Constraints(forbidden=((wrong[0].parent, wrong[0].child),)))
        assert evaluate(fixed, truth).directed_accuracy == 1.0


def test_flip_swaps_two_models_and_reverses_nothing_else(demo):
    rec, truth = demo
    for e in rec.edges[:4] + _wrong(rec, truth):
        flipped = resolve(rec, Constraints().flipped(e.parent, e.child))
        assert flipped.edge(e.child, e.parent) is not None and flipped.edge(e.parent, e.child) is None
        before, after = _edges(rec), _edges(flipped)
        reversed_ = {(p, c) for p, c in after if (c, p) in before}
        assert reversed_ == {(e.child, e.parent)}
        # Only the flipped pair's own edges move: the child takes the parent's place.
        assert all(e.parent in pair or e.child in pair for pair in after ^ before)
        grand = rec.parent_of(e.parent)
        assert flipped.parent_of(e.child) == grand


def test_use_this_parent_keeps_the_rest(demo):
    rec, _ = demo
    e = max(rec.edges, key=lambda x: len(x.alternatives))
    alt = e.alternatives[0].parent
    moved = use_parent(rec, e.child, alt)
    assert moved.parent_of(e.child) == alt
    assert _edges(moved) - _edges(rec) == {(alt, e.child)}
    assert moved.edge(alt, e.child).constrained
    # Choosing again replaces the earlier choice rather than contradicting it.
    again = use_parent(moved, e.child, e.parent)
    assert _edges(again) == _edges(rec)


def test_contradictions_still_raise(demo):
    rec, _ = demo
    e = rec.edges[0]
    with pytest.raises(ConstraintError):
        resolve(rec, Constraints(forced=((e.parent, e.child),), forbidden=((e.parent, e.child),)))


def test_card_lines_call_a_parent_the_user_set_so_not_recovered(demo):
    # hostile4's leftover: the Export page's base_model lines called a forced edge a "recovered parent".
    from mother_core.export import base_model_lines

    rec, _ = demo
    e = max(rec.edges, key=lambda x: len(x.alternatives))
    moved = use_parent(rec, e.child, e.alternatives[0].parent)
    flipped = resolve(rec, Constraints().flipped(e.parent, e.child))
    for fixed, child in ((moved, e.child), (flipped, e.parent)):
        blocks = {b.split(" (", 1)[0]: b for b in base_model_lines(fixed).strip().split("\n\n")}
        assert blocks[f"# {child}"].startswith(f"# {child} (parent set by you (a constraint), not recovered, ")
        others = [b for k, b in blocks.items() if k != f"# {child}"]  # the one forced edge is the child's
        assert others and all("(recovered parent" in b for b in others)


def test_a_later_click_overrides_an_earlier_constraint_on_the_same_edge(demo):
    """The Edge page's controls in the orders a user clicks them (found browsing the 279-model result): each
    left both a forced and a forbidden copy of one edge, which ``resolve`` refused ("cannot all hold"), so the
    page undid the click."""
    rec, _ = demo
    e = next(x for x in rec.edges if not x.chosen_by_tie)
    # Forbid the edge, then "use this parent" with its own parent: the edge comes back.
    back = resolve(rec, Constraints().forbidding(e.parent, e.child).with_parent(e.parent, e.child))
    assert back.parent_of(e.child) == e.parent
    # Flip, then flip back: the first edge is restored.
    once = Constraints().flipped(e.parent, e.child)
    assert resolve(rec, once).parent_of(e.parent) == e.child
    twice = once.flipped(e.child, e.parent)
    assert resolve(rec, twice).parent_of(e.child) == e.parent
    assert (e.parent, e.child) not in twice.forbidden and (e.child, e.parent) in twice.forbidden
    # Force an edge, then forbid it: the forbid wins (the child takes another parent).
    forbidden = resolve(rec, Constraints().with_parent(e.parent, e.child).forbidding(e.parent, e.child))
    assert forbidden.parent_of(e.child) != e.parent
    # Force a parent, then make the child a root: it is a root.
    assert resolve(rec, Constraints().with_parent(e.parent, e.child).with_root(e.child)).parent_of(e.child) is None


def test_use_parent_wins_over_an_earlier_forbid_or_root(demo):
    """The library's "use this parent" follows the Edge page's rule (the later choice wins); it used to keep a
    forbid of the very edge asked for, or the child fixed as a root, and refuse the pair as contradictory."""
    rec, _ = demo
    e = next(x for x in rec.edges if not x.chosen_by_tie)
    forbidden = resolve(rec, Constraints().forbidding(e.parent, e.child))
    assert use_parent(forbidden, e.child, e.parent).parent_of(e.child) == e.parent
    rooted = resolve(rec, Constraints().with_root(e.child))
    assert use_parent(rooted, e.child, e.parent).parent_of(e.child) == e.parent
