"""HQQ checkpoints (Half-Quadratic Quantization), written by hqq and read in the one pass.

Each checkpoint is quantized by hqq on the CPU from a transformers model saved here and written by hqq's
``save_to_safetensors`` (the tensor names transformers' ``HqqConfig`` integration writes too); the reader
must give back, bit for bit, the weights ``HQQLinear.dequantize`` gives, under the float model's names, and
recovery must hang the HQQ copy under its source.
"""

from __future__ import annotations


import pytest
import torch

from format_factory import read_in_pieces, saved_llama, use_table_kernel
from mother_core.io.discovery import discover
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model

pytest.importorskip("hqq")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.mark.parametrize("bits,group,axis,dtype,view_as_float", [
    (4, 64, 1, torch.bfloat16, False), (8, 64, 1, torch.bfloat16, False), (3, 64, 1, torch.bfloat16, False),
    (2, 32, 1, torch.float16, False), (1, 64, 1, torch.bfloat16, False), (4, 64, 0, torch.bfloat16, False),
    (3, 32, 0, torch.float16, False), (4, 64, 1, torch.float16, True), (3, 64, 1, torch.bfloat16, True),
    (4, 32, 1, torch.float32, False), (8, 64, 0, torch.bfloat16, False)])
def test_reader_gives_the_weights_hqq_decodes(tmp_path, monkeypatch, bits, group, axis, dtype, view_as_float):
    """Bit for bit ``HQQLinear.dequantize``'s weights for each packing, both axes, float16, bfloat16 and
    float32 compute dtypes and codes stored viewed as floats, with the compiled decoder (whole ranges, and
    pieces as read by two threads) and without, by ``read`` and by ``read_into`` in chunks of rows that cut
    the grouped rows and the packed rows anywhere."""
    from format_factory import hqq_quantized

    from mother_core.io import compressed_fast, staged

    source = saved_llama(tmp_path / "src", 160, dtype)
    decoded = hqq_quantized(tmp_path / "src", tmp_path / "q", bits, group, axis, dtype, view_as_float)
    assert len(decoded) == 14  # seven Linear layers a block
    ref = discover([tmp_path / "q"]).models[0]
    width = bits if axis == 1 or bits == 3 else None  # axis 0's group size is not in the header
    assert ref.format == (f"safetensors:hqq-int{width}" if width else "safetensors:hqq")
    for decoder in ("compiled", "compiled, small pieces", "torch"):
        if decoder == "compiled, small pieces":  # a packed row a piece: many pieces, on the decode threads
            monkeypatch.setattr(staged, "PIECE_BYTES", 100)
        if decoder == "torch":
            monkeypatch.setattr(compressed_fast, "available", lambda: False)
        with open_model(ref) as reader:
            assert not reader.notes
            assert set(reader.tensor_infos()) == {normalise_name(k) for k in source}  # no W_q, scale, zero, meta
            for name, library in decoded.items():
                got = reader.read(normalise_name(name))
                assert got.dtype == torch.float32 and torch.equal(got, library), (name, decoder)
                # 7 rows a chunk: not a divisor of the rows, the groups or the packed rows
                assert torch.equal(read_in_pieces(reader, normalise_name(name), 7), got), (name, decoder)
                rel = ((got - source[name]).norm() / source[name].norm()).item()
                assert rel < {8: 0.01, 4: 0.15, 3: 0.3, 2: 0.6, 1: 1.5}[bits], (name, rel)


def test_layer_loaded_from_the_file_decodes_the_same(tmp_path):
    """The file's layer loaded back by hqq (``HQQLinear.load_state_dict``) decodes what the reader reads:
    the comparison does not rest on the quantizing process's in-memory layers."""
    from format_factory import hqq_quantized
    from hqq.core.quantize import HQQLinear

    saved_llama(tmp_path / "src", 161)
    hqq_quantized(tmp_path / "src", tmp_path / "q", 4, 64)
    stored = safetensors_torch.load_file(str(tmp_path / "q" / "model.safetensors"))
    module = "model.layers.1.mlp.down_proj."
    layer = HQQLinear(None, None, compute_dtype=torch.bfloat16, device="cpu", initialize=False)
    layer.load_state_dict({k[len(module):]: v for k, v in stored.items() if k.startswith(module)})
    with open_model(discover([tmp_path / "q"]).models[0]) as reader:
        assert torch.equal(reader.read("layers.1.mlp.down_proj.weight"), layer.dequantize().float())


def test_hqq_copy_is_recovered_under_its_source(tmp_path):
    """A 4-bit and an 8-bit HQQ copy of two fine-tunes (real AdamW steps) of one root hang under their
    float sources as quantized copies."""
    from checkpoint_factory import adam_steps
    from format_factory import hqq_quantized

    from mother_core import RecoverySettings, recover_paths

    folder = tmp_path / "set"
    saved_llama(folder / "root", 162, torch.float32)
    for name, seed in (("a", 1), ("b", 2)):
        model = transformers.LlamaForCausalLM.from_pretrained(folder / "root", dtype=torch.float32)
        adam_steps(model, seed, 10, 2e-3, vocab=96).to(torch.bfloat16).save_pretrained(folder / name)
    hqq_quantized(folder / "a", folder / "a-hqq-4bit", 4, 64)
    hqq_quantized(folder / "b", folder / "b-hqq-8bit", 8, 64)
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {(e.parent, e.child): e for e in result.edges}
    assert ("a", "a-hqq-4bit") in edges and ("b", "b-hqq-8bit") in edges, sorted(edges)
    assert edges[("a", "a-hqq-4bit")].relation == "quantized"
    assert edges[("b", "b-hqq-8bit")].relation == "quantized"


def test_packing_we_do_not_decode_is_a_note(tmp_path):
    """A layer whose stored packing is not one of hqq's, that says its scales are quantized (hqq's
    deprecated ``quant_scale``), whose codes were cut short or whose scales do not fit its groups is left out
    with a note naming it; the rest is read."""
    from format_factory import hqq_quantized

    saved_llama(tmp_path / "src", 163)
    hqq_quantized(tmp_path / "src", tmp_path / "q", 4, 64)
    path = str(tmp_path / "q" / "model.safetensors")
    stored = safetensors_torch.load_file(path)
    stored["model.layers.0.mlp.up_proj.packing"] = torch.tensor(list(b"5bit_u8"), dtype=torch.uint8)
    stored["model.layers.1.mlp.up_proj.quant_scale"] = torch.tensor(1, dtype=torch.uint8)
    stored["model.layers.0.self_attn.k_proj.W_q"] = stored["model.layers.0.self_attn.k_proj.W_q"][:-1].clone()
    stored["model.layers.1.self_attn.v_proj.scale"] = stored["model.layers.1.self_attn.v_proj.scale"][:-2].clone()
    safetensors_torch.save_file(stored, path)
    damaged = {"layers.0.mlp.up_proj": "5bit_u8", "layers.1.mlp.up_proj": "quant_scale",
               "layers.0.self_attn.k_proj": "packed rows", "layers.1.self_attn.v_proj": "scale of shape"}
    with open_model(discover([tmp_path / "q"]).models[0]) as reader:
        infos = reader.tensor_infos()
        for module, why in damaged.items():
            assert module + ".weight" not in infos
            assert not any(n.startswith(module + ".") for n in infos)
            assert any(module in n and why in n for n in reader.notes), (module, reader.notes)
        assert "layers.0.mlp.down_proj.weight" in infos and "layers.1.self_attn.q_proj.weight" in infos
        assert len(reader.notes) == len(damaged)
        for name in infos:
            reader.read(name)  # the rest reads


def test_zero_and_scale_stacked_decode_as_the_library_does(tmp_path):
    """hqq's deprecated ``offload_meta`` stores a layer's zero and scale stacked as ``zero_scale``: the
    layer, so stored, loaded back by hqq decodes what the reader reads. (hqq writes it only on a GPU, as
    pinned memory; the file is the CPU-made one with the two tensors stacked as hqq stacks them.)"""
    from format_factory import hqq_quantized
    from hqq.core.quantize import HQQLinear

    saved_llama(tmp_path / "src", 164)
    hqq_quantized(tmp_path / "src", tmp_path / "q", 4, 64)
    path = str(tmp_path / "q" / "model.safetensors")
    stored = safetensors_torch.load_file(path)
    module = "model.layers.0.self_attn.o_proj."
    stored[module + "zero_scale"] = torch.stack((stored.pop(module + "zero"), stored.pop(module + "scale")))
    safetensors_torch.save_file(stored, path)
    layer = HQQLinear(None, None, compute_dtype=torch.bfloat16, device="cpu", initialize=False)
    layer.load_state_dict({k[len(module):]: v for k, v in stored.items() if k.startswith(module)})
    with open_model(discover([tmp_path / "q"]).models[0]) as reader:
        assert not reader.notes
        assert torch.equal(reader.read("layers.0.self_attn.o_proj.weight"), layer.dequantize().float())


def test_width_from_the_config_where_the_header_does_not_tell(tmp_path):
    """With groups down the columns (``axis`` 0) the header does not give the code width; the
    ``quantization_config`` transformers' ``HqqConfig`` writes does."""
    from format_factory import hqq_quantized

    from mother_core.io.quant_scheme import detect_scheme
    from mother_core.io.sniff import safetensors_header

    saved_llama(tmp_path / "src", 165)
    hqq_quantized(tmp_path / "src", tmp_path / "q", 4, 64, axis=0)
    shapes = safetensors_header(str(tmp_path / "q" / "model.safetensors"))
    config = {"quant_method": "hqq", "skip_modules": ["lm_head"],
              "quant_config": {"weight_quant_params": {"nbits": 4, "group_size": 64, "axis": 0}}}
    assert detect_scheme(shapes) == "hqq"
    assert detect_scheme(shapes, config) == "hqq-int4"


@pytest.mark.parametrize("permuted", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_compiled_rounding_is_torchs_everywhere(dtype, permuted, monkeypatch):
    """The compiled decoder's rounding equals torch's ``(codes - zero) * scale`` in the compute dtype over
    scales from 1e-9 to 1e4 (float16 subnormals, overflow to infinity, ties) and zeros of every sign and
    size, per row (the table) and per column; with the AVX-512 lookups of 16 codes (where the CPU has
    them) and without (the portable loops), on rows that are not a multiple of 16 codes and on a range
    cut inside rows."""
    import numpy as np

    from mother_core.io import hqq_fast

    use_table_kernel(hqq_fast, permuted, monkeypatch)
    g = torch.Generator().manual_seed(0)
    rows, cols = 512, 248
    codes = torch.randint(0, 256, (rows, cols), generator=g, dtype=torch.uint8)
    for per_column in (False, True):
        n = cols if per_column else rows
        scale = (10 ** (torch.rand(n, generator=g) * 13 - 9)).to(dtype)
        zero = ((torch.rand(n, generator=g) - 0.3) * 10 ** (torch.rand(n, generator=g) * 4 - 1)).to(dtype)
        frame = (1, cols) if per_column else (rows, 1)
        expected = ((codes.to(dtype) - zero.reshape(frame)) * scale.reshape(frame)).to(torch.float32)
        for bits in (8, 4):  # 4-bit codes: the table path for per-row zeros and scales
            words = codes if bits == 8 else codes & 15
            want = expected if bits == 8 else ((words.to(dtype) - zero.reshape(frame))
                                               * scale.reshape(frame)).to(torch.float32)
            out = np.empty(rows * cols, np.float32)
            hqq_fast.decode(words.numpy(), 0, bits,
                            zero.to(torch.float32).numpy(), scale.to(torch.float32).numpy(), per_column,
                            {torch.float16: hqq_fast.ROUND_F16, torch.bfloat16: hqq_fast.ROUND_BF16,
                             torch.float32: hqq_fast.ROUND_NONE}[dtype], 0, out)
            assert torch.equal(torch.from_numpy(out).view(rows, cols), want), (bits, per_column)
            cut = np.full(rows * cols - 37 - 50, np.nan, np.float32)  # from inside the first row to inside the last
            hqq_fast.decode(words.numpy(), 0, bits,
                            zero.to(torch.float32).numpy(), scale.to(torch.float32).numpy(), per_column,
                            {torch.float16: hqq_fast.ROUND_F16, torch.bfloat16: hqq_fast.ROUND_BF16,
                             torch.float32: hqq_fast.ROUND_NONE}[dtype], 37, cut)
            assert torch.equal(torch.from_numpy(cut), want.reshape(-1)[37:-50]), (bits, per_column)


@pytest.mark.parametrize("bits", [4, 8])
def test_one_scale_for_the_whole_layer(tmp_path, monkeypatch, bits):
    """A layer quantized with ``channel_wise=False`` (one zero and scale for the whole weight, codes packed
    down the weight's own rows) decodes as hqq decodes it, compiled and in torch."""
    from hqq.core.quantize import HQQLinear

    from mother_core.io import compressed_fast

    torch.manual_seed(166)
    linear = torch.nn.Linear(128, 96).to(torch.bfloat16)
    config = {"weight_quant_params": {"nbits": bits, "channel_wise": False, "group_size": 64, "optimize": False,
                                      "round_zero": False, "axis": 1, "view_as_float": False},
              "scale_quant_params": None, "zero_quant_params": None, "offload_meta": False}
    layer = HQQLinear(linear, config, compute_dtype=torch.bfloat16, device="cpu")
    (tmp_path / "q").mkdir()
    state = {"model.layers.0.mlp.up_proj." + k: v.contiguous() for k, v in layer.state_dict().items()}
    safetensors_torch.save_file(state, str(tmp_path / "q" / "model.safetensors"))  # as save_to_safetensors does
    library = layer.dequantize().float()
    ref = discover([tmp_path / "q"]).models[0]
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(compressed_fast, "available", lambda: False)
        with open_model(ref) as reader:
            assert torch.equal(reader.read("layers.0.mlp.up_proj.weight"), library), compiled
            buffer = torch.empty(5 * 128)
            for r0 in range(0, 96, 5):
                r1 = min(96, r0 + 5)
                piece = reader.read_into("layers.0.mlp.up_proj.weight", (r0, r1), buffer[: (r1 - r0) * 128])
                assert torch.equal(piece.reshape(r1 - r0, 128), library[r0:r1]), (r0, compiled)
