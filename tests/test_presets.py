"""mother_core.presets: the paper's families and finding them in a (fake, real-layout) HF cache."""

from __future__ import annotations

import doctest

import mother_core.presets as presets_mod
from mother_core.presets import PRESETS, find_in_hf_cache, get_preset, scan_hf_cache
from checkpoint_factory import hf_cache_entry, llama_state


def test_docstring_example():
    assert doctest.testmod(presets_mod).failed == 0


def test_presets_are_trees_over_their_hub_ids():
    for p in PRESETS:
        assert p.regime in ("specialization", "generalization")
        children = [c for _, c in p.edges]
        assert len(children) == len(set(children)) == len(p.hub_ids) - 1  # one root, one parent each
        assert {x for e in p.edges + p.alternative_edges for x in e} <= set(p.hub_ids)
    llama = get_preset("llama2")
    assert ("meta-llama/Llama-2-7b-hf", "codellama/CodeLlama-7b-hf") in llama.edges
    assert get_preset("sd1").component == "unet" and get_preset("sd1").regime == "generalization"


def test_missing_cache_means_everything_missing(tmp_path):
    avail = find_in_hf_cache(get_preset("llama2"), cache_dir=tmp_path / "nope")
    assert not avail.found and avail.missing == get_preset("llama2").hub_ids and not avail.complete
    assert scan_hf_cache(tmp_path / "nope") == []


def test_finds_cached_models_and_lists_the_rest(tmp_path):
    sd = llama_state(0)
    hf_cache_entry(tmp_path, "meta-llama/Llama-2-7b-hf", sd)
    hf_cache_entry(tmp_path, "codellama/CodeLlama-7b-hf", sd)
    avail = find_in_hf_cache(get_preset("llama2"), cache_dir=tmp_path)
    assert set(avail.found) == {"meta-llama/Llama-2-7b-hf", "codellama/CodeLlama-7b-hf"}
    assert avail.found["meta-llama/Llama-2-7b-hf"].endswith("models--meta-llama--Llama-2-7b-hf")
    assert len(avail.missing) == 3 and "codellama/CodeLlama-7b-Instruct-hf" in avail.missing
    cached = scan_hf_cache(tmp_path)
    assert [m.repo_id for m in cached] == ["codellama/CodeLlama-7b-hf", "meta-llama/Llama-2-7b-hf"]
    assert all(m.has_weights and m.snapshot.endswith("0" * 39 + "1") for m in cached)  # refs/main revision


def test_component_must_hold_weights(tmp_path):
    hf_cache_entry(tmp_path, "CompVis/stable-diffusion-v1-1", llama_state(0))  # no unet/ folder
    avail = find_in_hf_cache(get_preset("sd1"), cache_dir=tmp_path)
    assert "CompVis/stable-diffusion-v1-1" in avail.missing


def test_sd_single_file_counts_as_the_unet(tmp_path):
    """The sd1 preset works with either layout: a repository holding only a single-file checkpoint."""
    import torch

    hf_cache_entry(tmp_path, "CompVis/stable-diffusion-v1-2",
                   {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)})
    avail = find_in_hf_cache(get_preset("sd1"), cache_dir=tmp_path)
    assert "CompVis/stable-diffusion-v1-2" in avail.found
