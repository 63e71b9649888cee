"""How trees read their direction: own evidence, pooled over an architecture, or the prior."""

from __future__ import annotations

from pathlib import Path

import pytest

from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.recovery.direction import GROWTH_PRIOR, PRIOR_CONFIDENCE, SHRINK_MARGIN, Reading, choose_readings

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("direction")

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"
OPTIONS = [("specialization", 1.0), ("generalization", 1.0), ("specialization", -1.0), ("generalization", -1.0)]


def _readings(excess: dict[tuple[str, float], float]) -> list[Reading]:
    """Readings of one tree whose costs exceed the best by ``excess`` penalty units (scale 1)."""
    return [Reading(r, s, 10.0 + excess.get((r, s), 0.0), 0.0, i) for i, (r, s) in enumerate(OPTIONS)]


def test_strong_own_evidence_is_kept():
    chosen = choose_readings({0: _readings({o: 3.0 for o in OPTIONS if o != ("generalization", 1.0)})},
                             {0: 1.0}, {0: "a"})
    assert (chosen[0].regime, chosen[0].norm_sign, chosen[0].basis) == ("generalization", 1.0, "own")
    assert chosen[0].confidence > 0.95


def test_a_two_model_tree_borrows_its_architectures_reading():
    # Tree 0 (large) clearly reads generalization; tree 1 (base + one child) reads as well reversed:
    # a reading and its mirror (other regime, other norm sign) tie; tree 2 is alone in its architecture.
    # Tree 3 is alone too and reads the same with every reading.
    big = _readings({o: 4.0 for o in OPTIONS if o != ("generalization", 1.0)})
    small = _readings({("generalization", 1.0): 0.5, ("specialization", -1.0): 0.5})
    lone = _readings({("specialization", 1.0): 0.3, ("generalization", -1.0): 0.3})
    blank = _readings({})
    chosen = choose_readings({0: big, 1: small, 2: lone, 3: blank}, {t: 1.0 for t in range(4)},
                             {0: "a", 1: "a", 2: "b", 3: "c"})
    assert (chosen[1].regime, chosen[1].norm_sign, chosen[1].basis) == ("generalization", 1.0, "pooled")
    assert "borrows" in chosen[1].note
    # Alone, the mirror tie leaves the norm sign to the prior (growth); the tree still tells its regime
    # given growth (generalization beats specialization by 0.3 there), and is as sure as growth is.
    assert (chosen[2].regime, chosen[2].norm_sign, chosen[2].basis) == ("generalization", 1.0, "growth")
    assert chosen[2].confidence == GROWTH_PRIOR and "taken to grow" in chosen[2].note
    # Nothing told at all: the prior.
    assert (chosen[3].regime, chosen[3].norm_sign, chosen[3].basis) == ("specialization", 1.0, "prior")
    assert chosen[3].confidence == PRIOR_CONFIDENCE and "prior" in chosen[3].note


def test_shrinking_norms_need_evidence_beyond_the_prior_odds():
    # The best reading shrinks, by a margin over the best growing reading below SHRINK_MARGIN: the
    # tree's norms are taken to grow (issue 10: a continued-pre-training tree whose norms grow on
    # every edge read "shrinking" by 0.21 units and came out reversed whole).
    weak = SHRINK_MARGIN * 0.6
    near = _readings({("specialization", 1.0): weak, ("generalization", 1.0): 2 * weak,
                      ("specialization", -1.0): 1.5 * weak})
    chosen = choose_readings({0: near}, {0: 1.0}, {0: "a"})
    assert chosen[0].norm_sign == 1.0 and chosen[0].regime == "specialization"
    assert chosen[0].basis == "growth"
    # Beyond it, the tree's own evidence reads shrinking norms.
    strong = SHRINK_MARGIN * 1.5
    far = _readings({("specialization", 1.0): strong, ("generalization", 1.0): 2 * strong,
                     ("specialization", -1.0): 2 * strong})
    chosen = choose_readings({0: far}, {0: 1.0}, {0: "a"})
    assert (chosen[0].regime, chosen[0].norm_sign, chosen[0].basis) == ("generalization", -1.0, "own")
    # A weak shrinking reading is not borrowed either: a two-model tree of the same architecture keeps growth.
    pair = _readings({("generalization", 1.0): 0.3, ("specialization", -1.0): 0.3})
    chosen = choose_readings({0: near, 1: pair}, {0: 1.0, 1: 1.0}, {0: "a", 1: "a"})
    assert chosen[1].norm_sign == 1.0


def test_a_fixed_regime_is_reported_as_fixed():
    only = [Reading("specialization", 1.0, 1.0, 0.0, 0)]
    chosen = choose_readings({0: only}, {0: 1.0}, {0: "a"})
    assert chosen[0].basis == "fixed" and chosen[0].confidence == 1.0


@pytest.fixture(scope="module")
def forest():
    stats = compute_statistics(discover([DEMO / "mixed-forest"]), device="cpu")
    return recover(stats, RecoverySettings())


def test_every_tree_says_what_its_direction_rests_on(forest):
    for t in forest.trees:
        if len(t.members) > 1:
            assert t.direction_basis in ("own", "pooled", "growth", "prior") and t.direction_note
    # A tree resting on the prior cannot give an edge more direction confidence than the prior has.
    for e in forest.edges:
        tree = next(t for t in forest.trees if e.child in t.members)
        if tree.direction_basis == "prior":
            assert e.direction_confidence <= PRIOR_CONFIDENCE + 1e-9


def test_edges_carry_each_cues_vote(forest):
    for e in forest.edges:
        assert {"kurtosis", "norm", "scale", "effective_rank", "subspace"} <= set(e.cues)
        assert all(-1.0 <= v <= 1.0 for v in e.cues.values())
    ids = forest.model_ids
    ev = forest.problem.evidence
    for e in forest.edges:  # the fused evidence is the sum of the enabled cues' votes
        tree = next(t for t in forest.trees if e.child in t.members)
        if tree.direction_basis == "prior":
            # Nothing tells the tree's regime, so the kurtosis cue (whose sign it is) does not vote:
            # the edge points the way norm growth, scale and subspace (which have no sign to read) say.
            free = e.cues["norm"] + e.cues["scale"] + e.cues["subspace"]
            assert ev[ids.index(e.parent), ids.index(e.child)] == pytest.approx(free)
            assert free >= 0
        else:
            fused = e.cues["kurtosis"] + e.cues["norm"] + e.cues["scale"] + e.cues["subspace"]
            assert ev[ids.index(e.parent), ids.index(e.child)] == pytest.approx(fused)



def test_the_scale_cue_orients_edges_but_does_not_choose_readings(forest):
    """Scale has no sign to read: every tree of the demo forest (its UNet chain of continued
    pre-training included, which reads as well mirrored on the signed cues) takes the reading it takes
    without the cue (recover.reading_cues), and the demo stays as right (benchmarks/RESULTS.md)."""
    from mother_core.evaluate import evaluate, load_truth
    from mother_core.recovery.recover import reading_cues

    assert reading_cues("kurtosis+norm+scale") == "kurtosis+norm" and reading_cues("scale") == "scale"
    stats = compute_statistics(discover([DEMO / "mixed-forest"]), device="cpu")
    without = recover(stats, RecoverySettings(direction_cues="kurtosis+norm"))
    for t in forest.problem.readings:
        a, b = forest.problem.reading(t), without.problem.reading(t)
        assert (a.regime, a.norm_sign, a.basis) == (b.regime, b.norm_sign, b.basis)
    truth = load_truth(DEMO / "mixed-forest" / "truth.json")
    assert evaluate(forest, truth).directed_accuracy >= evaluate(without, truth).directed_accuracy

def _fine_tuned(sd: dict, seed: int, factor: float) -> dict:
    """A child: every matrix rescaled by ``factor`` (decoupled weight decay shrinks every tensor by one
    factor) plus an update orthogonal to it, of a size that differs from layer to layer."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (k, w) in enumerate(sd.items()):
        if w.dim() != 2:
            out[k] = w.clone()
            continue
        u = torch.randn(w.shape, generator=g, dtype=torch.float64)
        w64 = w.double()
        u -= (u * w64).sum() / (w64 * w64).sum() * w64  # orthogonal to the parent's weights
        u *= (0.05 + 0.04 * (i % 5)) * w64.norm() / u.norm()
        out[k] = (factor * w64 + u).float()
    return out


def test_scale_cue_orients_growth_and_weight_decay_alike(tmp_path):
    """The scale cue (features.scale_fit) points parent -> child whether norms grow or shrink; the
    norm cue flips with weight decay (why the norm sign is read per tree and scale is not)."""
    import checkpoint_factory as cf

    from mother_core.recovery.features import pair_evidence, select_layers

    parent = cf.llama_state(0)
    sets = {"parent": parent, "grown": _fine_tuned(parent, 1, 1.0), "decayed": _fine_tuned(parent, 2, 0.97)}
    for name, sd in sets.items():
        cf.save_safetensors(tmp_path / name / "model.safetensors", sd)
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ev = pair_evidence(stats, select_layers(stats, "matrices"))
    i = {m: k for k, m in enumerate(stats.model_ids)}
    p = i["parent"]
    for child in ("grown", "decayed"):
        c = i[child]
        assert ev.scale_fit[p, c] > 0.5 and ev.scale_fit[c, p] == pytest.approx(-ev.scale_fit[p, c])
    assert ev.norm_growth[p, i["grown"]] > 0.5 > -0.5 > ev.norm_growth[p, i["decayed"]]
    # A tree whose every child shrinks (one recipe, strong decoupled decay) comes out rooted at its
    # parent with the defaults.
    for name, sd in {"decayed-2": _fine_tuned(parent, 3, 0.97), "decayed-3": _fine_tuned(parent, 4, 0.96)}.items():
        cf.save_safetensors(tmp_path / name / "model.safetensors", sd)
    (tmp_path / "grown").rename(tmp_path.parent / f"{tmp_path.name}-grown")
    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"), RecoverySettings())
    assert {(e.parent, e.child) for e in rec.edges} == {("parent", f"decayed{s}") for s in ("", "-2", "-3")}
