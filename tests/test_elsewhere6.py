"""What the sixth stress set (``benchmarks/elsewhere6_set.py``) found, on real files made by the real tools.

llama.cpp's converter writes Nemotron's norm weights as 1 + w (``NemotronModel.modify_tensors``: "Adding +1 to
LayerNorm's weights here to implement layernorm1p"), as it does Gemma's. Read as stored, a Nemotron GGUF's norms sat
one off their source's, so the stress set's F16 GGUF of a fine-tune was explained as a merge of the set's other
GGUFs (its source plus another GGUF minus that one's source: both carry the same + 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mother_core import discover
from mother_core.io.readers import open_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_nemotron_gguf_norms_read_as_their_source(tmp_path: Path) -> None:
    """A Nemotron trained 15 steps by the stress set's own loop, and its F16 and Q8_0 GGUFs written as llama.cpp's
    converter writes them: every norm weight reads back at its source's value (was one off), the biases too."""
    import elsewhere6_set as es

    model = es.new_model("nemotron", 5)
    es.train(model, "lm", 1, 5, 15, 3e-3)
    model.save_pretrained(str(tmp_path / "src"))
    for qtype in ("F16", "Q8_0"):
        (tmp_path / qtype).mkdir()
        es.write_gguf(tmp_path / "src", tmp_path / qtype / f"nemotron-{qtype.lower()}.gguf", "nemotron", qtype)
    found = discover([tmp_path])
    assert not found.problems
    refs = {m.id: m for m in found.models}
    src = open_model(refs["src"])
    norms = [n for n in src.tensor_infos() if "norm." in n]
    assert len(norms) == 10  # two norms per block, the final one; a weight and a bias each
    for qtype in ("F16", "Q8_0"):
        g = open_model(refs[qtype])
        for n in norms:
            a, b = src.read(n).double(), g.read(n).double()
            assert float((a - b).abs().max()) < 1e-6, (qtype, n)  # stored float32 as they are; were 1.0 off
