"""The streaming pass: statistics and distances against a float64 reference, chunking, cache, bad input."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from scipy.stats import kurtosis as scipy_kurtosis

from checkpoint_factory import (hf_folder, llama_state, sharded_safetensors, training_checkpoint,
                                truncate, torch_bin_folder)
from mother_core import compute_statistics, discover
from mother_core.errors import TooFewModelsError
from mother_core.io.names import normalise_name
from mother_core.stats.result import WeightStatistics


def _family(tmp_path, dtype=torch.float32):
    """A root, a light fine-tune (1e-4 relative), a frozen copy of one layer, and an unrelated model."""
    root = llama_state(seed=1)
    g = torch.Generator().manual_seed(7)
    light = {k: v + 1e-4 * v.abs().mean() * torch.randn(v.shape, generator=g) for k, v in root.items()}
    heavy = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in root.items()}
    first = next(iter(root))
    heavy[first] = root[first].clone()  # a frozen layer: bit-identical to the parent
    other = llama_state(seed=2)
    sds = {"root": root, "light": light, "heavy": heavy, "other": other}
    sds = {k: {n: t.to(dtype) for n, t in sd.items()} for k, sd in sds.items()}
    for name, sd in sds.items():
        hf_folder(tmp_path / "set" / name, sd)
    return sds


@pytest.fixture(params=["fused", "torch"])
def kernel(request, monkeypatch):
    """Run a test through the fused CPU kernel (for every chunk, however small) and the torch path."""
    from mother_core.stats import execute, fused

    if request.param == "fused":
        if not fused.enabled():
            pytest.skip("numba is not installed")
        monkeypatch.setattr(fused, "WORTH_LOADING_VALUES", 0)
        monkeypatch.setattr(execute, "PIECE_BYTES", 3000)  # many pieces per chunk, blocks cut mid-way
        fused.warm_up()  # loaded before the pass: every chunk takes the kernel, not just those after the load
    else:
        monkeypatch.setenv("MOTHER_FUSED_KERNEL", "0")
    return request.param


def _reference(sds, stats: WeightStatistics):
    ids = stats.model_ids
    for s, meta in enumerate(stats.tensors):
        rows = {}
        for m, mid in enumerate(ids):
            sd = {normalise_name(k): v for k, v in sds[mid].items()}
            if meta.name in sd:
                rows[m] = sd[meta.name].double().numpy().ravel()
        yield s, meta, rows


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_statistics_match_float64_reference(tmp_path, dtype, kernel, device):
    if device == "cuda" and kernel == "fused":
        pytest.skip("the fused kernel is the CPU's; the GPU runs the torch path")
    sds = _family(tmp_path, dtype)
    stats = compute_statistics(discover([tmp_path / "set"]), device=device)
    assert sorted(stats.model_ids) == ["heavy", "light", "other", "root"]
    for s, meta, rows in _reference(sds, stats):
        for m, x in rows.items():
            assert stats.present[m, s]
            np.testing.assert_allclose(stats.mean[m, s], x.mean(), rtol=1e-6, atol=1e-6 * x.std())
            np.testing.assert_allclose(stats.var[m, s], x.var(), rtol=1e-6)
            # Constant tensors (fresh LayerNorm weights) have kurtosis 0 by our convention.
            ref_kurt = scipy_kurtosis(x, fisher=True, bias=True) if x.var() > 0 else 0.0
            np.testing.assert_allclose(stats.kurtosis[m, s], ref_kurt, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(stats.norm[m, s], np.linalg.norm(x), rtol=1e-6)
        for a, xa in rows.items():
            for b, xb in rows.items():
                ref = float(((xa - xb) ** 2).sum())
                got = stats.sq_dist[s, a, b]
                assert got == pytest.approx(ref, rel=1e-5, abs=1e-30), (meta.name, a, b)
                assert stats.equal is not None  # entries equal as stored (every model stores `dtype`)
                assert stats.equal[s, a, b] == float((xa == xb).sum()), (meta.name, a, b)


def test_nearly_identical_and_frozen_layers_keep_precision(tmp_path, kernel):
    sds = _family(tmp_path)
    stats = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    r, light, heavy = (stats.index(k) for k in ("root", "light", "heavy"))
    first = normalise_name(next(iter(sds["root"])))
    s = [t.name for t in stats.tensors].index(first)
    assert stats.sq_dist[s, r, heavy] == 0.0  # frozen layer: exactly zero, no cancellation noise
    first_root, first_light = sds["root"][next(iter(sds["root"]))], sds["light"][next(iter(sds["light"]))]
    ref = float(((first_root.double() - first_light.double()) ** 2).sum())
    assert stats.sq_dist[s, r, light] == pytest.approx(ref, rel=1e-5)


def test_chunked_pass_equals_unchunked(tmp_path, kernel):
    _family(tmp_path)
    found = discover([tmp_path / "set"])
    whole = compute_statistics(found, device="cpu")
    chunked = compute_statistics(found, device="cpu", chunk_elements=50)  # many row chunks per tensor
    # Means and excess kurtoses near zero are compared on an absolute scale, not relatively. Chunks change
    # the order of the fused kernel's float32 partial sums: an excess kurtosis moves by up to ~1e-6
    # (-0.0123827 against -0.0123838 on one CPU), a few float32 roundings of its fourth moment.
    for field, atol in (("mean", 1e-8), ("var", 0), ("kurtosis", 5e-6), ("norm", 0)):
        np.testing.assert_allclose(getattr(chunked, field), getattr(whole, field), rtol=1e-6, atol=atol)
    np.testing.assert_allclose(chunked.sq_dist, whole.sq_dist, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(chunked.equal, whole.equal)


def test_formats_agree(tmp_path):
    """The same weights saved as sharded safetensors, a .bin folder and a nested training checkpoint."""
    sd = llama_state(seed=3)
    g = torch.Generator().manual_seed(1)
    child = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()}
    sharded_safetensors(tmp_path / "a" / "root", sd)
    torch_bin_folder(tmp_path / "b" / "root", sd)
    training_checkpoint(tmp_path / "c" / "root.pth.tar", sd)
    hf_folder(tmp_path / "child", child)
    results = [compute_statistics(discover([tmp_path / d / ("root.pth.tar" if d == "c" else "root"),
                                            tmp_path / "child"]), device="cpu") for d in "abc"]
    for other in results[1:]:
        np.testing.assert_allclose(other.sq_dist, results[0].sq_dist, rtol=1e-6)
        np.testing.assert_allclose(other.kurtosis, results[0].kurtosis, rtol=1e-6)


def test_cache_rerun_reads_nothing_and_new_model_reads_linear(tmp_path, kernel):
    _family(tmp_path)
    cache = tmp_path / "cache"
    first = compute_statistics(discover([tmp_path / "set"]), device="cpu", cache_dir=cache)
    assert first.settings["bytes_read"] > 0
    again = compute_statistics(discover([tmp_path / "set"]), device="cpu", cache_dir=cache)
    assert again.settings["bytes_read"] == 0
    np.testing.assert_allclose(again.sq_dist, first.sq_dist)
    np.testing.assert_array_equal(again.equal, first.equal)  # counts come back from the cache too
    np.testing.assert_allclose(again.kurtosis, first.kurtosis)

    g = torch.Generator().manual_seed(9)
    new = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in llama_state(seed=1).items()}
    hf_folder(tmp_path / "set" / "newcomer", new)
    grown = compute_statistics(discover([tmp_path / "set"]), device="cpu", cache_dir=cache)
    per_model = first.settings["bytes_read"] / first.n_models
    # The newcomer plus each shared tensor of the others once: N + 1 models' worth, not N^2.
    assert grown.settings["bytes_read"] <= per_model * (first.n_models + 1) * 1.01
    fresh = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    np.testing.assert_allclose(grown.sq_dist, fresh.sq_dist, rtol=1e-9)
    np.testing.assert_array_equal(grown.equal, fresh.equal)


def test_a_reader_revision_invalidates_what_it_cached(tmp_path):
    """Statistics cached by an older reader are read again once the reader's output revision changes."""
    from mother_core.io import registry

    _family(tmp_path)
    cache = tmp_path / "cache"
    first = compute_statistics(discover([tmp_path / "set"]), device="cpu", cache_dir=cache)
    entry = registry.entry_for(discover([tmp_path / "set"]).models[0])
    registry.register(entry.container, entry.target, entry.needs_base, entry.revision + 1)
    try:
        again = compute_statistics(discover([tmp_path / "set"]), device="cpu", cache_dir=cache)
    finally:
        registry.register(entry.container, entry.target, entry.needs_base, entry.revision)
    assert again.settings["bytes_read"] == first.settings["bytes_read"]  # every model read again
    np.testing.assert_allclose(again.sq_dist, first.sq_dist)
    back = compute_statistics(discover([tmp_path / "set"]), device="cpu", cache_dir=cache)
    assert back.settings["bytes_read"] == 0  # the first revision's entries are still there


def test_broken_model_is_skipped_and_the_rest_processed(tmp_path, kernel):
    _family(tmp_path)
    truncate(tmp_path / "set" / "other" / "model.safetensors")
    stats = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    assert sorted(stats.model_ids) == ["heavy", "light", "root"]
    assert any("other" in p.path for p in stats.problems)


def test_set_of_one_is_a_clear_error(tmp_path):
    hf_folder(tmp_path / "only" / "m", llama_state(seed=1))
    with pytest.raises(TooFewModelsError, match="at least two"):
        compute_statistics(discover([tmp_path / "only"]), device="cpu")


def test_mismatched_shapes_are_separate_slots(tmp_path):
    a = llama_state(seed=1)
    b = dict(a)
    b["lm_head.weight"] = torch.randn(7, a["lm_head.weight"].shape[1])  # a new head
    hf_folder(tmp_path / "s" / "a", a)
    hf_folder(tmp_path / "s" / "b", b)
    stats = compute_statistics(discover([tmp_path / "s"]), device="cpu")
    heads = [s for s, t in enumerate(stats.tensors) if t.name == "lm_head.weight"]
    assert len(heads) == 2
    for s in heads:
        assert np.isnan(stats.sq_dist[s, 0, 1])
    cov = stats.coverage()
    assert 0.5 < cov[0, 1] < 1.0


def test_statistics_round_trip(tmp_path):
    _family(tmp_path)
    stats = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    stats.save(tmp_path / "s.npz")
    back = WeightStatistics.load(tmp_path / "s.npz")
    assert back.model_ids == stats.model_ids
    np.testing.assert_array_equal(back.sq_dist, stats.sq_dist)
    np.testing.assert_array_equal(back.equal, stats.equal)


@CUDA
def test_cuda_agrees_with_cpu(tmp_path):
    _family(tmp_path)
    found = discover([tmp_path / "set"])
    cpu = compute_statistics(found, device="cpu")
    gpu = compute_statistics(found, device="cuda")
    np.testing.assert_allclose(gpu.sq_dist, cpu.sq_dist, rtol=1e-6, atol=1e-12)
    # Each path is within ~1e-6 of float64 in excess kurtosis (the contract of the float64 test above; on an
    # H200, benchmarks/throughput.py --accuracy: 7.4e-7 on the CPU, 6.1e-7 on the GPU), in float32 sums of
    # different orders, so the two differ by up to about that much, not by 1e-6 relative.
    np.testing.assert_allclose(gpu.kurtosis, cpu.kurtosis, rtol=1e-5, atol=2e-6)
    np.testing.assert_array_equal(gpu.equal, cpu.equal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_skeleton_rank_of_a_merged_lora_survives_half_precision(tmp_path, dtype, kernel):
    """rank(W + B @ A - W) = r is read from the streamed skeletons, also through fp16/bf16 rounding."""
    from mother_core.stats.skeleton import numerical_rank

    g = torch.Generator().manual_seed(0)
    base = {"layers.0.mlp.up_proj.weight": torch.randn(160, 120, generator=g) * 0.05,
            "layers.0.mlp.down_proj.weight": torch.randn(120, 160, generator=g) * 0.05}
    lora = dict(base)
    b, a = torch.randn(160, 4, generator=g) * 0.05, torch.randn(4, 120, generator=g) * 0.05
    lora["layers.0.mlp.up_proj.weight"] = base["layers.0.mlp.up_proj.weight"] + b @ a
    other = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in base.items()}
    for name, sd in {"base": base, "lora": lora, "other": other}.items():
        hf_folder(tmp_path / "s" / name, {k: v.to(dtype) for k, v in sd.items()})
    stats = compute_statistics(discover([tmp_path / "s"]), device="cpu", chunk_elements=1000)
    ib, il, io = (stats.index(k) for k in ("base", "lora", "other"))
    names = [t.name for t in stats.tensors]

    def rank(name, i, j):
        sk = stats.skeletons[names.index(name)]
        assert not np.isnan(sk[[i, j]]).any()  # every skeleton row arrived across the row chunks
        scale = np.sqrt(np.mean(sk[i].astype(np.float64) ** 2))
        return int(numerical_rank((sk[i] - sk[j])[None].astype(np.float64), np.array([scale]),
                                  np.array([max(stats.roundoff[i], stats.roundoff[j])]))[0])

    assert rank("layers.0.mlp.up_proj.weight", ib, il) == 4
    assert rank("layers.0.mlp.down_proj.weight", ib, il) == 0  # untouched layer
    assert rank("layers.0.mlp.up_proj.weight", ib, io) == 96  # unrelated: full rank of the skeleton


def _cached_run(args):
    folder, cache = args
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")  # a cache write that gives up would warn
        return compute_statistics(discover([folder]), device="cpu", cache_dir=cache).settings["bytes_read"]


@pytest.fixture
def spawn_pool(monkeypatch):
    """A ``spawn`` process pool whose workers start clean.

    A spawned worker first re-runs the parent's ``__main__`` script. In an xdist worker that may be
    whatever an earlier in-process run left there, and a worker that dies at start is replaced forever.
    The workers need only this module's functions: they get an empty ``__main__``.
    """
    import multiprocessing as mp
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    return mp.get_context("spawn").Pool


def test_processes_can_share_one_cache(tmp_path, spawn_pool):
    _family(tmp_path)
    with spawn_pool(3) as pool:
        reads = pool.map_async(_cached_run, [(tmp_path / "set", tmp_path / "cache")] * 3).get(timeout=600)
    assert all(r >= 0 for r in reads)
    assert _cached_run((tmp_path / "set", tmp_path / "cache")) == 0  # and it holds everything now


def test_fused_reducer_matches_the_reference_formulation(kernel):
    """The pass's cache-blocked reducer against the plain per-chunk formulation kept in moments.py."""
    from mother_core.stats.moments import ChunkReducer, Moments, pairwise_sq_dist

    g = torch.Generator().manual_seed(3)
    base = torch.randn(200_003, generator=g) * 0.02
    x = torch.stack([base, base + 1e-4 * torch.randn(base.shape, generator=g), base.clone(),
                     torch.randn(base.shape, generator=g)]).float()
    fused = kernel == "fused"
    reducer = ChunkReducer(block_elements=1 << 14, use_fused=fused)
    mom, dist, equal = reducer.reduce(x if not fused else x.bfloat16().float())
    if fused:  # the kernel widens bfloat16 itself: same numbers as the widened float32 chunk
        x = x.bfloat16()
        mom_bf16, dist_bf16, equal_bf16 = reducer.reduce(x)
        np.testing.assert_allclose(mom_bf16.m4, mom.m4, rtol=1e-6)
        np.testing.assert_allclose(dist_bf16, dist, rtol=1e-6)
        np.testing.assert_array_equal(equal_bf16, equal)
        x = x.float()
    np.testing.assert_array_equal(equal, _equal_reference(x))
    assert equal[0, 2] == x.shape[1]  # identical rows: every entry
    ref_mom, ref_dist = Moments.of_chunk(x), pairwise_sq_dist(x)
    np.testing.assert_allclose(mom.mean, ref_mom.mean, rtol=1e-6, atol=1e-7)  # 1e-7 of the largest std
    np.testing.assert_allclose(mom.variance, ref_mom.variance, rtol=1e-6)
    np.testing.assert_allclose(mom.excess_kurtosis, ref_mom.excess_kurtosis, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-6, atol=0)
    assert dist[0, 2] == 0.0  # identical rows stay exactly zero


def _equal_reference(x: torch.Tensor) -> np.ndarray:
    """Counts of exactly equal entries per pair of rows, one numpy comparison per pair."""
    a = x.float().numpy()
    return np.array([[float((a[i] == a[j]).sum()) for j in range(len(a))] for i in range(len(a))])


def _open_fresh_caches(args):
    root, barrier, count = args
    from mother_core.stats.cache import StatsCache

    # Start together once every worker has imported (a fixed delay let a loaded machine's slower workers
    # start after the others had finished, and nothing raced).
    barrier.wait(timeout=300)
    start_at = time.time()
    for i in range(count):
        while time.time() < start_at + 0.05 * i:  # all workers race to create file i, then reopen it
            time.sleep(0.0005)
        for _ in range(2):
            cache = StatsCache(root / f"c{i}")
            cache.put([(f"model-{os.getpid()}", "slot", 1.0, 0.0, 1.0, 0.0, 3.0)], [])
            assert cache.model_stats([f"model-{os.getpid()}"])
            cache.close()
    return count


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path, spawn_pool):
    """Creating the file (WAL switch, schema) and the last close (WAL checkpoint) take an exclusive
    lock for which SQLite does not wait: a second app session or test worker opening the cache then
    must retry, not report the cache as damaged."""
    import multiprocessing as mp

    with mp.get_context("spawn").Manager() as manager, spawn_pool(4) as pool:
        barrier = manager.Barrier(4)  # four tasks on four workers: each blocks in it until all have come
        done = pool.map_async(_open_fresh_caches, [(tmp_path, barrier, 60)] * 4).get(timeout=600)
    assert done == [60] * 4


@pytest.mark.parametrize("models", [1, 2, 5, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_matches_float64_for_any_number_of_models(models, dtype):
    """4 x 4 pair tiles plus leftover rows, a partial last block, near and identical rows, pieces."""
    from mother_core.stats import fused
    from mother_core.stats.moments import ChunkReducer, Moments, pairwise_sq_dist

    if not fused.enabled():
        pytest.skip("numba is not installed")
    fused.warm_up()
    g = torch.Generator().manual_seed(models)
    n = 3 * fused.KERNEL_BLOCK + 77
    base = torch.randn(n, generator=g) * 0.02 + 0.5  # an offset: centring must not lose digits
    x = torch.stack([base + 1e-2 * (k % 3) * torch.randn(n, generator=g) * 0.02 for k in range(models)])
    x = x.to(dtype)  # rows k and k + 3 are identical; the others differ by 1-2% of the spread
    mom, dist, equal = fused.reduce_chunk(x)
    np.testing.assert_array_equal(equal, _equal_reference(x))  # rows k, k + 3 all equal; the others by chance
    ref = Moments.of_chunk(x.double())
    np.testing.assert_allclose(mom.mean, ref.mean, rtol=1e-6)
    np.testing.assert_allclose(mom.m2, ref.m2, rtol=1e-5)
    np.testing.assert_allclose(mom.excess_kurtosis, ref.excess_kurtosis, rtol=1e-4, atol=1e-5)
    exact = pairwise_sq_dist(x.double())
    np.testing.assert_allclose(dist, exact, rtol=1e-6, atol=0)  # identical rows: exactly 0
    # Fed in uneven pieces (part-filled blocks mid-stream), the same numbers.
    pieces = fused.StreamReduction(models)
    for a, b in ((0, 1000), (1000, 1001), (1001, 5000), (5000, n)):
        pieces.add(x[:, a:b])
    mom_p, dist_p, equal_p = pieces.finish()
    np.testing.assert_array_equal(equal_p, equal)
    for field in ("n", "mean", "m2", "m4"):
        np.testing.assert_allclose(getattr(mom_p, field), getattr(mom, field), rtol=1e-5, atol=1e-12)
    # The third central moment of near-symmetric data is a cancellation: compare it on its own
    # scale (the spread's cube), not relative to its near-zero value.
    m3_scale = np.sqrt(np.asarray(mom.m2, dtype=np.float64) ** 3 / np.asarray(mom.n, dtype=np.float64))
    np.testing.assert_allclose(mom_p.m3, mom.m3, rtol=0, atol=float(1e-5 * m3_scale.max()))
    np.testing.assert_allclose(dist_p, dist, rtol=1e-6, atol=0)
    _, via_reducer, equal_r = ChunkReducer(use_fused=True).reduce(x)
    np.testing.assert_array_equal(via_reducer, dist)
    np.testing.assert_array_equal(equal_r, equal)
    # The chunk path's counts (more models than the kernel takes, or moments reduced by torch): the same.
    np.testing.assert_array_equal(fused.equal_counts(x.float()), equal)
    np.testing.assert_array_equal(ChunkReducer(use_fused=False).reduce(x.float())[2], equal)


def test_a_model_failing_mid_pass_is_dropped_and_the_rest_finish(tmp_path, kernel, monkeypatch):
    """A file cut short while the pass runs (a disk error, a download overwritten): the model is
    reported and dropped, the others' statistics are those of a clean run."""
    from checkpoint_factory import truncate

    from mother_core.stats import execute

    # One chunk per worker job, so the cut falls between two reads of this small family (batched, its
    # chunks would all be read before the first progress report).
    monkeypatch.setattr(execute, "BATCH_BYTES", 1)
    _family(tmp_path, torch.bfloat16)
    victim = tmp_path / "set" / "other" / "model.safetensors"
    clean = compute_statistics(discover([tmp_path / "set"]), device="cpu")

    def cut_after_first_tensor(progress):
        if progress.tensors_done == 1 and victim.stat().st_size > 0:
            truncate(victim, keep=0.0)

    stats = compute_statistics(discover([tmp_path / "set"]), device="cpu", progress=cut_after_first_tensor)
    assert sorted(stats.model_ids) == ["heavy", "light", "root"]
    assert any("other" in p.path for p in stats.problems)
    keep = [clean.index(m) for m in stats.model_ids]
    np.testing.assert_allclose(stats.sq_dist, clean.sq_dist[:, keep][:, :, keep], rtol=1e-6)
    np.testing.assert_allclose(stats.kurtosis, clean.kurtosis[keep], rtol=1e-5, atol=1e-6)


def test_read_ahead_hints_the_plan_in_order_and_changes_nothing(tmp_path, kernel, monkeypatch):
    """While reads look disk-bound, the read-ahead thread hints the plan's chunks to the OS in plan order,
    each model's rows once, with a window of one byte as with the default one; the statistics are those
    of a pass that hints nothing (bit for bit: hints change what is in the page cache, not what is read)."""
    from mother_core.io.readers import SafetensorsReader
    from mother_core.stats import execute

    _family(tmp_path, torch.bfloat16)
    found = discover([tmp_path / "set"])
    monkeypatch.setattr(execute._ReadRate, "DISK_BOUND_BELOW", 0.0)  # never disk-bound after the first read
    quiet = compute_statistics(found, device="cpu", chunk_elements=5000)
    hints: list[tuple[str, str, tuple[int, int] | None]] = []
    original = SafetensorsReader.prefetch

    def recording(self, name, rows=None):
        hints.append((self.ref.id, name, rows))
        return original(self, name, rows)

    monkeypatch.setattr(SafetensorsReader, "prefetch", recording)
    monkeypatch.setattr(execute._ReadRate, "DISK_BOUND_BELOW", float("inf"))  # every read looks disk-bound
    for window in (1, execute.READ_AHEAD_BYTES):
        hints.clear()
        monkeypatch.setattr(execute, "READ_AHEAD_BYTES", window)
        hinted = compute_statistics(found, device="cpu", chunk_elements=5000)
        assert hints, "a disk-bound pass hints its chunks"
        assert len(set(hints)) == len(hints), "each model's rows hinted once"
        slot_of = {t.name: i for i, t in enumerate(hinted.tensors)}  # the plan's slot order
        slots = [slot_of[name] for _, name, _ in hints]
        assert slots == sorted(slots), "hints follow the plan"
        for field in ("mean", "var", "kurtosis", "norm", "sq_dist"):
            np.testing.assert_array_equal(getattr(hinted, field), getattr(quiet, field))


def test_a_cold_pass_waits_for_the_kernel_and_agrees_with_the_torch_path(tmp_path, monkeypatch):
    """Chunks read from the disk before numba has loaded wait for the kernel (the disk sets the pace)
    instead of taking the torch path; the pass finishes and agrees with the torch path."""
    import threading

    from mother_core.stats import execute, fused, moments

    if not fused.enabled():
        pytest.skip("numba is not installed")
    _family(tmp_path, torch.bfloat16)
    found = discover([tmp_path / "set"])
    monkeypatch.setenv("MOTHER_FUSED_KERNEL", "0")
    torch_path = compute_statistics(found, device="cpu", chunk_elements=5000)
    monkeypatch.delenv("MOTHER_FUSED_KERNEL")
    monkeypatch.setattr(fused, "WORTH_LOADING_VALUES", 0)
    monkeypatch.setattr(fused, "_READY", threading.Event())  # as in a new process: the kernels not loaded yet
    warm_up = fused.warm_up

    def slow_warm_up(dtypes):  # numba's import and the kernels' load take ~1 s in a new process
        time.sleep(0.5)
        warm_up(dtypes)

    monkeypatch.setattr(fused, "warm_up", slow_warm_up)
    monkeypatch.setattr(execute._ReadRate, "DISK_BOUND_BELOW", float("inf"))  # every read looks disk-bound
    ready_when_reduced: list[bool] = []
    original = moments.ChunkReducer.reduce

    def reduce(self, x, want_dist=True):
        ready_when_reduced.append(fused.ready())
        return original(self, x, want_dist)

    monkeypatch.setattr(moments.ChunkReducer, "reduce", reduce)
    cold = compute_statistics(found, device="cpu", chunk_elements=5000)
    assert fused.ready()
    assert ready_when_reduced and all(ready_when_reduced), "no chunk reduced before the kernel was loaded"
    for field, atol in (("mean", 1e-8), ("var", 0), ("kurtosis", 1e-6), ("norm", 0)):
        np.testing.assert_allclose(getattr(cold, field), getattr(torch_path, field), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(cold.sq_dist, torch_path.sq_dist, rtol=1e-5, atol=1e-12)


def test_remembered_skeleton_differences_are_the_same_bits(monkeypatch):
    """A pair's difference is measured once inside ``remembered_differences`` (in either order), with the
    singular values a direct SVD of that difference gives, bit for bit."""
    from mother_core.stats import skeleton

    rng = np.random.default_rng(0)
    sk = rng.standard_normal((5, 24, 16)).astype(np.float32)
    pairs = [(0, 1), (1, 0), (2, 4), (3, 2), (2, 4)]
    direct = skeleton.singular_values(np.stack([sk[a].astype(np.float64) - sk[b] for a, b in pairs]))
    calls: list[int] = []
    singular_values = skeleton.singular_values

    def counting(batch):
        calls.append(len(batch))
        return singular_values(batch)

    monkeypatch.setattr(skeleton, "singular_values", counting)
    np.testing.assert_array_equal(skeleton.difference_singular_values([sk] * 5, pairs), direct)  # no memo
    assert calls == [3]  # a pair asked twice in one call is measured once even so
    calls.clear()
    with skeleton.remembered_differences():
        np.testing.assert_array_equal(skeleton.difference_singular_values([sk] * 5, pairs), direct)
        np.testing.assert_array_equal(skeleton.difference_singular_values([sk] * 2, [(4, 2), (1, 0)]),
                                      direct[[2, 0]])
        copy = sk.copy()  # another stack (same values): not taken for the remembered one
        np.testing.assert_array_equal(skeleton.difference_singular_values([copy], [(0, 1)]), direct[:1])
    assert calls == [3, 1]  # (0, 1), (2, 4), (3, 2) once each; nothing for the second call; the copy


@pytest.mark.parametrize("shape", [(2, 1), (3, 7), (5, 300), (9, 800)])
def test_small_chunks_agree_with_the_blocked_reducer(shape):
    """Small chunks are reduced in float64 numpy at once (``small_chunk``); the numbers are the blocked
    reducer's (itself checked against float64 above), equal entries counted alike, a frozen copy exactly
    zero apart and a constant row of zero spread."""
    from mother_core.stats.moments import SMALL_CHUNK_DIFFERENCES, ChunkReducer, small_chunk

    m, n = shape
    assert m * m * n <= SMALL_CHUNK_DIFFERENCES  # these shapes take the small path in the pass
    g = torch.Generator().manual_seed(m * n)
    x = 0.02 * torch.randn(shape, generator=g)
    if m > 2:
        x[1] = x[0] + 1e-4 * x[0].abs().mean() * torch.randn(n, generator=g)  # a light fine-tune
        x[2] = x[0]  # a frozen copy
    if m > 3:
        x[3] = 0.5  # a constant row (a fresh norm scale)
    mom, dist, equal = small_chunk(x)
    ref_mom, ref_dist = ChunkReducer(use_fused=False)._moments_and_distances(x, True)
    np.testing.assert_allclose(mom.mean, ref_mom.mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mom.m2, ref_mom.m2, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(mom.m4, ref_mom.m4, rtol=1e-5, atol=1e-18)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(equal, _equal_reference(x))
    if m > 3:
        assert dist[0, 2] == 0.0 and mom.m2[3] == 0.0


def test_batched_small_tensors_read_as_one_by_one(tmp_path):
    """Chunks under ``BATCH_BYTES`` go to a worker together (a file of thousands of small tensors pays
    the hand-off once per batch): the statistics are those of a pass that hands over one chunk at a time."""
    from mother_core.stats import execute

    sds = _family(tmp_path)
    for name, sd in sds.items():  # many small tensors beside the real ones, shared by every model
        g = torch.Generator().manual_seed(len(name))
        extra = {f"model.extra.{i}.weight": torch.randn(3, generator=g) for i in range(300)}
        hf_folder(tmp_path / "set" / name, {**sd, **extra})
    batched = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    assert len(execute._batches([100] * 300)) == 1  # such tensors do go to a worker together
    execute_batch = execute.BATCH_BYTES
    try:
        execute.BATCH_BYTES = 1
        single = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    finally:
        execute.BATCH_BYTES = execute_batch
    assert len(batched.tensors) > 300
    np.testing.assert_array_equal(batched.sq_dist, single.sq_dist)
    np.testing.assert_array_equal(batched.equal, single.equal)
    np.testing.assert_array_equal(batched.kurtosis, single.kurtosis)


def test_models_the_statistics_cannot_hold_are_left_out_and_the_rest_compared(tmp_path, monkeypatch):
    """Statistics are dense over (slot, model, model): a model whose tensors no other model holds adds its
    slots to every pair. Over the budget, that model is left out with a message and the others are
    compared as before; a model of more tensors than any real checkpoint is left out at any budget."""
    from mother_core.stats import bounds

    sds = _family(tmp_path)
    g = torch.Generator().manual_seed(5)
    private = {f"model.private.{i}.weight": torch.randn(2, generator=g) for i in range(2000)}
    hf_folder(tmp_path / "set" / "wide", {**sds["root"], **private})
    found = discover([tmp_path / "set"])
    assert "wide" in compute_statistics(found, device="cpu").model_ids  # the default budget holds it

    shared = len(sds["root"])  # every model of the family holds the same slots
    monkeypatch.setattr(bounds, "statistics_budget", lambda: bounds.DENSE_COPIES * 8 * shared * 4 * 4)
    stats = compute_statistics(found, device="cpu")
    assert sorted(stats.model_ids) == ["heavy", "light", "other", "root"]
    message = " ".join(p.message for p in stats.problems if "wide" in p.path)
    assert "2,000 tensors that no other model in the set has" in message and "GB" in message
    clean = compute_statistics(discover([tmp_path / "set" / m for m in ("heavy", "light", "other", "root")]),
                               device="cpu")
    keep = [clean.index(m) for m in stats.model_ids]
    np.testing.assert_array_equal(stats.sq_dist, clean.sq_dist[:, keep][:, :, keep])

    monkeypatch.setattr(bounds, "MAX_MODEL_TENSORS", 1000)
    monkeypatch.setattr(bounds, "statistics_budget", lambda: 1 << 40)
    stats = compute_statistics(found, device="cpu")
    assert "wide" not in stats.model_ids
    assert any("limit is 1,000" in p.message for p in stats.problems if "wide" in p.path)
