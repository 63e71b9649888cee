"""GGUF tensor names -> the transformers names of the same weights, from the ``gguf`` package's tables.

llama.cpp's converter renames every Hugging Face tensor (``model.layers.3.self_attn.q_proj.weight`` ->
``blk.3.attn_q.weight``) with :class:`gguf.TensorNameMap`, whose tables list, per GGUF tensor type, the
names that type has in every model family the converter knows. Going back is ambiguous (``attn_q`` is
``self_attn.q_proj`` in Llama, ``attention.self.query`` in BERT, ``attention.wq`` in Meta's own
checkpoints), so the candidates are chosen per *file*, consistently:

0. candidates are ranked: first those the tables annotate with the file's architecture (each entry
   carries a comment naming the families it comes from: ``# gpt2 gpt-j mpt``, ``# bert``,
   ``# llama-hf``), then those annotated ``llama-hf`` (the layout most transformers decoders share:
   Qwen2, Mistral, ...), then the rest, each group in table order (the architecture's own entries,
   ``arch_block_mappings_cfg``, first); where the tables leave a family's transformers name unannotated
   and another family's name comes first, :data:`_PREFERRED` names the right one (Qwen3's and Gemma 3's
   ``self_attn.q_norm``, listed after Persimmon's ``self_attn.q_layernorm``);
1. block tensors: every tensor type votes with its best-ranked candidate's block prefix (``model.layers``,
   ``transformer.h``, ``encoder.layer``); the majority prefix wins and each type takes its best-ranked
   candidate under it;
2. other tensors (embeddings, final norm, head): the best-ranked annotated candidate, else the first
   under the winning prefix's root (``model.``, ``transformer.``), else the first listed.

The result then goes through :func:`~mother_core.io.names.normalise_name` like every other checkpoint's
names, which makes the choice between wrapper variants (``model.embed_tokens`` / ``embed_tokens``) moot.
Names the tables do not know keep their GGUF name (they compare with other GGUF files only).

3. renames the converter makes *before* the tables (``convert_hf_to_gguf.py``) are undone: its
   ``BertModel`` writes a ``BertForSequenceClassification``'s single projection ``classifier`` as
   RoBERTa's ``classifier.out_proj`` (GGUF ``cls.output``), so in a ``bert`` file holding ``cls.output``
   but no ``cls`` (RoBERTa's ``classifier.dense``) it is ``classifier`` again
   (:data:`_CONVERTER_RENAMES`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import gguf
from gguf.tensor_mapping import TensorNameMap

#: The family whose names most transformers decoders share; preferred after the file's own family.
_COMMON_FAMILY = "llama-hf"


@lru_cache(maxsize=1)
def _annotations() -> dict[str, frozenset[str]]:
    """HF name -> the families its table entry's comment names (empty when the source is unavailable)."""
    try:
        import gguf.tensor_mapping as tables

        source = inspect.getsource(tables)
    except (OSError, TypeError):
        return {}
    out: dict[str, frozenset[str]] = {}
    for name, comment in re.findall(r'^\s*"([^"]+)",\s*#\s*(.*)$', source, re.MULTILINE):
        tokens = frozenset(t for t in re.split(r"[\s,/()]+", comment.lower()) if t)
        out[name] = out.get(name, frozenset()) | tokens
    return out


def _tier(candidate: str, arch_name: str) -> int:
    families = _annotations().get(candidate, frozenset())
    if arch_name in families or f"{arch_name}-hf" in families:
        return 0
    return 1 if _COMMON_FAMILY in families else 2


#: Names transformers' modeling code uses that the tables list, unannotated, after another family's (rule
#: 0): the attention of Qwen3 and its successors (MoE, Next, VL, 3.5) and of Gemma 3 / 3n / 4 keeps
#: ``self.q_norm`` / ``self.k_norm``.
_QK_NORM = frozenset({"model.layers.{bid}.self_attn.q_norm", "model.layers.{bid}.self_attn.k_norm"})
_PREFERRED: dict[str, frozenset[str]] = {
    arch: _QK_NORM for arch in ("qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe",
                                "gemma3", "gemma3n", "gemma4")
}


def _rank(candidate: str, arch_name: str) -> tuple[int, int]:
    """Rule 0's key (before table order): a preferred name first, then the tier."""
    return (0 if candidate in _PREFERRED.get(arch_name, ()) else 1), _tier(candidate, arch_name)


#: Renames ``convert_hf_to_gguf.py`` applies before its tables, undone per architecture: (GGUF base name,
#: GGUF base names that must be absent from the file, transformers name).
_CONVERTER_RENAMES: dict[str, tuple[tuple[str, frozenset[str], str], ...]] = {
    "bert": (("cls.output", frozenset({"cls"}), "classifier"),),
}


@dataclass(frozen=True)
class _Template:
    tensor: gguf.MODEL_TENSOR
    pattern: re.Pattern[str]  # matches the GGUF base name; group "bid" for block tensors
    candidates: tuple[str, ...]  # HF names, "{bid}" unformatted, best-ranked first (rule 0)


def _arch(name: str) -> gguf.MODEL_ARCH | None:
    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == name:
            return arch
    return None


@lru_cache(maxsize=32)
def _templates(arch_name: str) -> tuple[_Template, ...]:
    arch = _arch(arch_name)
    if arch is None:
        return ()
    specific = TensorNameMap.arch_block_mappings_cfg.get(arch, {})
    out = []
    for tensor in gguf.MODEL_TENSORS[arch]:
        gguf_name = gguf.TENSOR_NAMES[tensor]
        candidates = (*specific.get(tensor, ()), *TensorNameMap.block_mappings_cfg.get(tensor, ()),
                      *TensorNameMap.mappings_cfg.get(tensor, ()))
        if not candidates:
            continue
        regex = re.escape(gguf_name).replace(re.escape("{bid}"), r"(?P<bid>\d+)")
        unique = list(dict.fromkeys(candidates))
        order = {c: i for i, c in enumerate(unique)}
        ranked = sorted(unique, key=lambda c: (*_rank(c, arch_name), order[c]))
        out.append(_Template(tensor, re.compile(f"^{regex}$"), tuple(ranked)))
    return tuple(out)


def _block_prefix(candidate: str) -> str | None:
    head, sep, _ = candidate.partition(".{bid}")
    return head if sep else None


def _root(prefix: str) -> str:
    """``model.layers`` -> ``model.``; ``layers`` -> ``""``."""
    head, sep, _ = prefix.rpartition(".")
    return head + sep


def transformers_names(arch_name: str, gguf_names: Iterable[str]) -> dict[str, str]:
    """Map the tensor names of one GGUF file to transformers names (see the module docstring).

    Parameters
    ----------
    arch_name : str
        ``general.architecture`` of the file (``"llama"``, ``"qwen2"``, ``"gpt2"``, ...).
    gguf_names : iterable of str
        The file's tensor names (``blk.0.attn_q.weight``).

    Returns
    -------
    dict of str to str
        GGUF name -> transformers name (raw: not yet normalised); unknown names map to themselves.

    Examples
    --------
    >>> transformers_names("llama", ["blk.0.attn_q.weight", "output.weight"])["blk.0.attn_q.weight"]
    'model.layers.0.self_attn.q_proj.weight'
    >>> transformers_names("qwen3", ["blk.0.attn_q.weight", "blk.0.attn_q_norm.weight"])["blk.0.attn_q_norm.weight"]
    'model.layers.0.self_attn.q_norm.weight'
    >>> transformers_names("bert", ["blk.0.attn_q.weight", "cls.output.bias"])["cls.output.bias"]
    'classifier.bias'
    """
    names = list(gguf_names)
    templates = _templates(arch_name)
    matched: dict[str, tuple[_Template, str | None, str]] = {}  # gguf name -> (template, bid, suffix)
    for name in names:
        base, suffix = name, ""
        for suf in (".weight", ".bias"):
            if name.endswith(suf):
                base, suffix = name[: -len(suf)], suf
                break
        for t in templates:
            m = t.pattern.match(base)
            if m is not None:
                matched[name] = (t, m.groupdict().get("bid"), suffix)
                break

    # 1. Each block tensor type votes with its best-ranked candidate's prefix.
    votes: dict[str, int] = {}
    for t in {t.tensor: t for t, bid, _ in matched.values() if bid is not None}.values():
        best = next((p for c in t.candidates if (p := _block_prefix(c)) is not None), None)
        if best is not None:
            votes[best] = votes.get(best, 0) + 1
    prefix = max(votes, key=lambda p: votes[p]) if votes else None  # ties: the first to get a vote
    root = _root(prefix) if prefix else ""

    bases = {n.removesuffix(".weight").removesuffix(".bias") for n in names}
    renamed = {gguf_base: hf for gguf_base, absent, hf in _CONVERTER_RENAMES.get(arch_name, ())
               if not absent & bases}
    out: dict[str, str] = {}
    for name in names:
        base = name.removesuffix(".weight").removesuffix(".bias")
        if base in renamed:
            out[name] = renamed[base] + name[len(base):]
            continue
        hit = matched.get(name)
        if hit is None:
            out[name] = name
            continue
        t, bid, suffix = hit
        if bid is not None:
            block = [c for c in t.candidates if "{bid}" in c]
            pick = next((c for c in block if _block_prefix(c) == prefix), block[0] if block else t.candidates[0])
            out[name] = pick.format(bid=bid) + suffix
            continue
        plain = [c for c in t.candidates if "{bid}" not in c] or list(t.candidates)
        choice = next((c for c in plain if _tier(c, arch_name) < 2), None)
        if choice is None:
            choice = next((c for c in plain if root and c.startswith(root)), plain[0])
        out[name] = choice + suffix
    return out
