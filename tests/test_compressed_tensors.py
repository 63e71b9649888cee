"""compressed-tensors checkpoints (llm-compressor's format), written by the library and read in the one pass.

Each checkpoint is made by compressed-tensors itself (``format_factory.compressed_tensors_state``); the
reader must give back, bit for bit, the weights the library decodes from the same state, under the
source's names, row range by row range, and recovery must hang the compressed copy under its source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from format_factory import compressed_tensors_state, llama_state, perturbed, read_in_pieces, use_table_kernel
from safetensors.torch import save_file

from mother_core.io.compressed_tensors import PackedLayout, packed_layout, unpack_codes
from mother_core.io.discovery import discover
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model

pytest.importorskip("compressed_tensors")

#: (weights of the scheme, compression format, scheme the engine names, relative error bound vs the float source)
CASES = [
    (dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=True), "pack-quantized",
     "compressed-int4", 0.12),
    (dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=False), "pack-quantized",
     "compressed-int4", 0.12),
    (dict(num_bits=8, type="int", strategy="channel", symmetric=False), "pack-quantized", "compressed-int8", 0.01),
    (dict(num_bits=3, type="int", strategy="channel", symmetric=True), "pack-quantized", "compressed-int3", 0.3),
    (dict(num_bits=8, type="int", strategy="channel", symmetric=True), "int-quantized", "compressed-int8", 0.01),
    (dict(num_bits=8, type="int", strategy="tensor", symmetric=True), "naive-quantized", "compressed-int8", 0.02),
    (dict(num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True),
     "nvfp4-pack-quantized", "compressed-nvfp4", 0.12),
    (dict(num_bits=8, type="float", strategy="block", block_structure=[32, 32], symmetric=True), "float-quantized",
     "fp8", 0.04),
]


def _write(folder: Path, state: dict, quant_config: dict) -> Path:
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": quant_config}))
    return folder


_IDS = [f"{c[1]}-{c[0]['num_bits']}-{c[0]['strategy']}{'' if c[0]['symmetric'] else '-asym'}" for c in CASES]


@pytest.mark.parametrize("weights,fmt,scheme,tol", CASES, ids=_IDS)
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "torch"])
def test_reader_gives_the_weights_the_library_decodes(tmp_path, monkeypatch, weights, fmt, scheme, tol, compiled):
    """Bit for bit the library's weights, with the compiled decoder and without it (numba missing), by
    ``read`` and by ``read_into`` a reused buffer in row chunks as the pass reads."""
    from mother_core.io import compressed_fast

    if not compiled:
        monkeypatch.setattr(compressed_fast, "available", lambda: False)
    source = llama_state(140)
    state, quant_config, decoded = compressed_tensors_state(source, weights, fmt)
    folder = _write(tmp_path / "q", state, quant_config)
    ref = discover([folder]).models[0]
    assert ref.format == f"safetensors:{scheme}"
    with open_model(ref) as reader:
        assert set(reader.tensor_infos()) == {normalise_name(k) for k in source}  # no scale listed as a weight
        assert not reader.notes
        for name, library in decoded.items():
            got = reader.read(normalise_name(name))
            assert torch.equal(got, library), name  # bit for bit, in float32
            assert torch.equal(reader.read(normalise_name(name), (3, 17)), got[3:17]), name
            rel = ((got.float() - source[name]).norm() / source[name].norm()).item()
            assert rel < tol, (name, rel)
            if got.dim() != 2:
                continue
            listed = getattr(torch, reader.tensor_infos()[normalise_name(name)].dtype)  # float32 when decoded
            pieces = read_in_pieces(reader, normalise_name(name), got.shape[0] // 2 + 1, dtype=listed)
            assert torch.equal(pieces, got.float()), name


def test_compressed_copy_is_recovered_under_its_source(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    root = llama_state(141)
    folder = tmp_path / "set"
    folder.mkdir()
    members = {"root": root, "a": perturbed(root, 142, rel=0.15), "b": perturbed(root, 143, rel=0.15)}
    for name, sd in members.items():
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / f"{name}.safetensors"))
    w4 = dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=True)
    _write(folder / "a-w4a16", *compressed_tensors_state(members["a"], w4, "pack-quantized")[:2])
    w8 = dict(num_bits=8, type="int", strategy="channel", symmetric=True)
    _write(folder / "b-w8a8", *compressed_tensors_state(members["b"], w8, "int-quantized")[:2])
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {(e.parent, e.child): e for e in result.edges}
    assert ("a", "a-w4a16") in edges and ("b", "b-w8a8") in edges
    assert edges[("a", "a-w4a16")].relation == "quantized"
    assert edges[("b", "b-w8a8")].relation == "quantized"


def test_codes_packed_a_word_at_a_time_by_earlier_versions():
    """Before compressed-tensors 0.20, ``32 // bits`` codes went into each word (a 3-bit code never straddles
    two words); the stored width tells the layouts apart and both unpack to the same codes."""
    g = torch.Generator().manual_seed(0)
    cols, bits = 200, 3  # 20 words a row this way, 19 when dense
    codes = torch.randint(-4, 4, (5, cols), generator=g, dtype=torch.int32)
    per_word = 32 // bits
    words = -(-cols // per_word)
    packed = torch.zeros(5, words, dtype=torch.int64)
    for j in range(cols):
        packed[:, j // per_word] |= (codes[:, j].to(torch.int64) + 4) << ((j % per_word) * bits)
    packed = packed.to(torch.int32)
    layout = packed_layout(cols, words)
    assert layout == PackedLayout(3, dense=False)
    assert torch.equal(unpack_codes(packed, cols, layout), codes)
    assert packed_layout(cols, -(-cols * 3 // 32)) == PackedLayout(3, dense=True)
    assert packed_layout(cols, 1) is None  # no width packs 200 codes into one word
    assert packed_layout(70, 7) == PackedLayout(3, dense=True)  # a tie on a short row: the current packing


@pytest.mark.parametrize("permuted", [True, False])
def test_table_kernel_equals_the_scales_dtype_arithmetic(permuted, monkeypatch):
    """The compiled table decoder (compressed-tensors, MLX, NVFP4) gives torch's values of
    ``(level - zero) * scale`` and MLX's ``level * scale + bias`` in the scale's dtype, for 2-, 4- and
    8-bit codes, groups of 16, 32 and 8 codes (the last too short for the 16-code lookups), with the
    AVX-512 lookups of 16 codes (where the CPU has them) and without (the portable loops)."""
    import numpy as np

    from mother_core.io import compressed_fast

    use_table_kernel(compressed_fast, permuted, monkeypatch)
    g = torch.Generator().manual_seed(3)
    rows, cols = 6, 96
    for bits in (2, 4, 8):
        stored = torch.randint(0, 256, (rows, cols * bits // 8), generator=g, dtype=torch.uint8)
        codes = torch.stack([(stored.to(torch.int64) >> s) & ((1 << bits) - 1) for s in range(0, 8, bits)],
                            dim=-1).reshape(rows, cols)  # lowest bits first
        levels = compressed_fast.integer_levels(bits)
        for size in (16, 32, 8):
            groups = cols // size
            for dtype in (torch.bfloat16, torch.float32):
                scale = (torch.rand(rows, groups, generator=g) * 0.1).to(dtype)
                # integer zero points (compressed-tensors'), exact in either dtype; MLX's biases any value
                zero = torch.randint(-8, 9, (rows, groups), generator=g).to(dtype)
                bias = (torch.randn(rows, groups, generator=g) * 0.1).to(dtype)
                wide = (torch.from_numpy(levels)[codes]).to(dtype)
                for affine in (False, True):
                    shift = bias if affine else zero
                    s_, z_ = scale.repeat_interleave(size, 1), shift.repeat_interleave(size, 1)
                    want = (wide * s_ + z_ if affine else (wide - z_) * s_).to(torch.float32)
                    out = np.full((rows, cols), np.nan, np.float32)
                    compressed_fast.decode_codes(stored.numpy(), bits, levels, scale.to(torch.float32).numpy(),
                                                 shift.to(torch.float32).numpy(), dtype == torch.bfloat16, out,
                                                 affine=affine)
                    assert torch.equal(torch.from_numpy(out), want), (bits, size, dtype, affine)


def test_damaged_compressed_weight_is_a_note_not_a_crash(tmp_path):
    """A packed weight whose stored shape does not match its codes is left out with a note naming it; the
    rest of the model is read."""
    source = llama_state(144)
    w4 = dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=True)
    state, quant_config, _ = compressed_tensors_state(source, w4, "pack-quantized")
    state["model.layers.0.mlp.up_proj.weight_shape"] = torch.tensor([128, 9999])
    state["model.layers.0.mlp.gate_proj.weight_shape"] = torch.tensor([float("nan"), 64.0])
    folder = _write(tmp_path / "q", state, quant_config)
    with open_model(discover([folder]).models[0]) as reader:
        assert "layers.0.mlp.up_proj.weight" not in reader.tensor_infos()
        assert "layers.0.mlp.gate_proj.weight" not in reader.tensor_infos()
        assert "layers.0.mlp.down_proj.weight" in reader.tensor_infos()
        assert any("up_proj" in n and "9999 columns" in n for n in reader.notes)
        assert any("gate_proj" in n and "shape" in n for n in reader.notes)
