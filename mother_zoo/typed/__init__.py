"""Typed model sets: lineage with relations (fine-tune, adapter, LoRA, merge, quantization, conversion,
pruning, distillation), made with the real tools (transformers, peft, mergekit, gguf, optimum-quanto,
bitsandbytes), never by adding noise to weights. Needs the ``zoo`` extra.

Public API
----------
generate_typed(out_dir, *, size="full", seed=0, progress=None, profile="auto") -> Path
plan_typed(size="full", seed=0, profile="auto") -> list[TypedNode]
"""

from __future__ import annotations

from .generate import generate_typed
from .plan import PROFILES, RELATIONS, TYPED_SIZES, TypedNode, plan_typed

__all__ = ["PROFILES", "RELATIONS", "TYPED_SIZES", "TypedNode", "generate_typed", "plan_typed"]
