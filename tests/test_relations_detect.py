"""Typed lineage on a small set written with the real savers: dtype casts, byte copies, a .bin
conversion, linear and task-arithmetic merges, a merged LoRA, an unmerged PEFT adapter, a pruned child
and an unrelated family. Weight updates are synthetic (tests may be; benchmarks/typed.py uses the
typed zoo made by real training and tools)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from checkpoint_factory import hf_folder, llama_state, peft_adapter, torch_bin_folder
from mother_core import recover_paths
from mother_core.evaluate import TruthEdge, evaluate
from mother_core.recovery.recover import resolve
from mother_core.recovery.result import Constraints, Recovery, RecoverySettings
from mother_core.relations.merge import affine_fit

pytestmark = pytest.mark.xdist_group("typed_set")


def _moved(sd, seed, scale=0.03, only=None):
    g = torch.Generator().manual_seed(seed)
    moved = [k for k, v in sd.items() if v.dim() == 2 and (only is None or any(o in k for o in only))]
    return {k: v + scale * torch.randn(v.shape, generator=g) if k in moved else v.clone() for k, v in sd.items()}


def _combine(terms):
    keys = terms[0][1].keys()
    return {k: sum(w * sd[k] for w, sd in terms) for k in keys}


@pytest.fixture(scope="session")
def typed_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("typed")
    r = llama_state(seed=0)
    f1, f2 = _moved(r, 1), _moved(r, 2)
    f11 = _moved(f1, 3)
    lora = dict(r)
    g = torch.Generator().manual_seed(4)
    for k in [k for k in r if "q_proj" in k or "v_proj" in k]:
        lora[k] = r[k] + (0.2 * torch.randn(16, 2, generator=g)) @ (0.2 * torch.randn(2, 16, generator=g))
    pruned = {k: (v[:16] if "gate_proj" in k or "up_proj" in k else v[:, :16] if "down_proj" in k else v)
              for k, v in _moved(f2, 5).items()}
    other = llama_state(seed=9)
    models = {
        "n0": r, "n1": f1, "n2": f2, "n3": f11, "n4": lora, "n9": pruned, "o0": other, "o1": _moved(other, 10),
        "n5": {k: v.to(torch.bfloat16) for k, v in f1.items()},  # a bf16 cast of n1
        "n6": _combine([(0.6, f1), (0.4, f2)]),  # linear merge
        "n7": _combine([(1.0, r), (0.7, _combine([(1, f11), (-1, r)])), (0.5, _combine([(1, f2), (-1, r)]))]),
    }
    for name, sd in models.items():
        hf_folder(root / name, sd)
    torch_bin_folder(root / "n8", f2)  # the same fp32 values as n2, as a PyTorch .bin
    shutil.copytree(root / "n3", root / "na")  # a byte-identical re-upload of n3
    peft_adapter(root / "nb", r, base_name="n0")  # unmerged adapter on n0
    # An adapter whose config names a local path that is not in the set; its model card names n2.
    peft_adapter(root / "nc", f2, base_name="/home/user/checkpoints/llama-base", seed=7)
    (root / "nc" / "README.md").write_text("---\nbase_model: /somewhere/else/n2\nlibrary_name: peft\n---\n")
    truth = [TruthEdge("n0", "n1", "finetune"), TruthEdge("n0", "n2", "finetune"), TruthEdge("n1", "n3", "finetune"),
             TruthEdge("n0", "n4", "lora"), TruthEdge("n1", "n5", "convert"), TruthEdge("n1", "n6", "merge"),
             TruthEdge("n2", "n6", "merge"), TruthEdge("n0", "n7", "merge"), TruthEdge("n3", "n7", "merge"),
             TruthEdge("n2", "n7", "merge"), TruthEdge("n2", "n8", "convert"), TruthEdge("n3", "na", "convert"),
             TruthEdge("n0", "nb", "adapter"), TruthEdge("n2", "nc", "adapter"), TruthEdge("n2", "n9", "prune"),
             TruthEdge("o0", "o1", "finetune")]
    return root, truth, recover_paths([root], RecoverySettings(), device="cpu")


def test_affine_fit_recovers_known_coefficients():
    rng = torch.Generator().manual_seed(0)
    ps = [torch.randn(200, generator=rng) for _ in range(3)]
    c = 0.5 * ps[0] + 0.2 * ps[1] + 0.3 * ps[2]
    d = lambda a, b: float(((a - b) ** 2).sum())  # noqa: E731
    a, res = affine_fit(np.array([d(c, p) for p in ps]), np.array([[d(p, q) for q in ps] for p in ps]))
    assert a == pytest.approx([0.5, 0.2, 0.3], abs=1e-6) and res == pytest.approx(0, abs=1e-6)


def test_every_relation_is_found(typed_set):
    _, truth, rec = typed_set
    got = {(e.parent, e.child): e.relation for e in rec.edges}
    for t in truth:
        assert got.get((t.parent, t.child)) == t.relation, (t, sorted(got.items()))
    ev = evaluate(rec, truth)
    assert ev.edge_f1 == 1.0 and ev.relation_accuracy == 1.0 and ev.reachability == 1.0
    assert ev.adjusted_rand_index == 1.0


def test_merge_weights_and_details(typed_set):
    _, _, rec = typed_set
    lin = {e.parent: e for e in rec.edges_into("n6")}
    assert lin["n1"].merge_weight == pytest.approx(0.6, abs=1e-3)
    assert lin["n2"].merge_weight == pytest.approx(0.4, abs=1e-3)
    assert rec.parent_of("n6") == "n1" and rec.parents_of("n6") == ["n1", "n2"]
    assert lin["n1"].relation_detail.startswith("linear")
    ta = {e.parent: e.merge_weight for e in rec.edges_into("n7")}
    assert ta == pytest.approx({"n3": 0.7, "n2": 0.5, "n0": -0.2}, abs=1e-3)
    assert "task arithmetic" in rec.edges_into("n7")[0].relation_detail


def test_conversions_and_their_direction(typed_set):
    _, _, rec = typed_set
    cast = rec.edges_into("n5")[0]
    assert cast.relation_detail == "fp32 -> bf16" and cast.relation_confidence > 0.9
    assert rec.edges_into("na")[0].relation_detail == "byte-identical"
    assert rec.edges_into("n8")[0].relation_detail.startswith("safetensors -> torch")
    # copies parent nothing in the fine-tune forest
    assert not [e for e in rec.edges if e.parent in ("n5", "na", "n8", "nb")]


def test_typed_edges_survive_json_and_resolve(typed_set, tmp_path):
    _, truth, rec = typed_set
    rec.save(tmp_path / "r.json")
    back = Recovery.load(tmp_path / "r.json")
    again = resolve(back, Constraints(forbidden=(("n0", "n2"),)))
    assert {(e.parent, e.child, e.relation) for e in again.edges if e.child in ("n5", "n6", "n7", "na")} == \
        {(e.parent, e.child, e.relation) for e in rec.edges if e.child in ("n5", "n6", "n7", "na")}
    assert again.parent_of("n2") != "n0"


def test_without_detectors_every_edge_is_a_finetune(typed_set):
    root, truth, _ = typed_set
    plain = recover_paths([root], RecoverySettings(relations="none"), device="cpu")
    assert {e.relation for e in plain.edges} == {"finetune"}
    assert all(len(plain.parents_of(m)) <= 1 for m in plain.model_ids)


def test_refinement_fits_the_fine_tune_skeleton_only(typed_set):
    """The additivity refinement fits full fine-tunes only: the merged LoRA (n4, not its parent n0),
    the pruned child (narrower tensors: it would take its layers out of every pair's distance) and
    the typed children stay where the forest placed them."""
    from mother_core import compute_statistics, discover
    from mother_core.recovery.typed import refinement_core
    from mother_core.relations.detect import detect_relations

    root, _, rec = typed_set
    stats = compute_statistics(discover([root]), device="cpu")
    ids = list(stats.model_ids)
    labels = rec.problem.tree_of
    found = detect_relations(stats, labels)
    assert {ids[i] for i in found.partial} == {"n4"}
    typed = {link.child for link in found.links}
    tree = np.flatnonzero(labels == labels[ids.index("n0")])
    core = {ids[i] for i in refinement_core(stats, tree, typed, found.partial)}
    assert core == {"n0", "n1", "n2", "n3"}


def test_adapter_base_named_by_its_model_card_only(typed_set):
    """adapter_config.json names a base that is not in the set, the model card names one that is: the
    adapter is placed there, and its evidence says that only metadata names it; its confidence is the
    calibrated one of its kind."""
    from mother_core.relations.calibration import CONFIDENCE

    _, _, rec = typed_set
    e = rec.edges_into("nc")[0]
    assert (e.parent, e.relation) == ("n2", "adapter")
    assert e.relation_confidence == CONFIDENCE["adapter: card base"]
    link = next(link for link in rec.problem.links if rec.model_ids[link["child"]] == "nc")
    assert "model card" in link["evidence"] and "metadata only" in link["evidence"]



def test_remembered_skeleton_differences_change_no_result(typed_set):
    """The tree step measures each skeleton difference once (rank cue, then the edges' labels): fewer
    SVDs, and the recovery is the same, to the bit, as one measuring each difference where it is asked for."""
    from mother_core import compute_statistics, discover
    from mother_core.recovery import recover as rec
    from mother_core.stats import skeleton

    root, _, _ = typed_set
    stats = compute_statistics(discover([root]), device="cpu")
    svds: list[int] = []
    singular_values = skeleton.singular_values

    def counting(batch):
        svds.append(len(batch))
        return singular_values(batch)

    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(skeleton, "singular_values", counting)
        for name, run in (("remembered", rec.recover), ("each time", rec._recover)):  # _recover: no memo
            svds.clear()
            result = run(stats, RecoverySettings(), Constraints()).to_dict()
            result.pop("run_seconds", None)
            results[name] = (result, sum(svds))
    assert results["remembered"][0] == results["each time"][0]
    assert 0 < results["remembered"][1] < results["each time"][1], results
