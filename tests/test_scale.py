"""Sketches, candidate parents, the sparse path, the sketch store (incremental runs) and Dask fingerprinting
(issue "Ten thousand models", docs/SCALE.md). Models: a small forest of real trained MLPs
(mother_zoo/mlp_forest.py: each child takes SGD steps from its parent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mother_core.evaluate import evaluate, load_truth
from mother_core.export import to_newick
from mother_core.fingerprinting import recover_at_scale, sparse_statistics
from mother_core.io.discovery import discover
from mother_core.pipeline import recover_paths
from mother_core.recovery.candidates import candidate_pairs, embedding, nearest_neighbours, recall
from mother_core.recovery.result import Recovery, RecoverySettings
from mother_core.recovery.sparse import pair_table
from mother_core.stats.compute import compute_statistics
from mother_core.stats.fingerprint import fingerprint_model
from mother_core.stats.sketch import HASH_BLOCK, SketchSpec, sketch, sketch_into
from mother_zoo.mlp_forest import generate_forest

# Its tests share the forest and its dense recovery (module fixtures): one worker makes them once.
pytestmark = pytest.mark.xdist_group("scale")

N_MODELS = 24


@pytest.fixture(scope="session")
def forest(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp-forest")
    plan = generate_forest(out, N_MODELS, family_size=8, seed=3, batch_models=64)
    return out, plan


def _parents(found, truth_path) -> list[int]:
    ids = [r.id for r in found.models]
    ix = {m: i for i, m in enumerate(ids)}
    parent = [-1] * len(ids)
    for p, c in load_truth(truth_path):
        parent[ix[c]] = ix[p]
    return parent


# --- sketches ----------------------------------------------------------------------------------
def test_sketch_is_linear_and_chunks_add_up():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(3 * HASH_BLOCK + 17).astype(np.float32)
    whole = sketch(a, "w|x")
    parts = np.zeros(SketchSpec().dim)
    for lo, hi in [(HASH_BLOCK + 5, 2 * HASH_BLOCK), (0, HASH_BLOCK + 5), (2 * HASH_BLOCK, a.size)]:
        sketch_into(parts, a[lo:hi], lo, a.size, "w|x")
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-4)
    b = rng.standard_normal(a.size).astype(np.float32)
    np.testing.assert_allclose(sketch(a, "w|x") - sketch(b, "w|x"), sketch(a - b, "w|x"), atol=1e-3)
    # another slot (or seed) is another projection
    assert not np.allclose(sketch(a, "w|x"), sketch(a, "v|x"))
    assert not np.allclose(sketch(a, "w|x"), sketch(a, "w|x", SketchSpec(seed=1)))


def test_sketch_distance_error_within_the_documented_bound():
    """E ||Sx||^2 = ||x||^2 and relative standard error <= sqrt(2 / d) (docs/SCALE.md)."""
    rng = np.random.default_rng(1)
    d = 128
    ratios = []
    for t in range(300):
        x = rng.standard_normal(5000)
        ratios.append(float(np.sum(sketch(x, f"slot{t}|5000", SketchSpec(dim=d)).astype(np.float64) ** 2))
                      / float(x @ x))
    ratios = np.array(ratios)
    assert abs(ratios.mean() - 1) < 3 * np.sqrt(2 / d) / np.sqrt(len(ratios))
    assert ratios.std() < 1.15 * np.sqrt(2 / d)


def test_small_tensors_are_kept_exactly():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(sketch(x, "b|10"), x)


# --- fingerprints and candidates -------------------------------------------------------------------
def test_fingerprint_moments_match_the_dense_pass(forest):
    out, _ = forest
    found = discover([str(out)])
    dense = compute_statistics(found.models[:3], device="cpu")
    fp = fingerprint_model(found.models[0])
    for s, meta in enumerate(dense.tensors):
        i = fp.slots.index(f"{meta.name}|{','.join(map(str, meta.shape))}")
        n, mean, m2, _, m4 = fp.moments[i]
        assert mean == pytest.approx(dense.mean[0, s], rel=1e-5, abs=1e-7)
        assert m2 / n == pytest.approx(dense.var[0, s], rel=1e-5)
        assert n * m4 / m2**2 - 3 == pytest.approx(dense.kurtosis[0, s], rel=1e-4, abs=1e-5)


def test_true_parents_are_among_the_candidates(forest):
    out, _ = forest
    found = discover([str(out)])
    fps = [fingerprint_model(r) for r in found.models]
    slots = sorted({s for fp in fps for s in fp.slots if "," in s.rsplit("|", 1)[1]})
    nb = nearest_neighbours(embedding(fps, slots), 4)
    assert nb.shape == (N_MODELS, 4)
    assert recall(nb, _parents(found, out / "truth.json")) == 1.0
    pairs = candidate_pairs(nb)
    assert (pairs[:, 0] < pairs[:, 1]).all() and len(np.unique(pairs, axis=0)) == len(pairs)


# --- the sparse path -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense(forest):
    """The forest recovered on the dense path, once (its statistics pass and tree step are the module's
    slowest part); the tests only read it."""
    return recover_paths([str(forest[0])])


def test_sparse_distances_equal_the_dense_path_on_candidate_pairs(forest, dense):
    out, _ = forest
    sparse = sparse_statistics(discover([str(out)]), k=5)
    tab = pair_table(sparse, np.array([len(t.shape) >= 2 for t in sparse.tensors]))
    ids = dense.model_ids
    pos = {m.id: ids.index(m.id) for m in sparse.models}
    a = [pos[sparse.models[i].id] for i in sparse.pairs[:, 0]]
    b = [pos[sparse.models[j].id] for j in sparse.pairs[:, 1]]
    np.testing.assert_allclose(tab.distance, dense.distance_matrix[a, b], rtol=1e-5)
    np.testing.assert_allclose(tab.relative, dense.problem.relative[a, b], rtol=1e-5)


def test_sparse_recovery_finds_the_trees_and_writes_no_dense_matrix(forest, tmp_path):
    out, _ = forest
    truth = load_truth(out / "truth.json")
    result = recover_paths([str(out)], candidates=5)
    score = evaluate(result, truth)
    assert score.adjusted_rand_index == 1.0
    assert score.directed_accuracy >= 0.9
    assert result.problem is None and result.candidate_graph is not None
    path = tmp_path / "result.json"
    result.save(path)
    raw = json.loads(path.read_text())
    assert raw["distance_matrix"] is None and len(raw["candidate_graph"]["pairs"]) <= 5 * N_MODELS
    again = Recovery.load(path)
    assert [(e.parent, e.child) for e in again.edges] == [(e.parent, e.child) for e in result.edges]
    assert again.candidate_graph == raw["candidate_graph"]
    assert to_newick(again).count(";") == len(again.trees)


def test_the_sparse_path_says_it_does_not_break_near_ties_by_kurtosis(forest, dense, tmp_path):
    """The near-tie rule (mother_core/recovery/ties.py) needs the skeletons the sparse path does not keep:
    the result says so, through save and load, and only when the rule was asked for."""
    from mother_core.recovery.sparse import SPARSE_TIES_NOTE

    out, _ = forest
    on = recover_paths([str(out)], candidates=5)
    assert on.notes == [SPARSE_TIES_NOTE] and "sparse path" in on.notes[0]
    assert not any(e.chosen_by_tie for e in on.edges)
    on.save(tmp_path / "result.json")
    assert Recovery.load(tmp_path / "result.json").notes == on.notes
    off = recover_paths([str(out)], RecoverySettings(kurtosis_ties=False), candidates=5)
    assert off.notes == [] and [(e.parent, e.child) for e in off.edges] == [(e.parent, e.child) for e in on.edges]
    assert dense.notes == []  # the dense path applies it: nothing to say

def test_adding_a_model_reads_it_and_its_candidates_only(forest, tmp_path):
    out, _ = forest
    found = discover([str(out)])
    cache = tmp_path / "cache"
    first = sparse_statistics(found.models[:-1], k=4, cache_dir=cache)
    assert first.settings["models_fingerprinted"] == N_MODELS - 1
    again = sparse_statistics(found.models[:-1], k=4, cache_dir=cache)
    assert again.settings["models_fingerprinted"] == 0 and again.settings["pair_models_read"] == 0
    grown = sparse_statistics(found.models, k=4, cache_dir=cache)
    assert grown.settings["models_fingerprinted"] == 1
    new = len(found.models) - 1
    partners = {int(x) for row in grown.pairs for x in row if new in row} - {new}
    assert grown.settings["pair_models_read"] == len(partners) + 1
    fresh = sparse_statistics(found.models, k=4)
    np.testing.assert_array_equal(grown.pairs, fresh.pairs)
    np.testing.assert_allclose(grown.pair_sq, fresh.pair_sq, rtol=1e-12)
    np.testing.assert_allclose(grown.kurtosis, fresh.kurtosis, rtol=1e-12)


def test_a_broken_model_is_a_problem_not_a_failure(forest, tmp_path):
    out, _ = forest
    copy = tmp_path / "set"
    shutil.copytree(out, copy)
    victim = sorted(p for p in copy.iterdir() if p.is_dir())[0]
    (victim / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    result = recover_paths([str(copy)], candidates=4)
    assert victim.name not in result.model_ids and len(result.model_ids) == N_MODELS - 1
    assert any(victim.name in p["path"] for p in result.problems)


def test_compiled_kernels_give_the_numpy_values(forest, monkeypatch):
    """The numba kernels of the per-model pass and the pairs' second read (stats/_sketch_kernels.py) change
    only the float64 rounding of sums: moments, sketches and exact pair distances as numpy computes them."""
    pytest.importorskip("numba")
    out, _ = forest
    found = discover([str(out)])
    compiled = sparse_statistics(found, k=4)
    fp = fingerprint_model(found.models[0])
    monkeypatch.setenv("MOTHER_FUSED_KERNEL", "0")
    plain = sparse_statistics(found, k=4)
    fp_plain = fingerprint_model(found.models[0])
    np.testing.assert_array_equal(compiled.pairs, plain.pairs)
    np.testing.assert_allclose(compiled.pair_sq, plain.pair_sq, rtol=1e-10)
    np.testing.assert_allclose(compiled.kurtosis, plain.kurtosis, rtol=1e-10)
    np.testing.assert_allclose(fp.moments, fp_plain.moments, rtol=1e-10, atol=1e-14)
    for a, b in zip(fp.sketches, fp_plain.sketches):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # stored as float32


def test_headers_of_a_large_set_are_parsed_once(tmp_path):
    """Discovery, the fingerprint pass and the pairs' second read of 10,000 models share one parse per
    header: the memo is bounded by tensor entries, not by a few hundred files."""
    import torch
    from safetensors.torch import save_file

    from mother_core.io.safetensors_header import read_header

    files = []
    for i in range(1200):
        f = tmp_path / f"m{i}.safetensors"
        save_file({"w": torch.zeros(2, 2), "b": torch.zeros(2)}, str(f))
        files.append(f)
    first = [read_header(f) for f in files]
    assert all(read_header(f) is h for f, h in zip(files, first))


# --- Dask ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dask_local_cluster_gives_the_single_process_result(forest, tmp_path):
    distributed = pytest.importorskip("distributed")
    from mother_core.distributed import dask_mapper

    out, _ = forest
    single = recover_at_scale([str(out)], k=4, cache_dir=tmp_path / "single")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        spread = recover_at_scale([str(out)], k=4, cache_dir=tmp_path / "dask", mapper=dask_mapper(client))
    a, b = single.to_dict(), spread.to_dict()
    for d in (a, b):
        d.pop("run_seconds")
    assert a == b


# --- the dense path's honesty rules hold on the sparse path (issue 12 on issue 15's path) -----------
def test_sparse_and_dense_read_a_radial_tree_at_the_counted_share(tmp_path):
    """A barely trained Adam tree (L2 decay moves the weights along themselves: radial share ~0.2, beyond
    the calibrated 0.13) reads its direction at the counted share of such fitting trees read right on both
    paths (not the fitted maps' reading pushed through READING_ODDS_POWER), and both say why."""
    from mother_core.recovery.chain_ties import CHAIN_TIE_SECOND
    from mother_core.recovery.confidence import RADIAL_FLAG_CONFIDENCE, SOLE_CHILD_CONFIDENCE
    from mother_zoo.variety import Collection, Recipe, generate_collection

    adam = Recipe("barely-llama-adam", "llama", hidden=48, method="fft", optimizer="adam", root_steps=100,
                  child_steps=(1, 5), schedule="linear")
    out = generate_collection(Collection("held-barely-test", ((adam, 202),)), tmp_path)
    for result in (recover_paths([str(out)]), recover_at_scale([str(out)], k=5)):
        assert [t.regime_confidence for t in result.trees] == [RADIAL_FLAG_CONFIDENCE]
        assert "radial share" in result.trees[0].direction_note
        forest_edges = [e for e in result.edges if e.relation == "finetune"]  # typed ones (a merge) aside
        assert forest_edges and any(e.direction_confidence == RADIAL_FLAG_CONFIDENCE for e in forest_edges)
        # the rest lowered by a later cap (a root's only child, a chain whose two orders tie), never raised
        assert all(e.direction_confidence == RADIAL_FLAG_CONFIDENCE
                   or e.confidence <= max(CHAIN_TIE_SECOND, SOLE_CHILD_CONFIDENCE) + 1e-12 for e in forest_edges)


def test_sparse_and_dense_cap_a_roots_only_child():
    """On the mixed-forest demo each path caps every edge from a root to its only child (in a tree of
    three or more) at the fitted rate, from the same rule (:func:`.confidence.sole_child_edges`): never above
    it (the sparse path's edge reads 0.82 x 0.5 = 0.41 before the cap since the pooled refit with the prior
    counted, issue 12; the dense path's is above it and sits at it)."""
    from mother_core.recovery.confidence import SOLE_CHILD_CONFIDENCE, sole_child_edges

    demo = str(Path(__file__).resolve().parent.parent / "assets" / "demo" / "mixed-forest")
    for dense, result in ((True, recover_paths([demo])), (False, recover_at_scale([demo], k=5))):
        which = sole_child_edges([(e.parent, e.child, e.relation, e.constrained) for e in result.edges])
        assert which, "the demo has a root with one child on both paths"
        for e in result.edges:
            if (e.parent, e.child) in which:
                assert e.confidence <= SOLE_CHILD_CONFIDENCE + 1e-12
                assert abs(e.confidence - e.placement_confidence * e.direction_confidence) < 1e-12
                if dense:  # above the cap before it: capped to it
                    assert e.confidence == pytest.approx(SOLE_CHILD_CONFIDENCE)
