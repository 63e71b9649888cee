"""Tensor names: align the same weight across checkpoints, and guess what kind of layer it belongs to.

Normalisation rule (:func:`normalise_name`), applied to every stored name, the same way for every model
of a set so that one weight gets one name:

1. Repeatedly strip a leading *wrapper* prefix: ``module.`` (DataParallel / DDP), ``_orig_mod.``
   (``torch.compile``), ``base_model.model.`` (PEFT) and ``model.`` (``*ForCausalLM`` wrappers,
   Lightning modules). ``model.layers.0.mlp.up_proj.weight`` -> ``layers.0.mlp.up_proj.weight``, the
   name a bare ``LlamaModel`` saves.
2. Then strip one leading *backbone attribute* (``bert.``, ``roberta.``, ``vit.``, ``transformer.``,
   ``gpt_neox.``, ...; see :data:`BACKBONE_ATTRIBUTES`) when the next component is a typical backbone
   child (``embeddings``, ``encoder``, ``layers``, ``h``, ``blocks``, ``wte``, ...; see
   :data:`BACKBONE_CHILDREN`). ``bert.encoder.layer.0...`` (a classifier) aligns with
   ``encoder.layer.0...`` (a bare ``BertModel``); ``transformer.h.0...`` (``GPT2LMHeadModel``) with
   ``h.0...`` (``GPT2Model``).
3. Drop PEFT's ``.base_layer`` component (a full state dict of a PEFT-wrapped model) so that
   ``q_proj.base_layer.weight`` aligns with ``q_proj.weight``.
4. Mixture-of-experts blocks get the names transformers 5 gives them in memory, whatever the file says:
   Mixtral's, PhiMoE's and Granite-MoE's ``block_sparse_moe`` is ``mlp``, and Mixtral's expert projections
   ``experts.N.w1`` / ``w2`` / ``w3`` are ``gate_proj`` / ``down_proj`` / ``up_proj`` (the hub's files, mergekit
   and llama.cpp's converter keep the old names; ``transformers.conversion_mapping`` renames them on load).
   The experts of one block are then stacked into one tensor per projection by
   :mod:`mother_core.io.experts`, so a per-expert, a fused and a GGUF file compare tensor by tensor.

Heads stay as they are (``lm_head.weight``, ``classifier.weight``): they are not shared by a backbone
and a task model, and that is right. When two stored names of one model normalise to the same name, the
reader keeps the raw name for all but the one already in normal form (see ``readers.py``).
"""

from __future__ import annotations

import re

#: Every layer kind :func:`layer_kind` returns: the one list of these words (the statistics'
#: ``TensorMeta.kind``, recovery's layer selection by kinds, the settings' help all use it).
LAYER_KINDS: tuple[str, ...] = ("attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "mlp", "embedding", "norm",
                                "conv", "head", "bias", "other")
#: The separate attention projections: their square matrices are the paper's layer selection.
ATTENTION_KINDS: frozenset[str] = frozenset({"attn_q", "attn_k", "attn_v", "attn_o"})

#: Prefixes that wrap a whole model without changing it; stripped repeatedly, in any order.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "base_model.model.", "model.")

#: Attribute names under which task models (``*ForSequenceClassification``, ...) keep their backbone.
BACKBONE_ATTRIBUTES: frozenset[str] = frozenset({
    "bert", "roberta", "xlm_roberta", "camembert", "deberta", "deberta_v2", "distilbert", "electra",
    "albert", "mpnet", "vit", "deit", "beit", "swin", "dinov2", "convnext", "transformer", "gpt_neox",
    "gpt2", "llama", "backbone", "encoder_model", "base_model",
})

#: First components of a backbone's own parameters: evidence that the attribute before them wraps one.
BACKBONE_CHILDREN: frozenset[str] = frozenset({
    "embeddings", "embedding", "encoder", "decoder", "layers", "layer", "h", "blocks", "wte", "wpe",
    "ln_f", "embed_in", "embed_tokens", "final_layer_norm", "pooler", "layernorm", "norm", "word_embeddings",
    "patch_embed", "pos_embed", "cls_token", "stages", "stem",
})


def normalise_name(name: str) -> str:
    """Strip task-wrapper prefixes so the same weight has the same name in every model.

    Parameters
    ----------
    name : str
        A tensor name as stored in a checkpoint.

    Returns
    -------
    str
        The normalised name (see the module docstring for the rule).

    Examples
    --------
    >>> normalise_name("module.model.layers.0.self_attn.q_proj.weight")
    'layers.0.self_attn.q_proj.weight'
    >>> normalise_name("bert.encoder.layer.0.attention.self.query.weight")
    'encoder.layer.0.attention.self.query.weight'
    >>> normalise_name("model.layers.0.block_sparse_moe.experts.3.w1.weight")
    'layers.0.mlp.experts.3.gate_proj.weight'
    """
    out = name
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if out.startswith(prefix) and len(out) > len(prefix):
                out = out[len(prefix):]
                changed = True
    head, _, rest = out.partition(".")
    if head in BACKBONE_ATTRIBUTES and rest and rest.split(".", 1)[0] in BACKBONE_CHILDREN:
        out = rest
    if ".base_layer." in out:
        out = out.replace(".base_layer.", ".")
    if "block_sparse_moe." in out:
        out = out.replace("block_sparse_moe.", "mlp.")
    if ".experts." in out:
        out = _MIXTRAL_EXPERT.sub(lambda m: m[1] + _MIXTRAL_PROJ[m[2]] + m[3], out)
    return out


#: Mixtral's expert projections (``convert_hf_to_gguf.py``: "w1: gate, w2: down, w3: up"), rule 4.
_MIXTRAL_PROJ = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
_MIXTRAL_EXPERT = re.compile(r"(\.experts\.(?:\d+\.)?)(w[123])(\.|$)")


# --- layer kinds -------------------------------------------------------------------------------------

_QKV = {"c_attn", "qkv", "in_proj", "in_proj_weight", "query_key_value", "wqkv", "qkv_proj", "w_pack", "to_qkv"}
_Q = {"q_proj", "query", "to_q", "wq", "q_lin", "q"}
_K = {"k_proj", "key", "to_k", "wk", "k_lin", "k"}
_V = {"v_proj", "value", "to_v", "wv", "v_lin", "v"}
_O_ALWAYS = {"o_proj", "out_proj", "to_out", "out_lin"}
# Names that are the attention output only inside an attention block (GPT-2 ``attn.c_proj`` vs
# ``mlp.c_proj``, BERT ``attention.output.dense`` vs ``output.dense``, T5 ``SelfAttention.o``).
_O_IN_ATTENTION = {"c_proj", "proj", "dense", "wo", "o", "out", "output"}
# Single letters are only trusted inside an attention block.
_NEEDS_ATTENTION = {"q", "k", "v", "o", "wo", "out"}
_ATTENTION_CONTEXT = re.compile(r"^(attn\d*|attention|self_attn|selfattention|self_attention|encdecattention|"
                                r"cross_attn|crossattention|self|mixer)$")
_MLP = {
    "mlp", "fc1", "fc2", "gate_proj", "up_proj", "down_proj", "gate_up_proj", "intermediate", "ff", "ffn",
    "feed_forward", "feedforward", "densereludense", "c_fc", "dense_h_to_4h", "dense_4h_to_h", "lin1",
    "lin2", "w1", "w2", "w3", "wi", "wi_0", "wi_1", "experts", "fc_in", "fc_out", "ff_net",
}
_HEAD_TOP = {"lm_head", "classifier", "head", "heads", "score", "embed_out", "cls", "qa_outputs",
             "logits", "pre_classifier", "fc", "output", "decoder_head"}
_EMBED_EXACT = {"wte", "wpe", "shared", "cls_token", "dist_token", "mask_token", "class_embedding"}
_NORM = re.compile(r"(norm|^ln(_?[a-z0-9]{0,3})$|^bn\d*$|^batchnorm|^layernorm|^rms)")


def _is_embedding(seg: str) -> bool:
    return seg in _EMBED_EXACT or "embed" in seg or seg.startswith("pos_") or "position" in seg


def _attention_context(before: list[str]) -> bool:
    """Whether the nearest enclosing block (walking up from the leaf) is an attention block."""
    for seg in reversed(before):
        if seg in _MLP:
            return False
        if _ATTENTION_CONTEXT.match(seg):
            return True
    return False


def layer_kind(name: str, shape: tuple[int, ...]) -> str:
    """Guess the kind of layer a tensor belongs to, from its (normalised) name and shape.

    Parameters
    ----------
    name : str
        Tensor name (normalised or not).
    shape : tuple of int
        Tensor shape.

    Returns
    -------
    str
        One of :class:`~mother_core.stats.result.TensorMeta`'s kinds: ``"attn_q"``, ``"attn_k"``,
        ``"attn_v"``, ``"attn_o"``, ``"attn_qkv"``, ``"mlp"``, ``"embedding"``, ``"norm"``, ``"conv"``,
        ``"head"``, ``"bias"`` or ``"other"``.

    Notes
    -----
    1-D (and 0-D) tensors are ``norm`` when any component names a norm, else ``bias`` for ``*bias``,
    ``embedding`` for token/position parameters, else ``other``. Tensors of 3 or more dimensions are
    ``conv`` (a ViT patch projection too) unless the parameter itself is a position/class embedding, or, 3-D
    under an ``experts`` component, a mixture-of-experts projection with its experts stacked (``mlp``).
    2-D tensors: a top-level head component wins; otherwise components are read from the leaf upwards
    and the first one recognised decides (so ``attn.c_proj`` is ``attn_o`` and ``mlp.c_proj`` is
    ``mlp``).

    Examples
    --------
    >>> layer_kind("layers.0.self_attn.q_proj.weight", (64, 64))
    'attn_q'
    >>> layer_kind("h.0.mlp.c_proj.weight", (256, 64))
    'mlp'
    """
    segs = name.lower().split(".")
    param = segs[-1]
    body = segs[:-1] if param in {"weight", "bias"} and len(segs) > 1 else segs
    ndim = len(shape)

    if ndim <= 1:
        if any(_NORM.search(s) for s in body) or param in {"running_mean", "running_var", "num_batches_tracked"}:
            return "norm"
        if param.endswith("bias"):
            return "bias"
        if any(_is_embedding(s) for s in segs):
            return "embedding"
        return "other"

    if ndim >= 3:
        if param not in {"weight", "bias"} and _is_embedding(param):
            return "embedding"  # timm pos_embed (1, N, D), cls_token (1, 1, D)
        if "experts" in body and ndim == 3:
            return "mlp"  # a mixture-of-experts projection, experts stacked (experts, out, in)
        return "conv"

    if segs[0] in _HEAD_TOP and (segs[0] not in {"fc", "output"} or len(segs) == 2):
        return "head"
    for i in range(len(body) - 1, -1, -1):
        seg, before = body[i], body[:i]
        in_attention = _attention_context(before)
        if seg in _NEEDS_ATTENTION and not in_attention:
            continue
        if seg in _QKV:
            return "attn_qkv"
        if seg in _Q:
            return "attn_q"
        if seg in _K:
            return "attn_k"
        if seg in _V:
            return "attn_v"
        if seg in _O_ALWAYS:
            return "attn_o"
        if seg in _O_IN_ATTENTION:
            if in_attention:
                return "attn_o"
            if seg == "output" and i + 1 < len(body) and body[i + 1] == "dense":
                return "mlp"  # BERT layer.N.output.dense: the second MLP matrix
            continue
        if seg in _MLP:
            return "mlp"
        if _is_embedding(seg):
            return "embedding"
    return "other"
