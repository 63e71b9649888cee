"""Model trees with known lineage, made by real training (never by adding noise to weights).

Noise added to weights lacks the kurtosis behaviour MoTHer relies on; every model here is trained
with AdamW on procedural data: small ViTs (Hugging Face ViT names), Llama-style GQA decoders,
diffusers-style UNets, and fine-tuned descendants of the real all-MiniLM-L6-v2.

Public API
----------
generate_split(name, out_dir, *, size="full", seed=0, dtype="float32", progress=None) -> Path
generate_demo(out_dir, *, seed=0, dtype="float16", progress=None) -> list[Path]
SPLITS : registry of split names -> :class:`SplitSpec`
DEMOS  : registry of the built-in demo sets
"""

from __future__ import annotations

from .demo import generate_demo
from .splits import DEMOS, SIZES, SPLITS, SplitSpec, generate_split, plan_split

__all__ = ["DEMOS", "SIZES", "SPLITS", "SplitSpec", "generate_demo", "generate_split", "plan_split"]
