"""Stable Diffusion LoRA files (kohya-ss and diffusers layouts), presented as their base UNet with the LoRA
merged in.

Stable Diffusion LoRAs are shared as single ``.safetensors`` files, not as PEFT adapter folders:

- **kohya-ss** (sd-scripts; what AUTOMATIC1111, ComfyUI and most hubs use): ``lora_unet_<module>.lora_down.weight``
  (A, ``(r, in)`` or ``(r, in, kh, kw)`` for a LoCon convolution), ``.lora_up.weight`` (B, ``(out, r)`` or
  ``(out, r, 1, 1)``) and ``.alpha`` (a scalar), where ``<module>`` is the module's dotted path with every
  dot replaced by an underscore; ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` for the text encoder(s). The
  header's ``__metadata__`` says what it was trained on: ``ss_sd_model_name`` (the base's file name or hub
  id), ``ss_sd_model_hash`` (the webui's legacy hash of the base file), ``ss_network_dim``, ``ss_network_alpha``.
- **diffusers** (``pytorch_lora_weights.safetensors``, written by ``save_lora_weights``): ``unet.<path>.lora_A.weight``
  / ``.lora_B.weight`` (peft backend) or, in older files, ``unet.<path>.lora.down.weight`` / ``.lora.up.weight``
  and attention processors' ``unet.<block>.processor.to_q_lora.down.weight``; ``text_encoder.*`` for the text
  encoder. diffusers renames the old keys with ``KEYS_TO_ALWAYS_REPLACE`` and ``UNET_TO_DIFFUSERS``
  (``diffusers/utils/state_dict_utils.py``); :func:`_peft_module` applies the same rules. A Flux / SD3 pipeline
  saves its transformer's LoRA the same way under ``transformer.`` (``FluxPipeline.save_lora_weights``): read
  on a base transformer (a diffusers ``transformer/`` folder, or a single file read under the same names by
  :mod:`.dit_single_file`). kohya-ss Flux and SD3 LoRAs name the original fused modules
  (``lora_unet_double_blocks_0_img_attn_qkv``, ``lora_unet_single_blocks_0_linear1``,
  ``lora_unet_joint_blocks_0_x_block_attn_qkv``): each module's update is split by rows onto the diffusers
  modules it fuses (:func:`dit_resolve`), as diffusers' kohya Flux converter splits ``lora_up``, and as
  diffusers' SD3 single-file converter splits a fused weight (SD3 has no kohya converter in diffusers; a loader
  of the original layout adds the update to the fused weight, which that converter then splits the same way).
  LyCORIS networks on Flux / SD3 are read in both namings their tools write: made by sd-scripts on the original
  modules (``lora_unet_double_blocks_0_img_attn_qkv.hada_w1_a``), each module's update is made on the fused module,
  as its forward applies it there, and split by rows onto the diffusers modules (``_Update.rows_of``; LoHa, LoKr,
  LoCon, full differences, IA3 and DoRA per output row are row-separable; an OFT / BOFT or norm module on a fused
  module, whose rotation mixes the parts' rows, is refused at discovery, and DoRA per input channel there when
  opened); made on the diffusers transformer itself (LyCORIS's kohya network, or its wrapper ``create_lycoris`` as
  SimpleTuner trains Flux / SD3: ``lycoris_transformer_blocks_0_attn_to_q.lokr_w1``), the modules are the diffusers
  ones, resolved like an SD UNet's. Other DiT LoRA layouts (BFL ``diffusion_model.double_blocks.0...`` with
  ``lora_A``, a bare PEFT state dict) are refused with a message (:func:`dit_lora`).

The merged weight is the one diffusers' ``fuse_lora`` and sd-scripts' ``merge_lora.py`` compute:
``W + (alpha / r) * B @ A`` (convolutions: ``B.flatten(1) @ A.flatten(1)`` reshaped to the kernel), with
``alpha`` the module's ``.alpha`` tensor, else the diffusers ``lora_adapter_metadata`` header entry
(``unet.lora_alpha``, ``unet.alpha_pattern``, ``unet.use_rslora``), else ``r`` (scale 1: diffusers'
``get_peft_kwargs`` without alphas).

A kohya name is ambiguous (``down_blocks_0_attentions_0_proj_in`` could split at any underscore): it is
resolved against the base model's own tensor names, every ``<module>.weight`` of the base with its dots made
underscores; a name that matches no module or several is an :class:`AdapterMismatchError` naming it. kohya-ss
SDXL files name modules in the original (LDM) UNet layout (``lora_unet_input_blocks_4_1_proj_in``,
``lora_unet_output_blocks_...``, ``lora_unet_middle_block_...``), as sd-scripts trains SDXL on that UNet:
each base tensor also answers to its LDM name, derived from the base UNet's own block structure
(:func:`.sd_single_file.ldm_unet_names`, the mapping that reads single-file checkpoints), whichever layout
the base is stored in (a diffusers folder or a single file). Only the UNet is read (what a diffusers
folder's ``unet`` component and a single-file checkpoint present); text-encoder layers (``lora_te1_``,
``lora_te2_``) are left out as :mod:`.sd_single_file` leaves out the text encoders, and so are
textual-inversion embeddings some kohya files bundle (``bundle_emb.*``).

LyCORIS (KohakuBlueleaf/LyCORIS, ``lycoris-lora`` on PyPI) saves its networks in the kohya layout,
``lora_unet_<module>.<part>`` (or, made by its own wrapper ``create_lycoris`` around a UNet,
``lycoris_<module>.<part>``, read the same way), each module of one type, told apart by its parts
(``lycoris/modules/*.py``, each type's ``weight_list``). They are merged as the library's own forward applies them
(a module in its default, non-bypass mode: the base weight plus ``get_weight`` / ``make_weight``, then
``apply_weight_decompose``), with ``scale = alpha / r`` (``alpha`` the stored tensor, which already folds in
rs-LoRA's square root; 1 without one):

- LoCon with a Tucker kernel (``use_tucker``): ``lora_down`` (r, in, 1, 1), ``lora_mid`` (r, r, kh, kw) and
  ``lora_up`` (out, r, 1, 1) give ``W + scale * einsum(mid, up, down)`` (``functional/locon.py`` ``diff_weight``).
- LoHa: ``hada_w1_a`` (out, r), ``hada_w1_b`` (r, in * kh * kw) and ``hada_w2_*`` alike give
  ``W + ((w1a @ w1b) * (w2a @ w2b)) * scale``; with Tucker kernels ``hada_t1`` / ``hada_t2`` (r, r, kh, kw) the
  factors are (r, out) and (r, in) and each product is ``einsum(t, w_a, w_b)`` (``functional/loha.py``).
- LoKr: ``W + kron(w1, w2) * scale`` with ``w1`` = ``lokr_w1`` or ``lokr_w1_a @ lokr_w1_b`` and ``w2`` =
  ``lokr_w2``, ``lokr_w2_a @ lokr_w2_b`` or, with a Tucker kernel, ``einsum(lokr_t2, w2a, w2b)``
  (``functional/lokr.py``); r is the rank of the factored half (the rows of ``lokr_w1_b`` or ``lokr_w2_b``), and
  the scale is 1 when both halves are whole (``LokrModule`` sets alpha = r then). A convolution's kernel rides on
  ``w2``, so the product flattened is the Kronecker product of the flattened factors.
- full difference: ``W + diff`` and the bias ``+ diff_b`` (``modules/full.py``; ``diff_b`` is dropped where the
  base layer has no bias, as the library's merge drops it).
- norm (``train_norm``: a GroupNorm's or LayerNorm's ``w_norm`` / ``b_norm``, one value per channel):
  weight ``+ w_norm``, bias ``+ b_norm`` (``modules/norms.py``); these modules are looked up among the base's
  weight vectors, every other type among its matrices.
- weight decomposition (DoRA: ``dora_scale`` beside a LoCon, LoHa or LoKr module): the merged ``W'`` becomes
  ``W' * dora_scale / (||W'|| + eps)``, eps float32's machine epsilon, the norm taken over each output row when
  ``dora_scale`` is (out, 1, ...) (``wd_on_output``, the default) or each input channel when it is (1, in, ...)
  (``functional/general.py`` ``weight_decompose``).

Rank and module dropout (``rank_dropout``, ``rank_dropout_scale``, ``module_dropout``) act only while training,
and ``use_scalar``'s scalar is folded into the saved factors, so neither changes the merge. LyCORIS 4.1.3's
``merge_to`` (and its ``utils.merge``) scales a LoHa's or LoKr's update twice (its ``get_diff_weight`` multiplies
``get_weight``, already scaled, by the scale again), unlike its own forward and ComfyUI's loader: the forward's
single scale, the one the network was trained with, is used here.

- Diag-OFT (``oft_blocks`` (k, s, s), ``rescale`` (out, 1, ...), ``alpha`` the constraint c): the output rows in
  blocks of s, block j becoming ``R_j.T @ W_j`` with ``R = (I + Q)(I - Q)^-1``, ``Q = B - B.T`` scaled down to
  Frobenius norm ``c * out`` (over all blocks) when ``c > 0`` and it is larger (``functional/diag_oft.py``
  ``get_r``, ``_diff_weight``: ``W + (R - I).T W``); then ``W' * rescale`` (``+ (rescale - 1) W`` there).
- BOFT (``oft_blocks`` (m, k, b, b)): m butterfly stages, stage i mixing rows in groups of ``2^i * b`` (a
  permutation, ``R @`` each block of b, the permutation undone; ``functional/boft.py`` ``_diff_weight``), then
  ``* rescale``. Both mix rows, so a row range is read as the whole blocks (BOFT: groups of ``2^(m-1) * b``) that
  hold it.
- IA3 (``weight``, ``on_input``): ``W * (1 + weight)``, along the outputs, or the inputs when ``on_input`` is 1
  (``modules/ia3.py`` ``_ia3_weight``); the bias is left as it is.

Refused with a message: the LyCORIS GLoRA and T-LoRA module types, and LyCORIS 1.x's OFT (``oft_diag``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mother_core.errors import AdapterMismatchError, MotherError, UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef, TensorInfo
from mother_core.io.dit_single_file import kohya_rule, kohya_targets, splits_rows
from mother_core.io.sd_single_file import ldm_unet_names

KOHYA = "kohya"
DIFFUSERS = "diffusers"
#: Scheme -> what people call it (in messages and evidence).
LAYOUT_NAMES: Mapping[str, str] = {KOHYA: "kohya-ss", DIFFUSERS: "diffusers"}

#: kohya-ss module names; LyCORIS's own ``LycorisNetwork`` (``create_lycoris``, as trainers that wrap a diffusers UNet
#: directly use it) names them the same way under its ``lycoris_`` prefix (``wrapper.py``, ``LORA_PREFIX``).
_KOHYA_PREFIX = re.compile(r"^(?:lora_(unet|te\d?)_|lycoris_)")
#: The prefixes of UNet modules in that layout (``lycoris_``: the module the network wrapped, a UNet here).
_UNET_PREFIXES = ("lora_unet_", "lycoris_")
#: The module types merged here -> the parts a module of that type may hold (LyCORIS 4.1.3 ``lycoris/modules``:
#: each type's ``weight_list``; ``lora`` is kohya-ss's LoRA / LoCon and LyCORIS's LoConModule).
_KINDS: Mapping[str, frozenset[str]] = {
    "lora": frozenset({"lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha", "dora_scale"}),
    "loha": frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha",
                       "dora_scale"}),
    "lokr": frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha",
                       "dora_scale"}),
    "full": frozenset({"diff", "diff_b"}),
    "norm": frozenset({"w_norm", "b_norm"}),
    # Diag-OFT (oft_blocks (k, s, s)) and BOFT (oft_blocks (m, k, b, b)): the same parts, told apart by ndim
    "oft": frozenset({"oft_blocks", "rescale", "alpha"}),
    "ia3": frozenset({"weight", "on_input"}),
}
#: The part that says a module's type, in the library's order (``modules.get_module``: ``weight_list_det``).
_KIND_OF: tuple[tuple[str, str], ...] = (
    ("lora_up.weight", "lora"), ("lora_down.weight", "lora"), ("hada_w1_a", "loha"), ("lokr_w1", "lokr"),
    ("lokr_w1_a", "lokr"), ("diff", "full"), ("w_norm", "norm"), ("oft_blocks", "oft"), ("on_input", "ia3"),
)
_MERGED_PARTS = frozenset().union(*_KINDS.values())
#: A LoRA of a DiT denoiser (Flux, SD3): its module paths start with the transformer's blocks, in the original
#: single-file layout (kohya-ss Flux ``lora_unet_double_blocks_0_img_attn_qkv``, BFL / ComfyUI
#: ``diffusion_model.single_blocks.0.linear1``, SD3 ``joint_blocks``) or diffusers' (``transformer.transformer_blocks.0
#: .attn.to_q``, ``single_transformer_blocks``), after the prefix naming the component. An SD UNet's modules
#: start with ``down_blocks`` / ``input_blocks`` / ...; its ``transformer_blocks`` come after ``attentions_N``.
_DIT_MODULE = re.compile(r"^(?:lora_unet_|lora_transformer_|lycoris_|transformer\.|base_model\.model\.|"
                         r"(?:model\.)?diffusion_model\.)?(?P<block>double_blocks|single_blocks|joint_blocks|"
                         r"single_transformer_blocks|transformer_blocks)[._]\d")
_LORA_PARTS = ("lora_down", "lora_up", "lora_A", "lora_B", ".lora.down", ".lora.up", ".alpha", "hada_", "lokr_")
#: The scheme of such a file: refused at discovery with :func:`refusal`'s own message.
DIT_LORA = "unsupported-dit"
#: What people call each merged type (in messages).
KIND_NAMES: Mapping[str, str] = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr", "full": "full difference",
                                 "norm": "norm", "oft": "OFT / BOFT", "ia3": "IA3"}
#: Parameter names of the LyCORIS types this module does not merge -> the type, for the refusal.
_LYCORIS: tuple[tuple[str, str], ...] = (
    ("oft_diag", "OFT (LyCORIS 1.x, oft_diag)"), ("a1.weight", "GLoRA (LyCORIS)"),
    ("b1.weight", "GLoRA (LyCORIS)"), ("lambda_layer", "T-LoRA (LyCORIS)"),
    ("lokr_t1", "LoKr with a Tucker w1 (LyCORIS lokr_t1)"),
)
_COMPONENTS = ("unet.", "transformer.", "text_encoder.", "text_encoder_2.")
#: The components of a diffusers-layout file that are the pipeline's denoiser, the model compared: an SD UNet, or
#: the transformer of a Flux / SD3 pipeline (``FluxPipeline.save_lora_weights``: ``transformer.<module>.lora_A``).
_DENOISERS = ("unet.", "transformer.")
#: The first word of a diffusers UNet module path (keys of unprefixed files saved by ``save_attn_procs``).
_UNET_WORDS = ("down_blocks.", "up_blocks.", "mid_block.", "conv_in.", "conv_out.", "time_embedding.",
               "conv_norm_out.", "add_embedding.")
_DIFFUSERS_PIECES = (".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.", "_lora.down.", "_lora.up.",
                     ".lora_linear_layer.")
#: diffusers' ``KEYS_TO_ALWAYS_REPLACE`` + ``UNET_TO_DIFFUSERS`` (state_dict_utils.py), longest first.
_DIFFUSERS_RENAMES: tuple[tuple[str, str], ...] = (
    (".processor.", "."),
    (".to_out_lora.up", ".to_out.0.lora_B"), (".to_out_lora.down", ".to_out.0.lora_A"),
    (".to_q_lora.up", ".to_q.lora_B"), (".to_q_lora.down", ".to_q.lora_A"),
    (".to_k_lora.up", ".to_k.lora_B"), (".to_k_lora.down", ".to_k.lora_A"),
    (".to_v_lora.up", ".to_v.lora_B"), (".to_v_lora.down", ".to_v.lora_A"),
    (".lora_linear_layer.up", ".lora_B"), (".lora_linear_layer.down", ".lora_A"),
    (".lora.up", ".lora_B"), (".lora.down", ".lora_A"),
)
#: The first words of a UNet module in the original (LDM) layout, as kohya-ss names SDXL modules (for the
#: message when such a name matches no module of the base).
_LDM_WORDS = ("input_blocks_", "middle_block_", "output_blocks_")
_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def module_kinds(names: Iterable[str]) -> tuple[str, ...]:
    """The module types (keys of :data:`KIND_NAMES`) a kohya-layout file holds, from its tensor names, sorted.

    >>> module_kinds(["lora_unet_a.hada_w1_a", "lora_unet_a.hada_w1_b", "lora_unet_b.lora_up.weight"])
    ('loha', 'lora')
    """
    kinds: set[str] = set()
    for name in names:
        if _KOHYA_PREFIX.match(name) and "." in name:
            part = name.split(".", 1)[1]
            kinds.update(kind for marker, kind in _KIND_OF if part == marker)
    return tuple(sorted(kinds))


def sniff(names: Iterable[str]) -> str | None:
    """The layout of a Stable Diffusion LoRA file from its tensor names, or None for any other file.

    Returns ``"kohya"`` (LyCORIS networks included), ``"diffusers"``, or ``"unsupported:<what>"`` for an adapter
    family this module does not merge (LyCORIS GLoRA, T-LoRA, ...). Reads names only (the safetensors header).

    Examples
    --------
    >>> sniff(["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight",
    ...        "lora_unet_mid_block_attentions_0_proj_in.alpha"])
    'kohya'
    >>> sniff(["unet.mid_block.attentions.0.proj_in.lora_A.weight"])
    'diffusers'
    >>> sniff(["lora_unet_mid_block_attentions_0_proj_in.hada_w1_a"])
    'kohya'
    >>> sniff(["lora_unet_mid_block_attentions_0_proj_in.oft_diag"])
    'unsupported:OFT (LyCORIS 1.x, oft_diag)'
    >>> sniff(["model.layers.0.mlp.up_proj.weight"]) is None
    True
    """
    names = list(names)
    if not names:
        return None
    dit = dit_lora(names)
    # A DiT LoRA as diffusers saves it (``transformer.<diffusers module>.lora_A``) names the transformer's own
    # modules: read like an SD UNet's diffusers file, on a base read under those names (a diffusers folder or a
    # single file, :mod:`.dit_single_file`). BFL / ComfyUI's ``diffusion_model.double_blocks.0...lora_A`` and a bare
    # PEFT state dict (no ``transformer.``): not read yet.
    # kohya-ss Flux / SD3 files of plain LoRA modules name the original (fused) modules: read, each module's
    # update split by rows onto the diffusers modules it fuses (:func:`dit_resolve`; checked against diffusers'
    # kohya Flux converter, and for SD3 against its single-file converter applied to the merged original).
    # A kohya-style network made on the diffusers transformer itself (LyCORIS's kohya network or its own wrapper
    # around a FluxTransformer2DModel / SD3Transformer2DModel, as SimpleTuner trains them:
    # ``lycoris_transformer_blocks_0_attn_to_q.lokr_w1``) names the diffusers modules, dots made underscores:
    # resolved against the base's own names like an SD UNet's network, every module type alike.
    # And a kohya-ss / LyCORIS network made by sd-scripts on the original Flux / SD3 modules
    # (``lora_unet_double_blocks_0_img_attn_qkv.hada_w1_a``): each module's update is made on the fused module and
    # split by rows onto the diffusers modules it fuses (:func:`dit_resolve`), or read whole where it maps to one.
    kohya_named = 2 * sum(1 for n in names if _KOHYA_PREFIX.match(n)) > len(names)
    if dit is not None and not kohya_named and not (dit.endswith("(diffusers / PEFT layout)")
                                                    and all(n.startswith(_COMPONENTS) for n in names)):
        return f"{DIT_LORA}:{dit}"
    kohya = [n for n in names if _KOHYA_PREFIX.match(n)]
    # Every name, or most: some files bundle other tensors (textual-inversion embeddings, "bundle_emb.*"),
    # which are not LoRA layers and are left out.
    if kohya and 2 * len(kohya) > len(names):
        parts = {n.split(".", 1)[1] if "." in n else "" for n in kohya}
        for part in sorted(parts - _MERGED_PARTS):
            for word, what in _LYCORIS:
                if part.startswith(word):
                    return f"unsupported:{what}"
        if parts <= _MERGED_PARTS and any(part in parts for part, _ in _KIND_OF):
            fused = _fused_rotation(kohya)
            return KOHYA if fused is None else f"{DIT_LORA}:{fused}"
        return "unsupported:an unknown kohya-style network (" + ", ".join(sorted(parts - _MERGED_PARTS))[:80] + ")"
    # (``transformer.`` prefixes a DiT's modules only: GPT-2-style ``transformer.h.0`` factors are no SD LoRA)
    prefixed = all(n.startswith(_COMPONENTS) for n in names) and (
        dit is not None or not any(n.startswith("transformer.") for n in names))
    unet_only = all(n.startswith(_UNET_WORDS) for n in names)
    if not (prefixed or unet_only):
        return None
    if any(".lokr_" in n for n in names):
        return "unsupported:LoKr (LyCORIS)"
    if any(p in n for n in names for p in _DIFFUSERS_PIECES):
        return DIFFUSERS
    return None


def _fused_rotation(names: Iterable[str]) -> str | None:
    """What a kohya-layout network is, when it holds a module this version cannot split by rows: a LyCORIS OFT /
    BOFT module (it mixes rows across the parts) or a norm module on a fused Flux / SD3 module; None otherwise."""
    kinds = dict(_KIND_OF)
    for name in names:
        flat, _, part = _KOHYA_PREFIX.sub("", name).partition(".")
        kind = kinds.get(part)
        if kind in ("oft", "norm") and splits_rows(flat):
            return (f"Flux / SD3 network (kohya-ss layout; a LyCORIS {KIND_NAMES[kind]} module on the fused "
                    f"module {flat[:80]})")
    return None


def plain_lora(m: _Module) -> bool:
    """A kohya-ss LoRA module of ``lora_down`` / ``lora_up`` (and ``alpha``) only: no LoCon kernel, no DoRA."""
    return m.kind == "lora" and set(m.parts) <= {"lora_down.weight", "lora_up.weight", "alpha"}


def dit_lora(names: Iterable[str]) -> str | None:
    """What a LoRA file of a DiT denoiser is (``"Flux LoRA (kohya-ss layout)"``, ...), from its tensor names;
    None when most of its tensors are not LoRA parts of a Flux / SD3 transformer's blocks.

    >>> dit_lora(["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
    ...           "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"])
    'Flux LoRA (kohya-ss layout)'
    >>> dit_lora(["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"])
    'Flux LoRA (diffusers / PEFT layout)'
    >>> dit_lora(["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"]) is None
    True
    """
    names = list(names)
    blocks = [m["block"] for n in names if any(p in n for p in _LORA_PARTS) and (m := _DIT_MODULE.match(n))]
    if not blocks or 2 * len(blocks) <= len(names):
        return None
    found = set(blocks)
    family = ("Flux" if found & {"double_blocks", "single_blocks", "single_transformer_blocks"}
              else "SD3" if "joint_blocks" in found else "Flux / SD3")
    layout = ("diffusers / PEFT" if found & {"transformer_blocks", "single_transformer_blocks"}
              else "kohya-ss" if any(n.startswith(("lora_unet_", "lora_transformer_")) for n in names)
              else "original single-file")
    return f"{family} LoRA ({layout} layout)"


def refusal(path: str, scheme: str) -> str:
    """The message for a file :func:`sniff` found to be an adapter family this module does not merge."""
    if scheme.startswith(DIT_LORA + ":"):
        what = scheme.removeprefix(DIT_LORA + ":")
        return (f"{path} is a {what} file: an adapter of a DiT transformer (Flux / SD3) in a layout this version "
                "does not read yet (it reads Flux / SD3 LoRAs as diffusers' save_lora_weights writes them, "
                "transformer.<module>.lora_A / lora_B, and kohya-ss / LyCORIS networks: every module type on the "
                "diffusers module names, and LoRA, LoCon, LoHa, LoKr, full-difference and IA3 modules, with DoRA per "
                "output row, on the original fused modules). Fuse it into its base with the tool that made it "
                "(diffusers: pipeline.load_lora_weights, then fuse_lora) and add the fused transformer instead.")
    what = scheme.removeprefix("unsupported:")
    return (f"{path} is a {what} Stable Diffusion network, which this version does not merge (it merges LoRA and "
            "LoCon, with Tucker kernels and DoRA, LoHa, LoKr, full-difference, norm, OFT, BOFT and IA3 modules in "
            "the kohya-ss layout, and diffusers lora_A/lora_B files). Merge it into its base model with the tool that "
            "made it (LyCORIS: its tools/merge.py) and add the merged checkpoint instead.")


def legacy_hash(path: str) -> str | None:
    """The webui's legacy model hash that kohya-ss writes as ``ss_sd_model_hash``: the first 8 hex digits
    of the SHA-256 of the 64 KiB at offset 1 MiB (sd-scripts ``train_util.model_hash``). None if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    except OSError:
        return None


@dataclass(frozen=True)
class _Module:
    """One LoRA module of the file: its raw keys, and the name it has in the file (kohya: flat)."""

    key: str  # the module's name in the file: kohya "down_blocks_0_..._to_q", diffusers "down_blocks.0....to_q"
    parts: Mapping[str, str]  # kohya part name ("lora_down.weight", "hada_w1_a", "alpha", ...) -> raw tensor key
    kind: str = "lora"  # a key of _KINDS

    @property
    def down(self) -> str:
        return self.parts["lora_down.weight"]

    @property
    def up(self) -> str:
        return self.parts["lora_up.weight"]

    @property
    def alpha(self) -> str | None:
        return self.parts.get("alpha")


def _peft_module(key: str) -> tuple[str, str] | None:
    """(module, "A" | "B") of a diffusers LoRA key, after diffusers' own renames; None for other keys."""
    for old, new in _DIFFUSERS_RENAMES:
        key = key.replace(old, new)
    m = _PEFT_KEY.match(key)
    return (m["module"], m["ab"]) if m else None


def lora_modules(path: str, layout: str, names: Sequence[str]) -> list[_Module]:
    """The UNet LoRA modules of a file (text-encoder ones left out), from its tensor names only.

    Raises
    ------
    AdapterMismatchError
        A module lacking a part its type needs (a LoRA with one factor), or holding parts of two types.
    """
    found: dict[str, dict[str, str]] = {}
    for n in names:
        if layout == KOHYA:
            prefix = next((p for p in _UNET_PREFIXES if n.startswith(p)), None)
            if prefix is None:
                continue
            flat, _, part = n[len(prefix):].partition(".")
            role = part if part in _MERGED_PARTS else None
        else:
            comp = next((c for c in _COMPONENTS if n.startswith(c)), "unet.")
            if comp not in _DENOISERS:
                continue
            # Network alphas of an old diffusers file sit beside the factors as "<module>.alpha".
            parsed = _peft_module(n[:-len(".alpha")] + ".lora.down.weight" if n.endswith(".alpha") else n)
            if parsed is None:
                continue
            flat = parsed[0].removeprefix(comp)
            role = "alpha" if n.endswith(".alpha") else "lora_down.weight" if parsed[1] == "A" else "lora_up.weight"
        if role is not None:
            found.setdefault(flat, {})[role] = n
    out = []
    for flat, keys in sorted(found.items()):
        kind = next((k for part, k in _KIND_OF if part in keys), "lora")
        missing = _missing_parts(kind, keys)
        have = ", ".join(sorted(keys))
        if missing:
            raise AdapterMismatchError(f"{path}: the {KIND_NAMES[kind]} module {flat!r} has {have} but no "
                                       f"{missing}; the file is damaged.", path)
        if not keys.keys() <= _KINDS[kind]:
            raise AdapterMismatchError(f"{path}: the module {flat!r} holds {have}, parts of several network types; "
                                       "the file is damaged.", path)
        out.append(_Module(flat, keys, kind))
    return out


def _missing_parts(kind: str, parts: Mapping[str, str]) -> str:
    """The parts a module of type ``kind`` needs and ``parts`` lacks, said in words ("" when none)."""
    needs: tuple[tuple[str, ...], ...] = {
        "lora": (("lora_down.weight",), ("lora_up.weight",)),
        "loha": (("hada_w1_a",), ("hada_w1_b",), ("hada_w2_a",), ("hada_w2_b",)),
        # a LoKr half is whole or a product of two factors
        "lokr": (("lokr_w1", "lokr_w1_a"), ("lokr_w1", "lokr_w1_b"), ("lokr_w2", "lokr_w2_a"),
                 ("lokr_w2", "lokr_w2_b")),
        "full": (("diff",),),
        "norm": (("w_norm",),),
        "oft": (("oft_blocks",),),
        "ia3": (("weight",), ("on_input",)),
    }[kind]
    lacking = [" or ".join(alts) for alts in needs if not any(a in parts for a in alts)]
    if kind == "loha" and ("hada_t1" in parts) != ("hada_t2" in parts):  # both halves Tucker, or neither
        lacking.append("hada_t2" if "hada_t1" in parts else "hada_t1")
    return ", ".join(dict.fromkeys(lacking))


def _base_modules(base_infos: Mapping[str, TensorInfo], layout: str, vectors: bool = False
                  ) -> dict[str, str | None]:
    """The LoRA module names a base's tensors answer to -> the base tensor (None when ambiguous).

    A kohya name answers for a base tensor under its diffusers name and under its LDM name (kohya-ss
    trains SDXL on the original UNet, whose modules it names ``input_blocks_4_1_...``), the LDM names
    derived from the base's own block structure (:func:`.sd_single_file.ldm_unet_names`)."""
    ldm = ldm_unet_names(base_infos) if layout == KOHYA else {}
    out: dict[str, str | None] = {}
    for name, info in base_infos.items():
        # a LyCORIS norm module updates a norm layer's weight vector: looked up among those only, so that
        # they never make a matrix's name ambiguous
        if not name.endswith(".weight") or not (len(info.shape) == 1 if vectors else len(info.shape) >= 2):
            continue
        modules = [name[:-len(".weight")]]
        if name in ldm:
            modules.append(ldm[name][:-len(".weight")])
        for module in modules:
            key = module.replace(".", "_") if layout == KOHYA else module
            out[key] = name if key not in out or out[key] == name else None
    return out


def _update_shape(down: tuple[int, ...], up: tuple[int, ...]) -> tuple[int, ...]:
    return (up[0], *down[1:])


def _fits(update: tuple[int, ...], base: tuple[int, ...]) -> bool:
    """The update's shape is the base tensor's, or the same matrix as a 1x1 convolution (kohya and peft
    give a 1x1 ``proj_in`` a linear LoRA or a conv one)."""
    if update == base:
        return True
    squeeze = tuple(d for i, d in enumerate(base) if i < 2 or d != 1)
    return squeeze == tuple(d for i, d in enumerate(update) if i < 2 or d != 1)


def _flat(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A weight's shape as a matrix, (out, in * kh * kw): how LoHa and LoKr factor a convolution."""
    return (shape[0], math.prod(shape[1:])) if shape else ()


#: At most this many BOFT butterfly stages (LyCORIS makes at most 1 + log2 of the block count; a file claiming more
#: is damaged, and 2 ** (stages - 1) must stay a small number).
MAX_BOFT_STAGES = 24


def _oft_fits(blocks: tuple[int, ...], rescale: tuple[int, ...] | None, base: tuple[int, ...]) -> bool:
    """Whether LyCORIS OFT blocks fit a base tensor's output rows: Diag-OFT (k, s, s) with k * s rows, BOFT
    (m, k, b, b) with k * b rows, b even and the rows in whole groups of 2^(m-1) * b (each stage mixes rows in
    groups of 2^i * b; ``functional/boft.py``); ``rescale`` one value per row, (out, 1, ...)."""
    if rescale is not None and (rescale[0] != base[0] or math.prod(rescale) != base[0]):
        return False
    if len(blocks) == 3:
        return blocks[1] == blocks[2] and blocks[0] * blocks[1] == base[0]
    if len(blocks) != 4 or blocks[2] != blocks[3] or blocks[2] % 2 or not 1 <= blocks[0] <= MAX_BOFT_STAGES:
        return False
    return blocks[1] * blocks[2] == base[0] and base[0] % (2 ** (blocks[0] - 1) * blocks[2]) == 0


def _shapes_fit(m: _Module, shapes: Mapping[str, tuple[int, ...]], base: tuple[int, ...]) -> bool:
    """Whether module ``m``'s factors (their shapes, from the header) multiply out to the base tensor's shape.

    The shapes each type's module gives its factors (LyCORIS ``lycoris/modules/*.py``, module docstring); a Tucker
    form rebuilds the whole kernel, the plain LoHa and LoKr forms the kernel flattened."""
    p = {part: shapes[key] for part, key in m.parts.items()}
    if m.kind == "norm":  # w_norm and b_norm: one value per channel, as the weight and bias
        return p["w_norm"] == base and p.get("b_norm", base) == base
    if m.kind == "ia3":  # (1, C, 1, ...) on a convolution, (C,) on a linear layer; C outputs or inputs (on_input)
        return len(base) >= 2 and math.prod(p["weight"]) in (base[0], base[1]) \
            and p["weight"][0] in (1, math.prod(p["weight"])) and math.prod(p["on_input"]) == 1
    if len(base) < 2 or any(len(v) < 2 for k, v in p.items() if k not in ("alpha", "diff_b")):
        return False
    dora = p.get("dora_scale")  # (out, 1, ...) on the outputs, (1, in, ...) on the inputs
    if dora is not None and not (dora[0] == base[0] and math.prod(dora) == base[0]
                                 or dora[0] == 1 and dora[1] == base[1] and math.prod(dora) == base[1]):
        return False
    if m.kind == "lora":
        down, up, mid = p["lora_down.weight"], p["lora_up.weight"], p.get("lora_mid.weight")
        if up[1] != down[0] or math.prod(up[2:]) != 1:
            return False
        if mid is None:
            return _fits(_update_shape(down, up), base)
        return mid[:2] == (down[0], down[0]) and math.prod(down[2:]) == 1 and (up[0], down[1], *mid[2:]) == base
    if m.kind == "oft":
        return _oft_fits(p["oft_blocks"], p.get("rescale"), base)
    if m.kind == "full":
        bias = p.get("diff_b")
        return _fits(p["diff"], base) and (bias is None or bias == (base[0],))
    if m.kind == "loha":
        w1a, w1b, w2a, w2b = p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"]
        if (w1a, w1b) != (w2a, w2b) or w1b[0] != (w1a[0] if "hada_t1" in p else w1a[1]):
            return False
        if "hada_t1" in p:  # factors (r, out) and (r, in), kernels (r, r, kh, kw)
            r = w1a[0]
            return p["hada_t1"] == p["hada_t2"] and p["hada_t1"][:2] == (r, r) \
                and (w1a[1], w1b[1], *p["hada_t1"][2:]) == base
        return (w1a[0], math.prod(w1b[1:])) == _flat(base)
    # LoKr: w1 (a, c), w2 (b, d * kh * kw); the product is (a * b, c * d * kh * kw)
    if "lokr_w1" in p:
        w1 = p["lokr_w1"]
    elif p["lokr_w1_a"][1] == p["lokr_w1_b"][0]:
        w1 = (p["lokr_w1_a"][0], p["lokr_w1_b"][1])
    else:
        return False
    if "lokr_w2" in p:
        w2 = _flat(p["lokr_w2"])
    elif "lokr_t2" in p:  # w2a (r, b), w2b (r, d), t2 (r, r, kh, kw)
        w2a, w2b, t2 = p["lokr_w2_a"], p["lokr_w2_b"], p["lokr_t2"]
        if t2[:2] != (w2a[0], w2b[0]):
            return False
        w2 = (w2a[1], w2b[1] * math.prod(t2[2:]))
    elif p["lokr_w2_a"][1] == p["lokr_w2_b"][0]:
        w2 = (p["lokr_w2_a"][0], math.prod(p["lokr_w2_b"][1:]))
    else:
        return False
    return (w1[0] * w2[0], w1[1] * w2[1]) == _flat(base)


def resolve(path: str, layout: str, modules: Sequence[_Module], shapes: Mapping[str, tuple[int, ...]],
            base_infos: Mapping[str, TensorInfo], base_id: str) -> dict[str, str]:
    """LoRA module key -> base tensor name, every module's shape checked against the base.

    Parameters
    ----------
    shapes : Mapping
        Raw tensor key -> shape (from the file's header).

    Raises
    ------
    AdapterMismatchError
        A module the base lacks, one whose kohya name matches several of its modules, or a wrong shape.
    """
    tables = {False: _base_modules(base_infos, layout), True: _base_modules(base_infos, layout, vectors=True)}
    out: dict[str, str] = {}
    for m in modules:
        table = tables[m.kind == "norm"]
        if m.key not in table and layout == KOHYA and m.key.startswith(_LDM_WORDS):
            raise AdapterMismatchError(
                f"The Stable Diffusion LoRA {path} names its modules in the original (LDM) UNet layout "
                f"({m.key!r}), as kohya-ss SDXL files do, but the base model {base_id!r} has no such module in "
                "that layout (its UNet's blocks, read from its tensor names, differ): is that the right base "
                "model?", path)
        if m.key not in table:
            raise AdapterMismatchError(
                f"The Stable Diffusion LoRA {path} updates {m.key!r}, which the base model {base_id!r} does not "
                "have: is that the right base model?", path)
        name = table[m.key]
        if name is None:
            raise AdapterMismatchError(
                f"The Stable Diffusion LoRA {path} updates {m.key!r}, which names several modules of the base "
                f"model {base_id!r} (its underscores could stand for several paths); it cannot be merged.", path)
        if not _shapes_fit(m, shapes, base_infos[name].shape):
            held = ", ".join(f"{part} {shapes[key]}" for part, key in sorted(m.parts.items()) if part != "alpha")
            raise AdapterMismatchError(
                f"The Stable Diffusion LoRA {path} updates {name} with {held}, but the base "
                f"model {base_id!r} has {base_infos[name].shape}: is that the right base model?", path)
        out[m.key] = name
    return out


#: A module's targets in the base: (base tensor, the rows of the module's update it takes), in order.
DitTargets = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]


def dit_resolve(path: str, layout: str, modules: Sequence[_Module], shapes: Mapping[str, tuple[int, ...]],
                base_infos: Mapping[str, TensorInfo], base_id: str) -> dict[str, DitTargets] | None:
    """For a kohya-ss Flux / SD3 LoRA or LyCORIS network on the original modules: module key -> the base tensors it
    updates, with their rows of its update (:func:`.dit_single_file.kohya_targets`), every shape checked against the
    base (a LyCORIS module against the fused module rebuilt from the base's parts, :func:`_dit_module_targets`);
    None for other files (an SD UNet's, or a network on the diffusers module names).

    Raises
    ------
    AdapterMismatchError
        A module the base lacks, or whose update does not fit the base tensors it splits onto.
    """
    if layout != KOHYA or not modules:
        return None
    out: dict[str, DitTargets] = {}
    for m in modules:
        if not plain_lora(m):  # a LyCORIS module (LoHa, LoKr, full, IA3, DoRA, ...): made on the original module
            hit = kohya_rule(m.key)
            if hit is None:
                return None
            out[m.key] = _dit_module_targets(path, m, shapes, base_infos, base_id, hit[0], hit[2])
            continue
        down, up = shapes[m.down], shapes[m.up]
        if len(down) != 2 or len(up) != 2:
            return None
        targets = kohya_targets(m.key, up[0], down[1], base_infos)
        if targets is None and kohya_rule(m.key) is not None:
            # a DiT module whose update does not split as its fused module does: read on as a Stable Diffusion
            # LoRA, the file would be refused for another module, with a wrong reason
            raise AdapterMismatchError(
                f"The Flux / SD3 LoRA {path} updates {m.key!r} with {up[0]} rows, which do not split into the parts "
                "of that module of the transformer (a fused qkv is three equal parts): the file is damaged. "
                "Re-download it, or remove it from the set.", path)
        if targets is None:
            return None
        found = []
        for module, ranges in targets:
            name = module + ".weight"
            info = base_infos.get(name)
            rows = sum(b - a for a, b in ranges)
            if info is None or tuple(info.shape) != (rows, down[1]):
                have = "has no such tensor" if info is None else f"has it as {tuple(info.shape)}"
                raise AdapterMismatchError(
                    f"The Flux / SD3 LoRA {path} updates {m.key!r}, whose rows {ranges} are {name!r} of the "
                    f"diffusers transformer, {(rows, down[1])}; the base model {base_id!r} {have}: is that the right "
                    "base model?", path)
            found.append((name, ranges))
        out[m.key] = tuple(found)
    return out


def _dit_module_targets(path: str, m: _Module, shapes: Mapping[str, tuple[int, ...]],
                        base_infos: Mapping[str, TensorInfo], base_id: str, match: re.Match[str],
                        parts: tuple[str, ...]) -> DitTargets:
    """The base tensors a LyCORIS module on an original Flux / SD3 module updates, with their rows of its update.

    The module was made on the original module (a fused qkv: the diffusers parts' rows stacked, in order), so its
    factors are checked against that shape, rebuilt from the base's parts (:func:`_shapes_fit`); a module that maps
    to one diffusers module whole is checked against that tensor as it is (a convolution, a norm vector)."""
    wanted = [t.format(*match.groups()) + ".weight" for t in parts]
    infos = [base_infos.get(w) for w in wanted]
    found = [i for i in infos if i is not None]
    if len(found) < len(wanted) or (len(found) > 1 and any(len(i.shape) != 2 or i.shape[1] != found[0].shape[1]
                                                           for i in found)):
        raise AdapterMismatchError(
            f"The Flux / SD3 network {path} updates {m.key!r}, whose parts are {', '.join(wanted)} of the diffusers "
            f"transformer; the base model {base_id!r} lacks them or holds them in other shapes: is that the right "
            "base model?", path)
    rows, inner = sum(i.shape[0] for i in found), found[0].shape[1] if len(found[0].shape) > 1 else 0
    targets = kohya_targets(m.key, rows, inner, base_infos)
    fused = tuple(found[0].shape) if len(found) == 1 else (rows, inner)
    if targets is None or not _shapes_fit(m, shapes, fused):
        held = ", ".join(f"{part} {shapes[key]}" for part, key in sorted(m.parts.items()) if part != "alpha")
        raise AdapterMismatchError(
            f"The Flux / SD3 network {path} updates {m.key!r} with {held}, but that module of the base model "
            f"{base_id!r} is {fused} (its diffusers parts {', '.join(wanted)} stacked): is that the right base "
            "model?", path)
    return tuple((module + ".weight", ranges) for module, ranges in targets)


def fits(path: str, layout: str, base: ModelReader) -> str | None:
    """None when the LoRA file fits ``base`` (every module found, every shape right), else why not.

    Reads the LoRA's header and the base's tensor list only."""
    from mother_core.io.safetensors_header import read_header

    try:
        header = read_header(path)
        shapes = {t.name: t.shape for t in (*header.tensors, *header.unsupported)}
        modules = lora_modules(path, layout, list(shapes))
        if not modules:
            return f"{path} holds text-encoder LoRA layers only"
        if dit_resolve(path, layout, modules, shapes, base.tensor_infos(), base.ref.id) is None:
            resolve(path, layout, modules, shapes, base.tensor_infos(), base.ref.id)
    except (AdapterMismatchError, UnreadableCheckpointError) as e:
        return e.message
    return None


#: At most this many models of the set are checked for fitting shapes when a LoRA's base is missing.
MAX_FIT_CHECKS = 64


def missing_base_message(ref: ModelRef, candidates: Sequence[ModelRef]) -> str:
    """The problem of a Stable Diffusion LoRA whose metadata names no model of the set.

    Says what the metadata named, and which models of the set the file would fit (checked from headers
    only, safetensors models): the weights fit every model of the same shapes alike, so only metadata
    could tell which one it was trained on (docs/RELATIONS.md, "An adapter's base comes from metadata")."""
    from mother_core.io.readers import open_model

    layout = LAYOUT_NAMES.get(ref.scheme or "", ref.scheme or "?")
    if ref.base_id:
        where = "its header metadata (ss_sd_model_name)" if ref.base_source else "its model card"
        head = f"names its base {ref.base_id!r} in {where}, which is not in the set"
    else:
        head = "names no base model (no ss_sd_model_name or matching ss_sd_model_hash, no model card base_model)"
    fitting: list[str] = []
    checked = 0
    for cand in candidates:
        if checked >= MAX_FIT_CHECKS or not cand.container.startswith("safetensors"):
            continue
        checked += 1
        try:
            with open_model(cand) as reader:
                if fits(ref.files[0], ref.scheme or "", reader) is None:
                    fitting.append(cand.id)
        except (MotherError, OSError):  # a candidate that cannot be opened is reported where it is read
            continue
    if fitting:
        shown = ", ".join(repr(i) for i in fitting[:5]) + (f" and {len(fitting) - 5} more" if len(fitting) > 5 else "")
        tail = (f"; it fits {shown} (the weights fit every model of the same shapes alike: only metadata could "
                "tell which one it was trained on)")
    elif checked:
        tail = "; no model in the set has the shapes it updates (a LoRA made for another architecture?)"
    else:
        tail = ""
    return (f"The Stable Diffusion LoRA {ref.path} ({layout} layout) {head}{tail}. It is left out of this run: add "
            "its base model to the paths you give.")


def adapter_metadata(metadata: Mapping[str, str]) -> dict[str, object]:
    """diffusers' ``lora_adapter_metadata`` header entry for the denoiser (its ``unet.`` or ``transformer.`` keys,
    prefix removed)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw[:1_000_000])
    except (ValueError, RecursionError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {k.split(".", 1)[1]: v for k, v in parsed.items() if isinstance(k, str) and k.startswith(_DENOISERS)}


__all__ = ["DIFFUSERS", "KOHYA", "LAYOUT_NAMES", "adapter_metadata", "fits", "legacy_hash", "lora_modules",
           "missing_base_message", "refusal", "resolve", "sniff"]
