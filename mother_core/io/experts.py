"""Mixture-of-experts blocks: one tensor per projection, experts stacked, whatever layout the file has.

The same experts are stored three ways:

* **per expert**, as the hub's files, ``save_pretrained`` (transformers 5 writes the old layout back),
  mergekit and quantizers keep them: ``layers.N.mlp.experts.E.gate_proj.weight`` (Qwen2/3-MoE, OLMoE,
  DeepSeek), ``layers.N.block_sparse_moe.experts.E.w1.weight`` (Mixtral), one 2-D (out, in) tensor each;
* **fused**, as transformers 5 holds them in memory (a ``state_dict`` saved as it is) and as Granite-MoE
  stores them: ``layers.N.mlp.experts.gate_up_proj`` (experts, 2 x inter, hidden), gate rows first, and
  ``layers.N.mlp.experts.down_proj`` (experts, hidden, inter); Granite-MoE's ``input_linear.weight`` /
  ``output_linear.weight`` are the same two;
* **stacked**, as llama.cpp's ``convert_hf_to_gguf.py`` writes GGUF files: ``blk.N.ffn_gate_exps`` /
  ``ffn_up_exps`` / ``ffn_down_exps``, each (experts, out, in), named by the ``gguf`` tables
  ``layers.N.mlp.experts.gate_proj.weight`` (:mod:`.gguf_names`).

:func:`~.names.normalise_name` first gives every block transformers 5's names (``block_sparse_moe`` ->
``mlp``, Mixtral's ``w1`` / ``w2`` / ``w3`` -> ``gate_proj`` / ``down_proj`` / ``up_proj``); :func:`wrap` then
lists every layout under the stacked one, ``<block>.experts.{gate_proj,up_proj,down_proj}.weight`` of shape
(experts, out, in): few slots however many experts (a model of 128 experts in 48 layers has 18,432
per-expert matrices, and the pass keeps per-pair statistics per slot), and the rows the pass reads in
chunks are whole experts, so memory stays at one expert slice per chunk. Stacked tensors count as weight
matrices (:func:`~.names.layer_kind` calls them ``mlp``; the default ``matrices`` selection keeps every
weight of two or more dimensions).

A per-expert group that does not stack (missing experts, shapes that differ) and a fused tensor whose
orientation is not (experts, out, in) (gpt-oss and Llama 4 store (experts, in, out), gpt-oss with gate and
up interleaved) keep their stored names, with a note: they compare only with files of the same layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mother_core.io.base import BufferReader, ModelReader, ModelRef, PrefetchingReader, TensorInfo, WrappingReader

#: ``<block>.experts.<E>.<rest>``: one expert's tensor, after :func:`~.names.normalise_name`.
# At most 9 ASCII digits: a name is data from the file, and int() refuses more than 4,300 digits.
_PER_EXPERT = re.compile(r"^(?P<block>.+\.experts)\.(?P<index>[0-9]{1,9})\.(?P<rest>.+)$")
#: Fused (experts, 2 x inter, hidden) gate and up projections: transformers 5, Granite-MoE.
_FUSED_GATE_UP = re.compile(r"^(?P<block>.+?)\.(?:experts\.gate_up_proj|input_linear)(?:\.weight)?$")
#: Fused (experts, hidden, inter) down projections: transformers 5 (no ``.weight``), Granite-MoE.
_FUSED_DOWN = re.compile(r"^(?P<block>.+?)\.(?:experts\.down_proj|output_linear)(?:\.weight)?$")


@dataclass(frozen=True)
class Source:
    """Where a listed expert tensor's rows come from.

    Attributes
    ----------
    names : tuple of str
        The stored tensors: one per expert (stacked on read), or one 3-D tensor.
    columns : tuple of (int, int) or None
        For one 3-D tensor, the slice of its second dimension this tensor is (the gate or up half of a
        fused ``gate_up_proj``); None for all of it.
    per_expert : bool
        ``names`` holds one 2-D tensor per expert, in expert order.
    """

    names: tuple[str, ...]
    columns: tuple[int, int] | None = None
    per_expert: bool = False


@dataclass(frozen=True)
class ExpertLayout:
    """The expert tensors of one model under their stacked names (see the module docstring).

    Attributes
    ----------
    sources : dict of str to (Source, TensorInfo)
        Stacked name -> where its rows come from, and what it is.
    replaced : frozenset of str
        Stored names no longer listed (their experts are listed under the stacked names).
    notes : tuple of str
        Expert tensors left under their stored names, and why.
    """

    sources: Mapping[str, tuple[Source, TensorInfo]]
    replaced: frozenset[str]
    notes: tuple[str, ...]


def _stacked_name(block: str, rest: str) -> str:
    return f"{block}.{rest}" if rest.endswith((".weight", ".bias")) else f"{block}.{rest}.weight"


def stacked_slot(name: str) -> tuple[str, int] | None:
    """The stacked tensor and the expert a per-expert tensor's name (normalised) is listed under; None for a
    name that is not one expert's.

    Examples
    --------
    >>> stacked_slot("layers.3.mlp.experts.7.gate_proj.weight")
    ('layers.3.mlp.experts.gate_proj.weight', 7)
    >>> stacked_slot("layers.3.mlp.gate_proj.weight") is None
    True
    """
    m = _PER_EXPERT.match(name)
    return None if m is None else (_stacked_name(m["block"], m["rest"]), int(m["index"]))


def layout(infos: Mapping[str, TensorInfo]) -> ExpertLayout | None:
    """The stacked expert tensors of a model whose (normalised) tensors are ``infos``; None without experts
    in another layout than the stacked one.

    Examples
    --------
    >>> from mother_core.io.base import TensorInfo
    >>> infos = {f"layers.0.mlp.experts.{e}.gate_proj.weight": TensorInfo("", (6, 4), "float32") for e in range(3)}
    >>> found = layout(infos)
    >>> sorted(found.sources), found.sources["layers.0.mlp.experts.gate_proj.weight"][1].shape
    (['layers.0.mlp.experts.gate_proj.weight'], (3, 6, 4))
    """
    groups: dict[tuple[str, str], dict[int, str]] = {}
    for name in infos:
        m = _PER_EXPERT.match(name)
        if m is not None:
            groups.setdefault((m["block"], m["rest"]), {})[int(m["index"])] = name
    sources: dict[str, tuple[Source, TensorInfo]] = {}
    per_expert: set[str] = set()
    loose: list[str] = []  # per-expert groups that do not stack
    for (block, rest), members in sorted(groups.items()):
        target = _stacked_name(block, rest)
        first = infos[members[min(members)]]
        same = {(infos[n].shape, infos[n].dtype) for n in members.values()}
        if sorted(members) != list(range(len(members))) or len(same) != 1 or len(first.shape) != 2 \
                or target in infos or target in sources:
            loose.append(f"{block}.*.{rest} ({len(members)})")
            continue
        names = tuple(members[e] for e in range(len(members)))
        sources[target] = (Source(names, per_expert=True), TensorInfo(target, (len(names), *first.shape), first.dtype))
        per_expert.update(names)

    unfused: list[str] = []  # fused-looking tensors that are not (experts, 2 x inter, hidden) beside a down
    replaced: set[str] = set()
    downs = {m["block"]: n for n in infos if (m := _FUSED_DOWN.match(n)) is not None and len(infos[n].shape) == 3}
    for name, info in infos.items():
        m = _FUSED_GATE_UP.match(name)
        if m is None or len(info.shape) != 3:
            continue
        block = m["block"]
        down = downs.get(block)
        experts, rows, cols = info.shape
        d = infos[down].shape if down is not None else ()
        if down is None or d[0] != experts or rows % 2 or d[1] != cols or 2 * d[2] != rows \
                or f"{block}.experts.gate_proj.weight" in infos:
            unfused.append(f"{name} {info.shape}")
            downs.pop(block, None)
            continue
        half = rows // 2
        for proj, cut in (("gate_proj", (0, half)), ("up_proj", (half, rows))):
            target = f"{block}.experts.{proj}.weight"
            sources[target] = (Source((name,), cut), TensorInfo(target, (experts, half, cols), info.dtype))
        target = f"{block}.experts.down_proj.weight"
        if down != target:
            sources[target] = (Source((down,)), TensorInfo(target, infos[down].shape, infos[down].dtype))
            replaced.add(down)
        replaced.add(name)
    # One note for each kind, however many blocks: a file of 20,000 odd blocks made 20,000 problems (one line
    # each on the app's page) out of one model.
    notes: list[str] = []
    if loose:
        notes.append(f"the experts of {_some(loose)} are not numbered 0..E-1 with one shape and dtype, so they "
                     "are compared one by one under their stored names, with files of the same layout only")
    if unfused:
        notes.append(f"{_some(unfused)} {'is' if len(unfused) == 1 else 'are'} not a fused (experts, 2 x inter, "
                     "hidden) gate and up projection beside a (experts, hidden, inter) down projection, so "
                     f"{'it is' if len(unfused) == 1 else 'they are'} compared under the stored names, with files "
                     "of the same layout only")
    if not sources and not notes:
        return None
    return ExpertLayout(sources, frozenset(replaced | per_expert), tuple(notes))


def _some(items: list[str], shown: int = 3) -> str:
    """The first few of ``items`` and how many more (a note names a bounded number of tensors)."""
    more = f" and {len(items) - shown:,} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


class ExpertReader(WrappingReader):
    """A :class:`~mother_core.io.base.ModelReader` listing a model's experts stacked (module docstring).

    Wraps the model's own reader: a stacked tensor's rows ``[a, b)`` are experts ``a`` to ``b - 1``, read one
    stored tensor each (per-expert files) or as the rows of the stored 3-D tensor (fused files: the gate or up
    half of each expert's rows kept); every other tensor is the wrapped reader's.
    """

    def __init__(self, raw: ModelReader, found: ExpertLayout) -> None:
        self.raw = raw
        self.ref: ModelRef = raw.ref
        self._sources = {name: source for name, (source, _) in found.sources.items()}
        infos = {n: i for n, i in raw.tensor_infos().items() if n not in found.replaced}
        infos.update({name: info for name, (_, info) in found.sources.items()})
        self._infos = infos
        self._notes = [f"{raw.ref.path}: {note}." for note in found.notes]

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _rows(self, name: str, rows: tuple[int, int] | None) -> tuple[Source | None, int, int]:
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        source = self._sources.get(name)
        total = info.shape[0] if info.shape else 1
        r0, r1 = rows if rows is not None else (0, total)
        if source is not None and not 0 <= r0 <= r1 <= total:
            raise ValueError(f"Rows {rows} out of range for {name!r} of shape {info.shape}.")
        return source, r0, r1

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        source, r0, r1 = self._rows(name, rows)
        if source is None:
            return self.raw.read(name, rows)
        if source.per_expert:
            info = self._infos[name]
            if r0 == r1:
                return torch.empty((0, *info.shape[1:]), dtype=getattr(torch, info.dtype))
            return torch.stack([self.raw.read(source.names[e]) for e in range(r0, r1)])
        data = self.raw.read(source.names[0], (r0, r1))
        if source.columns is None:
            return data
        a, b = source.columns
        return data[:, a:b].contiguous()

    def read_into(self, name: str, rows: tuple[int, int] | None, out: torch.Tensor) -> torch.Tensor:
        """Read ``name`` (rows) into ``out`` (contiguous, CPU, the listed dtype): per-expert tensors each into
        its own rows, through the wrapped reader's ``read_into`` where it has one."""
        source, r0, r1 = self._rows(name, rows)
        info = self._infos[name]
        shape = (r1 - r0, *info.shape[1:]) if info.shape else ()
        if source is None and isinstance(self.raw, BufferReader):
            return self.raw.read_into(name, rows, out)
        if source is not None and source.per_expert and isinstance(self.raw, BufferReader):
            per = out.numel() // max(1, r1 - r0)
            flat = out.view(-1)
            for k, e in enumerate(range(r0, r1)):
                self.raw.read_into(source.names[e], None, flat[k * per:(k + 1) * per])
            return out.view(shape)
        out.view(-1).copy_(self.read(name, rows).reshape(-1))
        return out.view(shape)

    def prefetch(self, name: str, rows: tuple[int, int] | None = None) -> None:
        if not isinstance(self.raw, PrefetchingReader):
            return
        source, r0, r1 = self._rows(name, rows)
        if source is None:
            self.raw.prefetch(name, rows)
        elif source.per_expert:
            for e in range(r0, r1):
                self.raw.prefetch(source.names[e])
        else:
            self.raw.prefetch(source.names[0], (r0, r1))

    def __repr__(self) -> str:
        return f"<ExpertReader {self.ref.id!r} over {self.raw!r}>"


def wrap(reader: ModelReader) -> ModelReader:
    """``reader`` listing its experts stacked (module docstring); a reader without experts to restack unchanged."""
    found = layout(reader.tensor_infos())
    return reader if found is None else ExpertReader(reader, found)
