"""One home per vocabulary (issue 10, item 5): edge statuses and layer kinds are defined once, and every
consumer draws from that definition."""

from __future__ import annotations

import pytest

from mother_core.evaluate import STATUSES as EVALUATE_STATUSES
from mother_core.io.names import ATTENTION_KINDS, LAYER_KINDS, layer_kind
from mother_core.lineage import STATUSES as LINEAGE_STATUSES
from mother_core.statuses import DECLARED_STATUSES, STATUS_INFO, TRUTH_STATUSES, EdgeStatus

# One real tensor name and shape per layer kind (Llama, GPT-2, ViT-style names).
KIND_EXAMPLES = {
    "attn_q": ("layers.0.self_attn.q_proj.weight", (64, 64)),
    "attn_k": ("layers.0.self_attn.k_proj.weight", (64, 64)),
    "attn_v": ("layers.0.self_attn.v_proj.weight", (64, 64)),
    "attn_o": ("layers.0.self_attn.o_proj.weight", (64, 64)),
    "attn_qkv": ("h.0.attn.c_attn.weight", (64, 192)),
    "mlp": ("h.0.mlp.c_proj.weight", (256, 64)),
    "embedding": ("embed_tokens.weight", (100, 64)),
    "norm": ("layers.0.input_layernorm.weight", (64,)),
    "conv": ("conv1.weight", (8, 3, 3, 3)),
    "head": ("lm_head.weight", (100, 64)),
    "bias": ("layers.0.mlp.fc1.bias", (64,)),
    "other": ("scale_factor", (3,)),
}


def test_statuses_split_into_the_two_references():
    assert set(TRUTH_STATUSES).isdisjoint(DECLARED_STATUSES)
    assert set(TRUTH_STATUSES) | set(DECLARED_STATUSES) == set(EdgeStatus)
    assert EVALUATE_STATUSES == TRUTH_STATUSES and LINEAGE_STATUSES == DECLARED_STATUSES


def test_every_status_has_a_meaning_an_icon_and_a_colour():
    from explorer_ui.graph import STATUS_COLORS, STATUS_TEXT

    for s in EdgeStatus:
        info = STATUS_INFO[s]
        assert info.meaning and len(info.icon) == 1
        assert STATUS_COLORS[s].startswith("#") and STATUS_TEXT[s] == info.meaning
        assert f"{s}" == s.value  # written as the bare word in reports and legends


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_every_layer_kind_is_what_layer_kind_returns_for_some_tensor(kind):
    name, shape = KIND_EXAMPLES[kind]
    assert layer_kind(name, shape) == kind


def test_layer_kind_examples_cover_the_registry():
    assert set(KIND_EXAMPLES) == set(LAYER_KINDS) and ATTENTION_KINDS < set(LAYER_KINDS)
