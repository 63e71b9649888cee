"""Checkpoint formats -> readers: the one table :func:`~mother_core.io.readers.open_model` consults.

A model's :attr:`~mother_core.io.base.ModelRef.format` is ``container[:scheme]`` (``"gguf:Q4_K_M"``,
``"safetensors:gptq-int4"``). The *container* picks the reader here; the *scheme* is information for
people and for the relation detectors (a quantized copy), and the reader finds it again from the file
itself, so a ref made by hand with a bare container reads the same.

Each reader lives in its own module and is imported only when a model of its format is opened (the
``gguf`` package, for one, is not loaded by a run without GGUF files). A reader implements
:class:`~mother_core.io.base.ModelReader`: ``tensor_infos()`` (names already in the transformers /
diffusers naming, float tensors as the executor should see them: dequantized weights are ``float32``)
and ``read(name, rows)``; ``read_into`` and ``prefetch`` are optional speed-ups the executor uses when
present. See docs/ARCHITECTURE.md, "How to add a checkpoint format".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef

#: ``opener(ref, base)`` -> reader; ``base`` is the base model's reader for adapters, else None.
Opener = Callable[[ModelRef, "ModelReader | None"], ModelReader]


@dataclass(frozen=True)
class ReaderEntry:
    """One container format.

    Attributes
    ----------
    container : str
        The ``format`` prefix this entry reads.
    target : str
        ``"module:function"`` of the opener, imported on first use.
    needs_base : bool
        Whether the model is read on top of another model's reader (PEFT adapters).
    revision : int
        Bumped whenever the reader starts yielding different values for the same file (a fixed name
        map, a dequantization or merge corrected): it is part of the statistics cache's model key,
        so results cached by an older reader are read again instead of silently reused.
    """

    container: str
    target: str
    needs_base: bool = False
    revision: int = 1

    def opener(self) -> Opener:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, ReaderEntry] = {}


def register(container: str, target: str, needs_base: bool = False, revision: int = 1) -> None:
    """Add (or replace) the reader of a container format.

    Parameters
    ----------
    container : str
        The ``ModelRef.format`` prefix, e.g. ``"gguf"``.
    target : str
        ``"package.module:opener"``; the opener takes ``(ref, base)`` and returns a ``ModelReader``.
    needs_base : bool
        True when the model must be merged into a base model's reader.
    revision : int
        The reader's output revision (see :class:`ReaderEntry`).
    """
    _REGISTRY[container] = ReaderEntry(container, target, needs_base, revision)


def entry_for(ref: ModelRef) -> ReaderEntry:
    """The registry entry that reads ``ref``.

    Raises
    ------
    UnreadableCheckpointError
        No reader for the container.
    """
    entry = _REGISTRY.get(ref.container)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UnreadableCheckpointError(
            f"{ref.path}: unknown checkpoint format {ref.format!r} (readable: {known}).", ref.path)
    return entry


def reader_revision(ref: ModelRef) -> int:
    """The output revision of the reader of ``ref`` (0 for a container no reader is registered for)."""
    entry = _REGISTRY.get(ref.container)
    return 0 if entry is None else entry.revision


def needs_base(ref: ModelRef) -> bool:
    """Whether ``ref`` is an adapter, read merged into another model of the set (its base)."""
    entry = _REGISTRY.get(ref.container)
    return entry is not None and entry.needs_base


def containers() -> tuple[str, ...]:
    """Every container format a reader is registered for."""
    return tuple(sorted(_REGISTRY))


# safetensors 2: compressed-tensors and MLX weights decoded (were left out, MLX biases compared as weights),
# fp8 group / block scales, GPTQ format v2 zeros (2026-12-03). safetensors 3, torch 2: SD single-file UNets
# renamed by the block structure read from the file (SDXL's were renamed by SD 1.x's table; 2026-12-03).
# safetensors 4: torchao checkpoints decoded (int8 / intx codes were left out, float8 codes compared unscaled
# under their ``_weight_qdata`` names and their scales as weights; 2026-12-03). safetensors 5: HQQ weights
# decoded (were left out as an unknown packing; 2026-12-03).
# safetensors 6, torch 3: Flux and SD3 single files under the diffusers transformer's names, fused qkv / linear1
# split (were read under their original names; 2026-12-03).
# safetensors 7, torch 4, gguf 3: mixture-of-experts blocks listed one tensor per projection, experts stacked
# (experts, out, in), Mixtral's block_sparse_moe / w1-w3 under transformers 5's names (were per expert, or fused
# and GGUF-stacked under three other names; 2026-12-03).
# safetensors 8, torch 5: a tied weight's second names (an encoder-decoder's encoder / decoder embed_tokens beside
# shared, lm_head under tie_word_embeddings) left out, as save_pretrained leaves them out (were read as more
# tensors; 2026-12-05). safetensors 9: torchao weights whose description transformers 5 wrote under the module's
# name in memory (Swin's ``q_proj`` for the saved ``self.query``) decoded by the one description left over that fits
# them (were left out; 2026-12-05).
register("safetensors", "mother_core.io.readers:open_safetensors", revision=9)
register("safetensors-sharded", "mother_core.io.readers:open_safetensors", revision=9)
register("torch", "mother_core.io.readers:open_torch", revision=5)
register("torch-sharded", "mother_core.io.readers:open_torch", revision=5)
# peft-lora 2: DoRA adapters merged as PEFT does; gguf 2: Gemma's 1 + w norms and GPT-NeoX/BLOOM's
# regrouped query_key_value rows undone (2026-12-02); peft-lora 3: updates added in place by addmm_,
# whose float32 rounding differs from a product then a sum in the last bit (2026-12-03); peft-lora 4: PEFT
# LoHa, LoKr and IA3 adapters merged (were refused at discovery; 2026-12-03); peft-lora 5: an adapter on an
# embedding (PEFT saves its ``base_layer.weight`` beside it) merged into that copy (the copy was returned
# unmerged), and OFT, BOFT, VeRA, LN-tuning and HRA adapters merged (were refused at discovery; 2026-12-03).
# peft-lora 6: LoRAs on single experts' modules (transformers 4's Mixtral w1 / w2 / w3) merged into the base's
# stacked experts (were refused as a base mismatch; 2026-12-03).
# peft-lora 7: every other PEFT type (LoHa, LoKr, IA3, OFT, BOFT, VeRA, HRA) on single experts' modules merged into
# the base's stacked experts likewise (were refused as a base mismatch; 2026-12-04).
# peft-lora 8: AdaLoRA adapters merged (were refused at discovery; 2026-12-05).
register("peft-lora", "mother_core.io.lora:open_lora", needs_base=True, revision=8)
#: The PEFT ``peft_type`` values the ``peft-lora`` reader merges (:mod:`.lora`); discovery refuses the
#: others (FourierFT, prompt tuning, ...) with :func:`peft_refusal`. Here, not in :mod:`.lora`,
#: because discovery imports no torch.
PEFT_TYPES = ("LORA", "ADALORA", "LOHA", "LOKR", "IA3", "OFT", "BOFT", "VERA", "LN_TUNING", "HRA")


#: PEFT's prompt-learning types (``peft.utils.peft_types.PeftType``: ``PeftConfig.is_prompt_learning`` and
#: LLaMA-Adapter's adaption prompt): they train virtual-token embeddings (or a prefix, or gated prompts) fed to
#: a frozen base and change none of its weights, so no merge exists and the weights have nothing to compare.
PROMPT_LEARNING = ("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "ADAPTION_PROMPT", "CPT")


def peft_refusal(path: str, peft_type: str, base: object = None) -> str:
    """The message refusing a PEFT adapter of a type not in :data:`PEFT_TYPES`; ``base``: the config's
    ``base_model_name_or_path``, named for prompt-learning adapters (the only lineage they carry)."""
    if peft_type in PROMPT_LEARNING:
        named = (f"its adapter_config.json names {str(base)[:300]!r} as its base (declared, not checked)"
                 if isinstance(base, str) and base else "its adapter_config.json names no base")
        return (f"{path} is a PEFT {peft_type} adapter: prompt learning trains virtual-token inputs for a frozen "
                "base and changes none of its weights, so it has no weights to compare and cannot be merged into "
                f"its base; {named}. It is left out of the tree.")
    return (f"{path} is a PEFT {peft_type} adapter; this version merges PEFT LoRA (and DoRA), AdaLoRA, LoHa, LoKr, "
            "IA3, OFT, BOFT, VeRA, LN-tuning and HRA adapters only. Merge it with PEFT (merge_and_unload) and add the "
            "merged model instead.")


# sd-lora 2: kohya-ss SDXL files (LDM module names) merged (were refused), SDXL single-file bases renamed by
# their own block structure (2026-12-03).
# sd-lora 3: LyCORIS LoHa, LoKr, full-difference, Tucker LoCon and DoRA modules merged (were refused at
# discovery; 2026-12-03).
# sd-lora 4: Flux / SD3 LoRAs as diffusers saves them (transformer.<module>.lora_A/B; were read as models of their
# factors) and kohya-ss Flux LoRAs (were refused or mismatched) merged into their base transformer (2026-12-03).
# sd-lora 5: kohya-ss SD3 LoRAs of plain LoRA modules merged into their base transformer (were refused;
# 2026-12-03).
# sd-lora 6: LyCORIS networks on Flux / SD3 merged, on the original fused modules (split by rows) and on the
# diffusers module names (were refused at discovery; 2026-12-04).
register("sd-lora", "mother_core.io.sd_lora_reader:open_sd_lora", needs_base=True, revision=6)
# gguf 4: Qwen3-Next / Qwen3-VL / Qwen3.5 and Gemma 3n / 4 files name their q / k norms as transformers does
# (``self_attn.q_norm``; were ``q_layernorm``, so they compared with no safetensors source) (2026-12-03).
# gguf 5: Falcon's fused query_key_value rows regrouped per kv group as its converter wrote them (were read in
# the GGUF's all-q, all-k, all-v order; 2026-12-04).
# gguf 6: Arcee, SmolLM3, Llama-embed and MiniCPM files' q / k rows un-permuted as for Llama (their converters
# permute them as ``LlamaModel`` does; were read permuted, so no GGUF of them found its source; 2026-12-05).
# gguf 7: 4- to 6-bit codes (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) read as their values rounded to bfloat16,
# so that the pass may read them at half width (were float32; 2026-12-05).
# gguf 8: q/k tensors whose head counts do not split their rows left out with a note (were read in another
# order, past their end, or divided by zero; 2026-12-05).
# gguf 9: Nemotron files' norm weights read as w, not 1 + w (its converter adds one, as Gemma's does; were read
# one off, so a Nemotron GGUF was explained as a merge of the set's other GGUFs; 2026-12-05).
# gguf 10: q/k tensors of a file with no head count, whose llama.cpp order cannot be undone, left out with a
# note (were read in that order; 2026-12-05).
# gguf 11: big-endian files' (s390x; gguf_convert_endian.py) tensor data swapped to little-endian for F32, F16, BF16,
# Q4_0, Q8_0, Q4_K, Q6_K and MXFP4, other types refused (were decoded as little-endian: wrong values, whose cached
# statistics revision 10 would keep serving; little-endian files read as before; 2026-12-05).
register("gguf", "mother_core.io.gguf_reader:open_gguf", revision=11)
register("tesseract", "mother_core.io.tesseract_reader:open_tesseract")
