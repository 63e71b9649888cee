"""Recovery on trees whose truth is known by construction (zoo models actually trained)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mother_core import Constraints, RecoverySettings, compute_statistics, discover, recover, resolve
from mother_core.cli import main as cli_main
from mother_core.errors import ConstraintError, InputError
from mother_core.evaluate import evaluate, load_truth
from mother_core.recovery.result import Recovery

pytestmark = pytest.mark.xdist_group("zoo")


@pytest.fixture(scope="module")
def zoo_stats(small_zoo):
    return {name: compute_statistics(discover([folder]), device="cpu") for name, folder in small_zoo.items()}


@pytest.fixture(scope="module")
def recovered(zoo_stats):
    """Each split recovered once with the default settings (a merged-LoRA split takes seconds): the tests
    that only read a default recovery share it. ``resolve``, ``to_dict`` and ``save`` leave a result as it
    was, which :func:`test_inputs_are_not_mutated` checks on a recovery of its own."""
    return {name: recover(stats) for name, stats in zoo_stats.items()}


def _truth(small_zoo, name):
    return load_truth(small_zoo[name] / "truth.json")


def _assert_forest_of_arborescences(rec: Recovery) -> None:
    parent = {e.child: e.parent for e in rec.edges}
    assert len(parent) == len(rec.edges), "a model has two parents"
    for tree in rec.trees:
        members = set(tree.members)
        edges = [e for e in rec.edges if e.child in members]
        assert len(edges) == len(members) - 1
        roots = [m for m in members if m not in parent]
        assert roots == [tree.root]
        assert all(e.parent in members for e in edges)
    for m in rec.model_ids:  # acyclic: every walk up ends at a root
        seen = set()
        while m in parent:
            assert m not in seen
            seen.add(m)
            m = parent[m]


@pytest.mark.parametrize("name, min_placed", [("fft", 0.9), ("lora16", 1.0)])
def test_small_trees_placed(small_zoo, recovered, name, min_placed):
    rec = recovered[name]
    ev = evaluate(rec, _truth(small_zoo, name))
    assert ev.adjusted_rand_index == 1.0  # the two trees found without being told there are two
    assert ev.undirected_accuracy >= min_placed
    _assert_forest_of_arborescences(rec)


def test_lora_tree_recovered_exactly_with_direction(small_zoo, recovered):
    ev = evaluate(recovered["lora16"], _truth(small_zoo, "lora16"))
    assert ev.directed_accuracy == 1.0
    assert ev.root_precision == ev.root_recall == 1.0


def test_beats_the_paper_method(small_zoo, zoo_stats, recovered):
    for name in ("fft", "lora16", "mixed"):
        truth = _truth(small_zoo, name)
        ours = evaluate(recovered[name], truth).directed_accuracy
        paper = evaluate(recover(zoo_stats[name], RecoverySettings(method="paper")), truth).directed_accuracy
        assert ours >= paper, name


def test_mixed_forest_unrelated_models_are_separate_roots(small_zoo, zoo_stats, recovered):
    stats = zoo_stats["mixed"]
    truth = _truth(small_zoo, "mixed")
    rec = recovered["mixed"]
    _assert_forest_of_arborescences(rec)
    ev = evaluate(rec, truth)
    assert ev.adjusted_rand_index == 1.0
    in_truth = {m for e in truth for m in e}
    singletons = [m for m in rec.model_ids if m not in in_truth]
    assert singletons, "the mixed split has unrelated distractors"
    for m in singletons:
        assert rec.model(m).is_root and rec.parent_of(m) is None
    # No edge joins two architectures.
    arch = {m.id: m.architecture for m in stats.models}
    assert len(set(arch.values())) >= 2
    assert all(arch[e.parent] == arch[e.child] for e in rec.edges)


def test_known_number_of_trees_is_honoured(zoo_stats):
    rec = recover(zoo_stats["fft"], RecoverySettings(n_trees=1))
    assert len(rec.trees) == 1 and len(rec.edges) == len(rec.models) - 1


def test_constraints_force_forbid_flip_root(zoo_stats, recovered):
    rec = recovered["fft"]
    edge = rec.edges[0]
    flipped = resolve(rec, Constraints().flipped(edge.parent, edge.child))
    assert flipped.edge(edge.child, edge.parent) is not None
    assert flipped.edge(edge.parent, edge.child) is None
    _assert_forest_of_arborescences(flipped)

    forbidden = resolve(rec, Constraints(forbidden=((edge.parent, edge.child),)))
    assert forbidden.edge(edge.parent, edge.child) is None

    tree = next(t for t in rec.trees if len(t.members) > 2)
    new_root = next(m for m in tree.members if m != tree.root)
    rooted = resolve(rec, Constraints(roots=(new_root,)))
    assert rooted.model(new_root).is_root

    other_tree = next(t for t in rec.trees if t.id != tree.id)
    forced = resolve(rec, Constraints(forced=((other_tree.root, tree.root),)))
    assert forced.edge(other_tree.root, tree.root).constrained
    assert len(forced.trees) == len(rec.trees) - 1  # forcing across trees joins them
    _assert_forest_of_arborescences(forced)

    # The same constraints straight from statistics agree with re-solving.
    direct = recover(zoo_stats["fft"], constraints=Constraints(roots=(new_root,)))
    assert {(e.parent, e.child) for e in direct.edges} == {(e.parent, e.child) for e in rooted.edges}


def test_contradictory_constraints_are_a_clear_error(recovered):
    rec = recovered["fft"]
    e = rec.edges[0]
    with pytest.raises(ConstraintError):
        resolve(rec, Constraints(forced=((e.parent, e.child),), forbidden=((e.parent, e.child),)))
    with pytest.raises(ConstraintError, match="unknown model"):
        resolve(rec, Constraints(roots=("no-such-model",)))


def test_solver_errors_name_models_by_id_and_carry_their_indices(recovered):
    rec = recovered["fft"]
    ids = rec.model_ids
    tree = next(t for t in rec.trees if len(t.members) >= 3)
    child = next(m for m in tree.members if m != tree.root)
    others = [m for m in tree.members if m != child]
    # Two forced parents: the error names both by id and keeps their model indices as data.
    with pytest.raises(ConstraintError) as info:
        resolve(rec, Constraints(forced=((others[0], child), (others[1], child))))
    err = info.value
    assert {ids[err.models["first"]], ids[err.models["second"]]} == set(others[:2])
    assert ids[err.models["child"]] == child
    assert f"Model {child} is forced to have two parents" in str(err)
    # Forbidding every parent of two models leaves their tree needing two roots: a count stays a count.
    pair = tree.members[:2]
    with pytest.raises(ConstraintError) as info:
        resolve(rec, Constraints(forbidden=tuple((m, c) for c in pair for m in tree.members if m != c)))
    err = info.value
    assert "at least 2 roots are needed" in str(err)
    assert {ids[i] for i in err.models["roots"]} == set(pair)
    assert all(m in str(err) for m in pair)


def test_old_result_files_still_load_and_resolve(recovered, tmp_path):
    rec = recovered["fft"]
    data = rec.to_dict()
    # A file written before the per-tree norm sign, rank use and model facts were recorded.
    for key in ("norm_sign", "rank_distance_used", "model_paths", "model_formats", "declared_parents",
                "n_params", "squared_distance"):
        data["extra"].pop(key, None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    back = Recovery.load(old)
    assert [m.path for m in back.models] == [m.path for m in rec.models]
    e = back.edges[0]
    again = resolve(back, Constraints().flipped(e.parent, e.child))
    assert again.edge(e.child, e.parent) is not None
    assert [m.path for m in again.models] == [m.path for m in rec.models]


def test_inputs_are_not_mutated(zoo_stats):
    stats = zoo_stats["fft"]
    before = {k: getattr(stats, k).copy() for k in ("sq_dist", "kurtosis", "norm", "present")}
    rec = recover(stats)
    cost = rec.cost_matrix.copy()
    resolve(rec, Constraints(forbidden=((rec.edges[0].parent, rec.edges[0].child),)))
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(stats, k), v)
    np.testing.assert_array_equal(rec.cost_matrix, cost)


def test_confidence_and_alternatives_are_reported(zoo_stats, recovered):
    rec = recovered["mixed"]
    for e in rec.edges:
        assert 0.0 <= e.confidence <= 1.0
        assert e.confidence == pytest.approx(e.placement_confidence * e.direction_confidence)
        assert [a.cost for a in e.alternatives] == sorted(a.cost for a in e.alternatives)
        assert len(e.layer_distance) == len(rec.layers)
        assert rec.model(e.child).alternatives == e.alternatives
    tree = next(t for t in rec.trees if len(t.members) > 1)
    root = rec.model(tree.root)
    assert root.alternatives and all(a.parent in tree.members for a in root.alternatives)
    # Only the additivity refinement and the near-tie rule (mother_core.recovery.ties) keep a parent that
    # another candidate beats pairwise; without them every alternative costs at least the chosen edge.
    plain = recover(zoo_stats["mixed"], RecoverySettings(refine=False, kurtosis_ties=False))
    for e in plain.edges:
        chosen = plain.cost_matrix[plain.model_ids.index(e.parent), plain.model_ids.index(e.child)]
        assert all(a.cost >= chosen for a in e.alternatives)


def test_square_attention_selection_needs_square_matrices(zoo_stats):
    # The paper's layer choice: the UNet and Llama (GQA) trees of the mixed split still have some, but a
    # selection that matches nothing must say so rather than crash.
    with pytest.raises(InputError, match="matches no tensor"):
        recover(zoo_stats["fft"], RecoverySettings(layers="matrices", name_pattern="no-such-layer"))


def test_result_json_round_trip_and_resolve(recovered, tmp_path):
    rec = recovered["mixed"]
    rec.save(tmp_path / "r.json")
    back = Recovery.load(tmp_path / "r.json")
    assert [(e.parent, e.child) for e in back.edges] == [(e.parent, e.child) for e in rec.edges]
    e = back.edges[0]
    again = resolve(back, Constraints().flipped(e.parent, e.child))
    assert again.edge(e.child, e.parent) is not None


def test_cli_recover_evaluate_export(small_zoo, tmp_path, capsys):
    folder = small_zoo["lora16"]
    out = tmp_path / "result.json"
    assert cli_main(["recover", str(folder), "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "c")]) == 0
    data = json.loads(out.read_text())
    assert {"models", "edges", "trees"} <= data.keys()
    assert {"id", "path"} <= data["models"][0].keys()
    assert {"parent", "child", "distance", "confidence"} <= data["edges"][0].keys()
    capsys.readouterr()
    assert cli_main(["evaluate", str(out), "--truth", str(folder / "truth.json")]) == 0
    assert "100" in capsys.readouterr().out  # directed accuracy 100% on this tree
    for fmt in ("newick", "graphml", "node-link", "base-model"):
        assert cli_main(["export", str(out), "--format", fmt, "--out", str(tmp_path / f"x.{fmt}")]) == 0
        assert (tmp_path / f"x.{fmt}").stat().st_size > 0
    assert cli_main(["recover", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_rank_distance_is_used_for_lora_trees_only(zoo_stats, recovered):
    lora = _readings(recovered["lora16"], "rank_distance_used")
    full = _readings(recovered["fft"], "rank_distance_used")
    assert lora and all(lora.values())  # merged LoRA: differences are low rank
    assert full and not any(full.values())  # full fine-tuning: they are not
    never = _readings(recover(zoo_stats["lora16"], RecoverySettings(use_rank="never")), "rank_distance_used")
    assert not any(never.values())


def _readings(rec, what):
    """One per-tree reading of the trees with more than one model (the only ones read)."""
    return {t.id: getattr(rec.problem.reading(t.id), what) for t in rec.trees if len(t.members) > 1}


def test_norm_cue_reads_growth_for_merged_lora(recovered):
    # A merged LoRA adds B @ A to a frozen base: norms grow by construction, and the per-tree
    # reading of the norm cue's sign must find that from the tree's shape.
    signs = _readings(recovered["lora16"], "norm_sign")
    assert signs and all(v == 1.0 for v in signs.values())


@pytest.mark.parametrize("method", ["mother+", "paper"])
def test_layer_votes_are_the_counts_the_engine_used(zoo_stats, method, tmp_path):
    """The per-layer votes exported on every edge add up to the engine's counts, in both regimes, after a
    flip (resolve) and after a save/load round trip: the Edge page draws them instead of recomputing.
    (A pair first joined by a correction has no per-layer data in the result: no votes, not guessed ones.)"""
    rec = recover(zoo_stats["fft"], RecoverySettings(method=method))
    e0 = rec.edges[0]
    flipped = resolve(rec, Constraints(forced=((e0.child, e0.parent),)))
    loaded = Recovery.load(rec.save(tmp_path / "r.json") or tmp_path / "r.json")
    assert all(e.layer_votes for e in rec.edges + loaded.edges)
    assert flipped.edge(e0.child, e0.parent).layer_votes
    for r in (rec, flipped, loaded):
        for e in r.edges:
            votes = np.asarray(e.layer_votes)
            if not votes.size:
                assert not e.layer_distance and r is flipped
                continue
            assert votes.size == len(r.layers), e
            assert int((votes == 1).sum()) == e.layers_voting_forward
            assert int((votes == -1).sum()) == e.layers_voting_backward
            assert set(np.unique(votes)) <= {-1, 0, 1}
