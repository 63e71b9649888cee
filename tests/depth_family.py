"""A family of depth-pruned students made as people make them (branch ``prune``, issue 11 items 1 and 2).

Really trained tiny Llamas of four layers (AdamW steps, :func:`checkpoint_factory.adam_steps`): a root
``m-root``, its fine-tunes ``m-a`` and ``m-b``, ``m-a-a`` a fine-tune of ``m-a``, ``m-a-q4`` a GGUF Q4_0
of ``m-a`` (the ``gguf`` package, as llama.cpp writes it) and ``m-b-bf16`` a bfloat16 cast of ``m-b``.
Each student is a Llama built with fewer ``num_hidden_layers``, loaded (``load_state_dict(strict=True)``)
with a subset of its parent's layers renumbered in order, then trained a few AdamW steps on a task of its
own:

- ``s-mid``: ``m-a``'s layers 0, 2, 3 (layer 1 dropped, as typed profile S seeds 400 and 402);
- ``s-first``: ``m-b``'s layers 1, 2, 3 (the first dropped);
- ``s-two``: ``m-root``'s layers 0, 3 (two middle ones dropped);
- ``s-last``: ``m-a-a``'s layers 0, 1, 2 (the last dropped: names still line up);
- ``s-wide``: ``m-b``'s layers 0, 1, 3 and each MLP narrowed to its largest neurons (depth and width);
- ``s-long``: ``m-a-a``'s layers 1, 3, trained ten times longer (its layers drift);
- ``s-q``: the dequantized GGUF ``m-a-q4``'s layers 0, 1, 3 (a student of a quantized parent);
- ``s-cast``: ``m-b-bf16``'s layers 0, 2, 3, trained two steps (a student of a cast parent, trained little
  enough for the bf16 rounding to tell it from ``m-b``);
- ``s-mid-sib``: ``m-a``'s layers 0, 2, 3 as ``s-mid``'s, trained on another task (students pruned alike);
- ``s-mid-ft``: a fine-tune of ``s-mid`` (same layout: the student's own child).

Distractors: ``m-x3`` (three layers, its own initialisation) with a fine-tune ``m-x3-ft``, and ``m-x5``
(five layers, its own initialisation), both of the family's architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from checkpoint_factory import adam_steps

HIDDEN, INTER, LAYERS = 64, 128, 4

#: child -> (parent, layers kept, training steps); parents are trained before their students.
STUDENTS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "s-mid": ("m-a", (0, 2, 3), 8), "s-first": ("m-b", (1, 2, 3), 8), "s-two": ("m-root", (0, 3), 8),
    "s-last": ("m-a-a", (0, 1, 2), 8), "s-wide": ("m-b", (0, 1, 3), 8), "s-long": ("m-a-a", (1, 3), 80),
    "s-q": ("m-a-q4", (0, 1, 3), 3), "s-cast": ("m-b-bf16", (0, 2, 3), 2), "s-mid-sib": ("m-a", (0, 2, 3), 8),
}
#: Every true edge: child -> (parent, relation).
TRUTH: dict[str, tuple[str, str]] = {
    "m-a": ("m-root", "finetune"), "m-b": ("m-root", "finetune"), "m-a-a": ("m-a", "finetune"),
    "m-a-q4": ("m-a", "quantized"), "m-b-bf16": ("m-b", "convert"), "s-mid-ft": ("s-mid", "finetune"),
    "m-x3-ft": ("m-x3", "finetune"),
    **{s: (p, "distill") for s, (p, _, _) in STUDENTS.items()},
}


def tiny_llama(seed: int, layers: int = LAYERS, intermediate: int = INTER) -> Any:
    """A freshly initialised Llama of ``layers`` layers (grouped-query attention, vocabulary 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=intermediate,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=32))


def _state(folder: Path) -> dict[str, torch.Tensor]:
    """A saved model's weights as float32 tensors under ``LlamaForCausalLM``'s names (a GGUF file dequantized
    by the engine's reader, as ``transformers``' ``gguf_file=`` loading does; the reader drops the ``model.``
    prefix of the backbone's names)."""
    from mother_core import discover
    from mother_core.io.readers import open_model

    (ref,) = discover([folder]).models
    with open_model(ref) as reader:
        return {(i.name if i.name.startswith("lm_head") else f"model.{i.name}"): reader.read(i.name).float().clone()
                for i in reader.tensor_infos().values() if i.is_float}


def student(parent: dict[str, torch.Tensor], keep: tuple[int, ...], seed: int,
            intermediate: int = INTER) -> Any:
    """A Llama of ``len(keep)`` layers holding ``parent``'s layers ``keep`` renumbered in order (and, where
    ``intermediate`` is narrower than the parent's MLP, each MLP's neurons of largest weight norm)."""
    model = tiny_llama(seed, len(keep), intermediate)
    state = {}
    for k, v in parent.items():
        if not k.startswith("model.layers."):
            state[k] = v
            continue
        i, rest = k[len("model.layers."):].split(".", 1)
        if int(i) in keep:
            state[f"model.layers.{keep.index(int(i))}.{rest}"] = v
    for i in range(len(keep)):
        p = f"model.layers.{i}.mlp."
        if state[p + "up_proj.weight"].shape[0] == intermediate:
            continue
        score = sum(state[p + n + ".weight"].norm(dim=1) for n in ("gate_proj", "up_proj"))
        idx = torch.sort(torch.topk(score + state[p + "down_proj.weight"].norm(dim=0), intermediate).indices).values
        for n in ("gate_proj", "up_proj"):
            state[p + n + ".weight"] = state[p + n + ".weight"][idx].contiguous()
        state[p + "down_proj.weight"] = state[p + "down_proj.weight"][:, idx].contiguous()
    model.load_state_dict(state, strict=True)
    return model


def _gguf(src: Path, out: Path) -> None:
    from mother_zoo.typed.quant import write_gguf

    out.mkdir(parents=True)
    write_gguf("llama", src, out / "model.gguf", "Q4_0", out.name, [])


def build(d: Path) -> None:
    """Write the family (module docstring) into ``d``, every model in float32."""
    from transformers import LlamaForCausalLM

    def load(name: str) -> Any:
        return LlamaForCausalLM.from_pretrained(d / name, dtype=torch.float32)

    adam_steps(tiny_llama(0), 0, 40, 3e-3).save_pretrained(d / "m-root")
    adam_steps(load("m-root"), 1, 8, 1e-3).save_pretrained(d / "m-a")
    adam_steps(load("m-root"), 2, 8, 1e-3).save_pretrained(d / "m-b")
    adam_steps(load("m-a"), 3, 8, 1e-3).save_pretrained(d / "m-a-a")
    _gguf(d / "m-a", d / "m-a-q4")
    load("m-b").to(torch.bfloat16).save_pretrained(d / "m-b-bf16")
    for seed, (name, (parent, keep, steps)) in enumerate(STUDENTS.items(), start=10):
        inter = 96 if name == "s-wide" else INTER
        adam_steps(student(_state(d / parent), keep, seed, inter), seed, steps, 1e-3).save_pretrained(d / name)
    adam_steps(load("s-mid"), 30, 8, 1e-3).save_pretrained(d / "s-mid-ft")
    adam_steps(tiny_llama(31, 3), 31, 40, 3e-3).save_pretrained(d / "m-x3")
    adam_steps(LlamaForCausalLM.from_pretrained(d / "m-x3", dtype=torch.float32), 32, 8, 1e-3).save_pretrained(
        d / "m-x3-ft")
    adam_steps(tiny_llama(33, 5), 33, 40, 3e-3).save_pretrained(d / "m-x5")


def build_gpt2(d: Path) -> None:
    """A GPT-2 family (``transformer.h.N``, Conv1D layers): ``g-root``, its fine-tunes ``g-a`` and ``g-b``,
    the students ``g-s1`` (``g-a``'s layers 0, 2, 3) and ``g-s2`` (``g-b``'s layers 1, 3), each built with
    fewer ``n_layer`` and trained, and an unrelated three-layer ``g-x3``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def gpt2(seed: int, layers: int) -> Any:
        torch.manual_seed(seed)
        return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=HIDDEN, n_layer=layers, n_head=4, n_positions=32))

    adam_steps(gpt2(0, LAYERS), 0, 40, 3e-3).save_pretrained(d / "g-root")
    for name, seed in (("g-a", 1), ("g-b", 2)):
        adam_steps(GPT2LMHeadModel.from_pretrained(d / "g-root"), seed, 8, 1e-3).save_pretrained(d / name)
    for seed, (name, parent, keep) in enumerate((("g-s1", "g-a", (0, 2, 3)), ("g-s2", "g-b", (1, 3))), start=5):
        state = {}
        for k, v in GPT2LMHeadModel.from_pretrained(d / parent).state_dict().items():
            parts = k.split(".")
            if parts[:2] == ["transformer", "h"]:
                if int(parts[2]) not in keep:
                    continue
                parts[2] = str(keep.index(int(parts[2])))
            state[".".join(parts)] = v
        model = gpt2(seed, len(keep))
        model.load_state_dict(state, strict=True)
        adam_steps(model, seed, 8, 1e-3).save_pretrained(d / name)
    adam_steps(gpt2(7, 3), 7, 40, 3e-3).save_pretrained(d / "g-x3")
