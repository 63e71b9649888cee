"""torchao-quantized checkpoints (transformers' ``TorchAoConfig``), written by the tools and read in the one pass.

Each checkpoint is a tiny Llama quantized by torchao through transformers on the CPU and saved as
safetensors by ``save_pretrained``; the reader must give back, bit for bit, what torchao's own
``dequantize()`` gives for each weight of the same file loaded by transformers, under the source's names,
row range by row range, and recovery must hang the torchao copy under its float source. torchao is
imported inside the tests (it takes seconds), so collecting the suite does not pay for it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from format_factory import read_in_pieces, saved_llama
from mother_core.io.discovery import discover
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model

transformers = pytest.importorskip("transformers")


def _quantization():
    """torchao's ``torchao.quantization``, or skip (imported here, not at collection)."""
    pytest.importorskip("torchao")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchao.quantization as quantization
    return quantization


def _torchao(source: Path, out: Path, config, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``source`` quantized by torchao as transformers does it (``from_pretrained`` with a
    ``TorchAoConfig``), saved to ``out`` as safetensors; returns torchao's ``dequantize()`` of every
    quantized weight of the saved file as transformers loads it back, by saved name (float32)."""
    quantized = transformers.AutoModelForCausalLM.from_pretrained(
        source, quantization_config=transformers.TorchAoConfig(config), dtype=dtype, device_map="cpu")
    quantized.save_pretrained(out, safe_serialization=True)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, device_map="cpu")
    return {k: v.dequantize().float() for k, v in loaded.state_dict().items()
            if type(v) not in (torch.Tensor, torch.nn.Parameter)}


#: (configuration, model dtype, scheme the engine names, relative error bound vs the float source)
CASES = [
    (lambda q: q.Int8WeightOnlyConfig(), torch.bfloat16, "torchao-int8", 0.02),
    (lambda q: q.Int8WeightOnlyConfig(granularity=q.PerTensor()), torch.float16, "torchao-int8", 0.03),
    (lambda q: q.Int8DynamicActivationInt8WeightConfig(), torch.bfloat16, "torchao-int8", 0.02),
    (lambda q: q.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=q.PerGroup(32),
                                      mapping_type=q.MappingType.ASYMMETRIC), torch.float16, "torchao-int4", 0.15),
    (lambda q: q.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=q.PerGroup(32)),
     torch.bfloat16, "torchao-int4", 0.2),
    (lambda q: q.Float8WeightOnlyConfig(), torch.bfloat16, "torchao-float8", 0.06),
    (lambda q: q.Float8WeightOnlyConfig(granularity=q.PerTensor()), torch.float16, "torchao-float8", 0.06),
]
_IDS = ["int8-weight-only", "int8-per-tensor-fp16", "int8-dynamic", "int4-asym-fp16", "int8-dynamic-int4",
        "float8-weight-only", "float8-per-tensor-fp16"]


@pytest.mark.parametrize("make,dtype,scheme,tol", CASES, ids=_IDS)
def test_reader_gives_the_weights_torchao_decodes(tmp_path, make, dtype, scheme, tol):
    """Bit for bit torchao's ``dequantize()``, by ``read`` and by ``read_into`` a reused buffer in row
    chunks as the pass reads; the scales and codes are not listed as weights."""
    config = make(_quantization())
    source = saved_llama(tmp_path / "src", 160, dtype)
    decoded = _torchao(tmp_path / "src", tmp_path / "q", config, dtype)
    assert len(decoded) == 14  # every Linear of the two layers
    ref = discover([tmp_path / "q"]).models[0]
    assert ref.format == f"safetensors:{scheme}"
    with open_model(ref) as reader:
        assert not reader.notes
        assert set(reader.tensor_infos()) == {normalise_name(k) for k in source}
        for name, library in decoded.items():
            got = reader.read(normalise_name(name))
            assert got.dtype == torch.float32 and torch.equal(got, library), name
            assert torch.equal(read_in_pieces(reader, normalise_name(name), got.shape[0] // 3 + 1), got), name
            rel = ((got - source[name]).norm() / source[name].norm()).item()
            assert rel < tol, (name, rel)


def test_torchao_copy_is_recovered_under_its_source(tmp_path):
    """A trained family (real AdamW steps) with an int4 torchao copy of one member: the copy hangs under
    that member as ``quantized``."""
    from checkpoint_factory import llama_tree

    from mother_core import RecoverySettings, recover_paths

    q = _quantization()
    folder = llama_tree(tmp_path / "set", (("a", "m-root", 1), ("b", "m-root", 2)), 20, 3e-3, 8, 2e-3,
                        dtype=torch.bfloat16)
    _torchao(folder / "a", folder / "a-torchao-int4", q.IntxWeightOnlyConfig(
        weight_dtype=torch.int4, granularity=q.PerGroup(16)), torch.bfloat16)
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {(e.parent, e.child): e for e in result.edges}
    assert ("a", "a-torchao-int4") in edges, sorted(edges)
    assert edges[("a", "a-torchao-int4")].relation == "quantized"


def _rewrite(folder: Path, change) -> None:
    """The model's safetensors file written again (by the safetensors library) with ``change(metadata)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = next(folder.glob("*.safetensors"))
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata=change(metadata))


@pytest.mark.parametrize("damage", ["other-subclass", "act-pre-scale", "deep", "no-metadata"])
def test_torchao_weight_we_do_not_decode_is_a_note(tmp_path, damage):
    """A weight described as a subclass we do not decode (torchao's packed int4 layouts need a GPU to be
    written), one holding an activation pre-scale, a description nested past the header's limit, or a file
    whose metadata was stripped: those weights are left out with a note naming them, never read as raw
    codes; the rest of the model is read."""
    q = _quantization()
    saved_llama(tmp_path / "src", 161, torch.bfloat16)
    _torchao(tmp_path / "src", tmp_path / "q", q.Int8WeightOnlyConfig(), torch.bfloat16)
    key = "model.layers.0.mlp.up_proj.weight"

    def change(metadata: dict) -> dict:
        if damage == "no-metadata":
            return {"format": "pt"}
        entry = json.loads(metadata[key])
        if damage == "other-subclass":
            entry["_type"] = "Int4TilePackedTo4dTensor"
        elif damage == "act-pre-scale":
            entry["_tensor_data_names"].append("act_pre_scale")
        else:
            entry["_data"]["block_size"] = json.loads("[" * 40 + "]" * 40)
        metadata[key] = json.dumps(entry)
        return metadata

    _rewrite(tmp_path / "q", change)
    with open_model(discover([tmp_path / "q"]).models[0]) as reader:
        names = set(reader.tensor_infos())
        assert not any("_weight_" in n for n in names)  # no code, scale or zero point compared as a weight
        assert "layers.0.mlp.up_proj.weight" not in names
        assert "embed_tokens.weight" in names
        if damage == "no-metadata":
            assert len(reader.notes) == 14 and all("description is missing" in n for n in reader.notes)
        else:
            assert "layers.0.mlp.down_proj.weight" in names
            assert len(reader.notes) == 1 and "layers.0.mlp.up_proj.weight" in reader.notes[0], reader.notes
