"""A root still at its initialisation (a "tiny-random" checkpoint another team fine-tunes from) is read as the
root, never as the child of its own fine-tune (mother_core/relations/untrained.py; benchmarks/elsewhere_set.py).

Real transformers models: a StableLM saved straight from its config, a partial fine-tune of it (only the last
block, the final norm and the head trained, as budget fine-tunes do) and a full fine-tune of that child.
Kurtosis reads the Gaussian initialisation as the most "specialised" model, so without the rule the root
hangs under its fine-tune.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.relations.untrained import at_initialisation
from mother_core.stats.result import WeightStatistics

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("untrained-root")

transformers = pytest.importorskip("transformers")

V, T = 256, 32


def _train(model: torch.nn.Module, seed: int, steps: int, lr: float, only: tuple[str, ...] = ()) -> None:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = [p for n, p in model.named_parameters() if not only or any(k in n for k in only)]
    for n, p in model.named_parameters():
        p.requires_grad_(not only or any(k in n for k in only))
    opt = torch.optim.AdamW(params, lr=lr)
    for _ in range(steps):
        a = int(rng.integers(1, 8)) * 2 + 1
        start = rng.integers(V, size=(16, 1))
        ids = torch.from_numpy((start * a ** np.arange(T) + np.arange(T)) % V)  # a token recurrence
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def random_root_family(tmp_path_factory: pytest.TempPathFactory) -> WeightStatistics:
    out = tmp_path_factory.mktemp("untrained")
    cfg = transformers.StableLmConfig(vocab_size=V, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, use_qkv_bias=True,
                                      max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(11)
    model = transformers.StableLmForCausalLM(cfg)
    model.save_pretrained(str(out / "root"))  # untrained
    _train(model, 1, 150, 1e-3, only=("layers.1.", "lm_head", "model.norm"))
    model.save_pretrained(str(out / "partial"))
    _train(model, 2, 60, 1e-3)
    model.save_pretrained(str(out / "full"))
    return compute_statistics(discover([out]), device="cpu")


def test_only_the_untrained_model_reads_as_at_initialisation(random_root_family: WeightStatistics) -> None:
    stats = random_root_family
    init = {Path(m.path).name: bool(v) for m, v in zip(stats.models, at_initialisation(stats), strict=True)}
    # the partial fine-tune keeps its first block's norms at their initial ones: it is not "at init"
    assert init == {"root": True, "partial": False, "full": False}


def test_untrained_root_is_the_parent(random_root_family: WeightStatistics) -> None:
    rec = recover(random_root_family, RecoverySettings())
    edges = {(Path(e.parent).name, Path(e.child).name) for e in rec.edges}
    assert ("root", "partial") in edges
    assert ("partial", "root") not in edges and ("full", "root") not in edges
