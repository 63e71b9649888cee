"""bitsandbytes on a GPT-2 checkpoint: transformers replaces GPT-2's ``Conv1D`` (weight stored
(in, out)) by ``Linear8bitLt`` / ``Linear4bit`` (weight (out, in)); the reader turns them back so that
they compare with the float model's tensors (mother_core/io/quantized.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mother_core import discover
from mother_core.io.readers import open_model

CONV1D = ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight")


@pytest.mark.parametrize("kind,tol", [("int8", 0.02), ("nf4", 0.12)])
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_bnb_conv1d_weights_are_read_in_their_float_layout(tmp_path, kind, tol, model_type):
    bnb = pytest.importorskip("bitsandbytes")
    from format_factory import bnb_state

    g = torch.Generator().manual_seed(5)
    conv = {n: torch.randn(32, 96, generator=g) * 0.1 for n in CONV1D}  # (in, out), as GPT-2 stores them
    try:  # bitsandbytes quantizes the (out, in) weight of the Linear that replaced the Conv1D
        q = bnb_state({n: w.T.contiguous() for n, w in conv.items()}, kind)
    except (RuntimeError, NotImplementedError) as e:
        pytest.skip(f"bitsandbytes {bnb.__version__} cannot quantize on this CPU: {e}")
    save_file({k: v.contiguous() for k, v in q.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": kind != "int8", "load_in_8bit": kind == "int8"}}))
    with open_model(discover([tmp_path]).models[0]) as reader:
        infos = reader.tensor_infos()
        for name, w in conv.items():
            short = name.removeprefix("transformer.")
            if model_type != "gpt2":  # other models' Linear weights are (out, in) already: left as stored
                assert infos[short].shape == (96, 32)
                continue
            assert infos[short].shape == (32, 96)
            got = reader.read(short)
            assert ((got - w).norm() / w.norm()).item() < tol
            torch.testing.assert_close(reader.read(short, (5, 17)), got[5:17])
