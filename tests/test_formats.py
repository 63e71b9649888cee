"""Quantized and converted checkpoint formats, written by the real tools and read in the one pass.

Each test writes tiny files with the library users use (``gguf``'s writer and quantizers, ...), and checks
that the reader gives the source's weights back within the scheme's rounding error, under the source's
names, and that recovery places the quantized copy next to its source.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from format_factory import gguf_roundtrip, llama_state, perturbed, write_gguf
from mother_core.io.base import ModelRef
from mother_core.io.discovery import discover
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model

gguf = pytest.importorskip("gguf")


def _ref(path: Path, fmt: str) -> ModelRef:
    return ModelRef(id=path.stem, path=str(path), format=fmt, files=(str(path),))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q5_1", "F16", "Q4_K"])
def test_gguf_dequantized_under_transformers_names(tmp_path, qtype):
    sd = llama_state(0, hidden=256, inter=256) if qtype == "Q4_K" else llama_state(0)
    path = write_gguf(sd, tmp_path / f"m-{qtype}.gguf", qtype=qtype)
    expected = gguf_roundtrip(sd, qtype) if qtype != "F16" else {k: v.half().float() if v.ndim == 2 else v for k, v in sd.items()}
    with open_model(_ref(path, "gguf")) as reader:
        infos = reader.tensor_infos()
        assert set(infos) == {normalise_name(k) for k in sd}
        for k, v in sd.items():
            got = reader.read(normalise_name(k)).float()
            assert got.shape == v.shape, k
            # exactly what the package's dequantizer gives, q/k rows back in the transformers order
            torch.testing.assert_close(got, expected[k].reshape(v.shape), rtol=0, atol=1e-6)
            # and within the scheme's rounding of the source
            tol = {"Q8_0": 0.01, "Q4_0": 0.15, "Q5_1": 0.08, "F16": 1e-3, "Q4_K": 0.15}[qtype]
            assert (got - v).abs().max() <= tol * v.abs().max() + 1e-6, k


def test_gguf_row_ranges_match_whole_reads(tmp_path):
    sd = llama_state(1)
    path = write_gguf(sd, tmp_path / "m.gguf", qtype="Q8_0")
    with open_model(_ref(path, "gguf")) as reader:
        for name in ("layers.0.self_attn.q_proj.weight", "layers.1.self_attn.k_proj.weight", "embed_tokens.weight"):
            whole = reader.read(name)
            for rows in ((0, 5), (3, 17), (7, whole.shape[0])):
                torch.testing.assert_close(reader.read(name, rows), whole[rows[0]:rows[1]], rtol=0, atol=0)


def test_gguf_k_quant_and_mixed_types(tmp_path):
    sd = llama_state(2, hidden=256, inter=256, vocab=64, heads=4, kv_heads=4, layers=1)
    path = write_gguf(sd, tmp_path / "k.gguf", qtype="Q4_K", heads=4, kv_heads=4, file_type="Q4_K_M",
                      force_types={"lm_head.weight": "Q8_0"})
    found = discover([path])
    assert found.models[0].format == "gguf:Q4_K_M"
    with open_model(found.models[0]) as reader:
        for k, v in sd.items():
            got = reader.read(normalise_name(k))
            rel = ((got - v).norm() / v.norm()).item()
            assert rel < (0.12 if v.ndim == 2 else 1e-6), (k, rel)


def test_gpt2_gguf_transposed_back(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = {"transformer.wte.weight": torch.randn(64, 32, generator=g), "transformer.wpe.weight": torch.randn(16, 32, generator=g),
          "transformer.h.0.ln_1.weight": torch.ones(32), "transformer.h.0.attn.c_attn.weight": torch.randn(32, 96, generator=g),
          "transformer.h.0.attn.c_proj.weight": torch.randn(32, 32, generator=g),
          "transformer.h.0.mlp.c_fc.weight": torch.randn(32, 128, generator=g),
          "transformer.h.0.mlp.c_proj.weight": torch.randn(128, 32, generator=g), "transformer.ln_f.weight": torch.ones(32)}
    path = write_gguf(sd, tmp_path / "gpt2.gguf", qtype="Q8_0", arch="gpt2", heads=2, kv_heads=2)
    with open_model(_ref(path, "gguf")) as reader:
        assert set(reader.tensor_infos()) == {normalise_name(k) for k in sd}
        for k, v in sd.items():
            got = reader.read(normalise_name(k))
            assert got.shape == v.shape
            assert (got - v).abs().max() < 0.02 * v.abs().max()
            torch.testing.assert_close(reader.read(normalise_name(k), (1, 3)) if v.ndim == 2 else got,
                                       got[1:3] if v.ndim == 2 else got)


def test_gguf_recovered_as_child_of_its_source(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    root = llama_state(10)
    a, b = perturbed(root, 11), perturbed(root, 12)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", a), ("b", b)):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / f"{name}.safetensors"))
    write_gguf(a, folder / "a-q8.gguf", qtype="Q8_0", file_type="Q8_0")
    result = recover_paths([folder], RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    assert parents["a-q8"] == "a"
    assert parents["a"] == "root" or parents.get("root") == "a"
    assert {m.id: m.format for m in result.models}["a-q8"] == "gguf:Q8_0"


def test_damaged_gguf_is_a_problem_not_a_crash(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    root = llama_state(20)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", perturbed(root, 21))):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / f"{name}.safetensors"))
    good = write_gguf(root, tmp_path / "good.gguf")
    data = good.read_bytes()
    (folder / "truncated.gguf").write_bytes(data[: len(data) // 2])
    (folder / "garbage.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    result = recover_paths([folder], RecoverySettings())
    assert {m.id for m in result.models} == {"root", "a"}
    messages = str(result.problems)  # (problem records: dicts today, typed soon)
    assert "truncated.gguf" in messages and "garbage.gguf" in messages
