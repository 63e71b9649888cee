"""The relation vocabulary: the one place that names how a model was made from its parent(s).

Every edge of a :class:`~mother_core.recovery.result.Recovery` carries one of these words in
``Edge.relation``; the CLI, ``result.json``, the exports (``base_model_relation``) and the app use the
same words. They follow the model-hub convention for ``base_model_relation`` (finetune, adapter,
quantized, merge) and add the kinds a set of real checkpoints holds besides (docs/RELATIONS.md;
docs/METHOD.md, "Beyond fine-tune trees").
"""

from __future__ import annotations

from dataclasses import dataclass

from mother_core.errors import InputError
from mother_core.words import Word

__all__ = ["RELATIONS", "SINGLE_PARENT", "Relation", "RelationInfo", "parse_relation"]


class Relation(Word):
    """How a child was made from its parent. The value is the word written everywhere."""

    FINETUNE = "finetune"
    ADAPTER = "adapter"
    LORA = "lora"
    QUANTIZED = "quantized"
    CONVERT = "convert"
    MERGE = "merge"
    PRUNE = "prune"
    DISTILL = "distill"

    @property
    def info(self) -> RelationInfo:
        return RELATIONS[self]


@dataclass(frozen=True)
class RelationInfo:
    """What a relation means and how the weights show it.

    Attributes
    ----------
    relation : Relation
    label : str
        A short human label ("fine-tune", "quantized", ...).
    description : str
        One sentence: how the child was made.
    evidence : str
        What the weights show (what the detector tests).
    hub_relation : str
        The model-card ``base_model_relation`` value it maps to (hub vocabulary: adapter, merge,
        quantized, finetune); ``""`` where the hub has none and the card should say ``finetune``.
    """

    relation: Relation
    label: str
    description: str
    evidence: str
    hub_relation: str


RELATIONS: dict[Relation, RelationInfo] = {
    r.relation: r
    for r in (
        RelationInfo(
            Relation.FINETUNE, "fine-tune",
            "All weights trained further from the parent's.",
            "Closest relative by per-layer distance; direction from kurtosis and norm growth (the paper's "
            "MoTHer method).",
            "finetune",
        ),
        RelationInfo(
            Relation.ADAPTER, "adapter",
            "An unmerged PEFT adapter (low-rank factors only) meant to be applied to its base.",
            "The adapter's target-layer shapes fit the base, and merging it into that base lands closest "
            "to the rest of the family; the declared base (adapter_config.json) is shown beside.",
            "adapter",
        ),
        RelationInfo(
            Relation.LORA, "merged LoRA",
            "A LoRA adapter merged into the parent's weights (W + B @ A).",
            "Differs from the parent at low rank, on the targeted layers only; other layers identical.",
            "finetune",
        ),
        RelationInfo(
            Relation.QUANTIZED, "quantized",
            "The parent's weights rounded to a quantization grid (GGUF, bitsandbytes, GPTQ/AWQ, quanto, "
            "fp8).",
            "Equal to the parent up to the scheme's rounding noise, on every layer alike; the quantized "
            "model is always the child.",
            "quantized",
        ),
        RelationInfo(
            Relation.CONVERT, "conversion",
            "The same weights in another dtype or file format (byte-identical duplicates included).",
            "Per-layer relative distance at the rounding noise of the lower-precision dtype (or zero), on "
            "every layer alike; the lower precision (or the later format) is the child.",
            "",
        ),
        RelationInfo(
            Relation.MERGE, "merge",
            "Several parents combined (linear, SLERP, task arithmetic, TIES, DARE, as mergekit makes them).",
            "Layer by layer, the child is a combination of its parents with a small residual; the "
            "estimated method and coefficients are given.",
            "merge",
        ),
        RelationInfo(
            Relation.PRUNE, "pruned",
            "Narrower layers taken from the parent (the neurons of largest weight), then trained.",
            "Its kept neurons are exactly the parent's largest (the cut its weights make); narrower tensors "
            "under the parent's names.",
            "finetune",
        ),
        RelationInfo(
            Relation.DISTILL, "distilled",
            "Fewer layers: a student initialised from a subset of the parent's layers, then trained (to imitate "
            "it, or plainly).",
            "Its layers are, in order, a subset of the parent's (layer-to-layer distance, renumbered layers "
            "matched).",
            "distill",
        ),
    )
}

# Every relation but merge gives its child exactly one parent.
SINGLE_PARENT: frozenset[Relation] = frozenset(r for r in Relation if r is not Relation.MERGE)


def parse_relation(word: str | Relation | None, *, default: Relation = Relation.FINETUNE) -> Relation:
    """The :class:`Relation` a word names (case-insensitive; ``None`` or ``""`` gives ``default``).

    Hub spellings are accepted too: ``fine-tune``/``fine_tune`` for finetune, ``quantization`` for
    quantized, ``merged``, ``adapters``.

    Raises
    ------
    InputError
        The word names no relation; the message lists the words that do.
    """
    if word is None or word == "":
        return default
    if isinstance(word, Relation):
        return word
    w = str(word).strip().lower().replace("_", "-")
    aliases = {"fine-tune": "finetune", "fine-tuned": "finetune", "quantization": "quantized",
               "quantised": "quantized", "merged": "merge", "adapters": "adapter", "pruned": "prune",
               "distillation": "distill", "distilled": "distill", "conversion": "convert",
               "converted": "convert", "merged-lora": "lora"}
    w = aliases.get(w, w)
    try:
        return Relation(w)
    except ValueError:
        raise InputError(
            f"Unknown relation {word!r}: use one of {', '.join(r.value for r in Relation)}."
        ) from None
