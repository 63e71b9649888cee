"""MLX quantized checkpoints (``mlx_lm.convert -q``), written by MLX and read in the one pass.

Each checkpoint is quantized by mlx-lm from a transformers model saved here; the reader must give back,
bit for bit, the weights ``mx.dequantize`` decodes from the same file, under the transformers names, and
recovery must hang the MLX copy under its source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from format_factory import read_in_pieces
from mother_core.io.discovery import discover
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model

pytest.importorskip("mlx_lm")
transformers = pytest.importorskip("transformers")


def _llama(folder: Path, seed: int, dtype: torch.dtype = torch.bfloat16, like: Path | None = None,
           step: float = 0.0) -> dict[str, torch.Tensor]:
    """A tiny Llama saved by transformers (``like``: a copy of that model moved by ``step`` along a fixed
    random direction, the stand-in for a fine-tune in reader tests); returns its state."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(config)
    if like is not None:
        model = transformers.LlamaForCausalLM.from_pretrained(like, dtype=torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.add_(torch.randn_like(p) * p.std() * step)
    model = model.to(dtype)
    model.save_pretrained(folder)
    return {k: v.float() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bits,group,dtype,mixed", [(4, 64, torch.bfloat16, None), (8, 32, torch.bfloat16, None),
                                                    (3, 64, torch.bfloat16, None), (4, 64, torch.float16, None),
                                                    (4, 64, torch.bfloat16, "down_proj")])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "torch"])
def test_reader_gives_the_weights_mlx_decodes(tmp_path, monkeypatch, bits, group, dtype, mixed, compiled):
    """Bit for bit ``mx.dequantize``'s weights, with the compiled decoder and without, by ``read`` and by
    ``read_into`` in pieces; a mixed recipe (``down_proj`` at 8 bits) read module by module."""
    from format_factory import mlx_quantized

    from mother_core.io import compressed_fast

    if not compiled:
        monkeypatch.setattr(compressed_fast, "available", lambda: False)
    source = _llama(tmp_path / "src", 150, dtype)
    decoded = mlx_quantized(tmp_path / "src", tmp_path / "q", bits, group, mixed)
    ref = discover([tmp_path / "q"]).models[0]
    assert ref.format.split(":")[1] == f"mlx-int{bits}"  # mlx-lm writes a shard index even for one file
    with open_model(ref) as reader:
        assert not reader.notes
        names = set(reader.tensor_infos())
        assert names == {normalise_name(k) for k in source if k != "lm_head.weight"} | (
            {"lm_head.weight"} if "lm_head.weight" in decoded else set())  # no scales or biases listed
        for name, library in decoded.items():
            got = reader.read(normalise_name(name))
            assert torch.equal(got, library), name
            assert torch.equal(read_in_pieces(reader, normalise_name(name), got.shape[0] // 2 + 1), got), name
            rel = ((got - source[name]).norm() / source[name].norm()).item()
            assert rel < {8: 0.02, 4: 0.15, 3: 0.3}[8 if mixed and mixed in name else bits], (name, rel)


def test_mlx_copy_is_recovered_under_its_source(tmp_path):
    from format_factory import mlx_quantized

    from mother_core import RecoverySettings, recover_paths

    folder = tmp_path / "set"
    _llama(folder / "root", 151)
    _llama(folder / "a", 0, like=folder / "root", step=0.15)
    _llama(folder / "b", 1, like=folder / "root", step=0.15)
    mlx_quantized(folder / "a", folder / "a-mlx-4bit", 4, 64)
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {(e.parent, e.child): e for e in result.edges}
    assert ("a", "a-mlx-4bit") in edges, sorted(edges)
    assert edges[("a", "a-mlx-4bit")].relation == "quantized"


def test_mlx_mode_we_do_not_decode_is_a_note(tmp_path):
    """A module whose config entry names another MLX mode is left out with a note; the rest is read."""
    from format_factory import mlx_quantized

    _llama(tmp_path / "src", 152)
    mlx_quantized(tmp_path / "src", tmp_path / "q", 4, 64)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    config["quantization_config"]["model.layers.0.mlp.up_proj"] = {"bits": 4, "group_size": 32, "mode": "mxfp4"}
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))
    with open_model(discover([tmp_path / "q"]).models[0]) as reader:
        assert "layers.0.mlp.up_proj.weight" not in reader.tensor_infos()
        assert "layers.0.mlp.down_proj.weight" in reader.tensor_infos()
        assert any("up_proj" in n and "mxfp4" in n for n in reader.notes)
