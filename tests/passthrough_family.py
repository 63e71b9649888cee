"""A small family with layer-stacking merges made by mergekit's ``passthrough`` method (branch ``passthrough``).

Really trained tiny Llama models (AdamW steps, :func:`checkpoint_factory.adam_steps`) of ``layers`` layers:
a root, two fine-tunes ``m-a`` and ``m-b``, and

- ``m-stack``: ``m-a``'s layers ``[0, 3)`` then ``m-b``'s ``[1, 4)`` (a two-parent frankenmerge);
- ``m-upscale``: ``m-a``'s layers ``[0, 3)`` then its ``[1, 4)`` again (SOLAR-style depth up-scaling);
- ``m-stack-ft``: ``m-stack`` fine-tuned a few AdamW steps;
- ``m-stack-ft-bf16``: a bfloat16 copy of ``m-stack-ft``;
- ``m-a-3``: ``m-a`` with its layer 2 dropped (the later ones renumbered) and trained a few steps (a
  depth-pruned student, shallower than its teacher: the teacher is no stack of it);
- ``m-stranger``: an unrelated model of the parents' architecture, ``m-deep-stranger`` one as deep as the
  stacks (deeper than the parents, its layers its own), and ``m-deep-stranger-4`` its depth-pruned student
  (layers 2 and 3 dropped, 4 left: the stacks' layout without their last layers).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from checkpoint_factory import adam_steps

HIDDEN = 48
LAYERS = 4


def tiny_llama4(seed: int, layers: int = LAYERS):
    """A freshly initialised Llama of ``layers`` layers (grouped-query attention, vocabulary 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=32))


def run_mergekit(merge: dict, out: Path) -> None:
    """Run mergekit on ``merge`` (a configuration dict) into ``out``, CPU, no remote code, seed 0."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(merge), str(out),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))


def passthrough(slices: list[tuple[Path, int, int]], out: Path) -> None:
    """A mergekit ``passthrough`` merge stacking each ``(model, start, end)`` layer range in order."""
    run_mergekit({"merge_method": "passthrough", "dtype": "float32",
                  "slices": [{"sources": [{"model": str(m), "layer_range": [a, b]}]} for m, a, b in slices]}, out)


def build(d: Path, root_steps: int = 30, ft_steps: int = 8, lr: float = 2e-3, extra: bool = True
          ) -> dict[str, list[str]]:
    """Write the family into ``d``; returns the truth (child -> parents). ``extra``: also the fine-tune of
    the stack, its bf16 copy and the stranger."""
    from transformers import LlamaForCausalLM

    adam_steps(tiny_llama4(0), 0, root_steps, 3e-3).save_pretrained(d / "m-root")
    for name, seed in (("m-a", 1), ("m-b", 2)):
        model = LlamaForCausalLM.from_pretrained(d / "m-root", dtype=torch.float32)
        adam_steps(model, seed, ft_steps, lr).save_pretrained(d / name)
    passthrough([(d / "m-a", 0, 3), (d / "m-b", 1, 4)], d / "m-stack")
    passthrough([(d / "m-a", 0, 3), (d / "m-a", 1, 4)], d / "m-upscale")
    truth = {"m-a": ["m-root"], "m-b": ["m-root"], "m-stack": ["m-a", "m-b"], "m-upscale": ["m-a"]}
    if extra:
        model = LlamaForCausalLM.from_pretrained(d / "m-stack", dtype=torch.float32)
        adam_steps(model, 3, ft_steps, lr).save_pretrained(d / "m-stack-ft")
        model = LlamaForCausalLM.from_pretrained(d / "m-stack-ft", dtype=torch.float32)
        model.to(torch.bfloat16).save_pretrained(d / "m-stack-ft-bf16")
        student = tiny_llama4(9, layers=LAYERS - 1)
        student.load_state_dict(dropped_layer(LlamaForCausalLM.from_pretrained(d / "m-a").state_dict(), 2))
        adam_steps(student, 4, ft_steps, lr).save_pretrained(d / "m-a-3")
        adam_steps(tiny_llama4(7), 7, ft_steps, 3e-3).save_pretrained(d / "m-stranger")
        adam_steps(tiny_llama4(8, layers=6), 8, ft_steps, 3e-3).save_pretrained(d / "m-deep-stranger")
        student = tiny_llama4(10)
        teacher = LlamaForCausalLM.from_pretrained(d / "m-deep-stranger").state_dict()
        student.load_state_dict(dropped_layer(dropped_layer(teacher, 2), 2))
        adam_steps(student, 5, ft_steps, lr).save_pretrained(d / "m-deep-stranger-4")
        truth |= {"m-stack-ft": ["m-stack"], "m-stack-ft-bf16": ["m-stack-ft"], "m-a-3": ["m-a"],
                  "m-deep-stranger-4": ["m-deep-stranger"]}
    return truth


def dropped_layer(state: dict[str, torch.Tensor], drop: int) -> dict[str, torch.Tensor]:
    """``state`` without layer ``drop``, the later layers renumbered (``layers.k`` -> ``layers.k-1``)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if len(parts) > 2 and parts[1] == "layers":
            i = int(parts[2])
            if i == drop:
                continue
            parts[2] = str(i - (i > drop))
        out[".".join(parts)] = v.clone()
    return out


def truth_json(truth: dict[str, list[str]]) -> str:
    """``truth`` as a typed truth file (docs/RELATIONS.md, "Truth files")."""
    rel = {"m-a": "finetune", "m-b": "finetune", "m-stack": "merge", "m-upscale": "merge",
           "m-stack-ft": "finetune", "m-stack-ft-bf16": "convert", "m-a-3": "distill", "m-deep-stranger-4": "distill"}
    return json.dumps({"edges": [{"parent": p, "child": c, "relation": rel[c]} for c, ps in truth.items() for p in ps]})
