"""The reader of Flux and SD3 single-file checkpoints: the file's own reader under diffusers' names.

The names and row segments come from :mod:`.dit_single_file` (:func:`~.dit_single_file.layout`); this module
reads them. :func:`wrap` is called by the safetensors and torch openers on every reader they make, so a
single file is recognised from its own names whatever its ``ModelRef.format`` says (an fp8 Flux file's scheme
is ``fp8``; its dequantized weights are split the same way).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mother_core.io.base import BufferReader, ModelReader, ModelRef, PrefetchingReader, TensorInfo, WrappingReader
from mother_core.io.dit_single_file import FLUX, Layout, Segment, bare_name, layout
from mother_core.io.names import normalise_name


class DitSingleFileReader(WrappingReader):
    """A :class:`~mother_core.io.base.ModelReader` listing a Flux / SD3 single file under diffusers' names.

    Wraps the file's own reader (plain safetensors or torch, or a quantized reader over them): each diffusers
    tensor's rows are read as the rows of the stored tensors they are (a ``to_k`` is the middle third of
    ``qkv``: its rows ``[a, b)`` are ``qkv``'s rows ``[d + a, d + b)``), so a chunk costs what reading it
    plainly costs, and no stored tensor is held whole.
    """

    def __init__(self, raw: ModelReader, found: Layout) -> None:
        self.raw = raw
        self.ref: ModelRef = raw.ref
        self.scheme = found.scheme
        infos = raw.tensor_infos()
        self._segments: dict[str, tuple[Segment, ...]] = {}
        self._infos: dict[str, TensorInfo] = {}
        for name, segs in found.tensors.items():
            norm = normalise_name(name)
            if norm in self._infos:  # a stored tensor kept under its own name that a rule's target also is
                continue
            source = infos[segs[0].source]
            rows = sum(s.stop - s.start for s in segs)
            shape = (rows, *source.shape[1:]) if source.shape else source.shape
            self._infos[norm] = TensorInfo(norm, shape, source.dtype)
            self._segments[norm] = segs
        self._notes: list[str] = []
        if found.unmapped:
            shown = ", ".join(repr(bare_name(n)[:60]) for n in found.unmapped[:4]) + (
                " ..." if len(found.unmapped) > 4 else "")
            what = "Flux" if found.scheme == FLUX else "SD3"
            self._notes.append(
                f"{raw.ref.path}: {len(found.unmapped)} tensor(s) of this {what} single-file checkpoint ({shown}) "
                "have no counterpart in the diffusers transformer, so they keep their original names and compare "
                "only with single files of the same layout.")

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _pieces(self, name: str, rows: tuple[int, int] | None) -> list[tuple[str, tuple[int, int] | None]]:
        """(stored tensor, its rows, or None for all of it) for rows ``[start, stop)`` of ``name``, in order."""
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        segs = self._segments[name]
        if rows is None and len(segs) == 1 and segs[0].start == 0 \
                and self.raw.tensor_infos()[segs[0].source].shape == info.shape:
            return [(segs[0].source, None)]  # one stored tensor, whole (a 0-d one has no rows to ask for)
        total = info.shape[0] if info.shape else 0
        start, stop = rows if rows is not None else (0, total)
        if not info.shape or not 0 <= start <= stop <= total:
            raise ValueError(f"Rows {rows} out of range for {name!r} of shape {info.shape}.")
        out: list[tuple[str, tuple[int, int] | None]] = []
        offset = 0
        for seg in segs:
            n = seg.stop - seg.start
            a, b = max(start - offset, 0), min(stop - offset, n)
            if a < b:
                out.append((seg.source, (seg.start + a, seg.start + b)))
            offset += n
        return out

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        parts = [self.raw.read(source, r) for source, r in self._pieces(name, rows)]
        if len(parts) == 1:
            return parts[0]
        if not parts:  # an empty row range
            info = self._infos[name]
            return torch.empty((0, *info.shape[1:]), dtype=getattr(torch, info.dtype))
        return torch.cat(parts)

    def read_into(self, name: str, rows: tuple[int, int] | None, out: torch.Tensor) -> torch.Tensor:
        """Read ``name`` (rows) into ``out`` (contiguous, CPU, the listed dtype): each piece into its own rows,
        through the wrapped reader's ``read_into`` where it has one."""
        info = self._infos[name]
        shape = info.shape if rows is None else (rows[1] - rows[0], *info.shape[1:])
        flat = out.view(-1)
        width = 1
        for d in info.shape[1:]:
            width *= d
        done = 0
        for source, r in self._pieces(name, rows):
            n = flat.numel() if r is None else (r[1] - r[0]) * width
            target = flat[done:done + n]
            if isinstance(self.raw, BufferReader):
                self.raw.read_into(source, r, target)
            else:
                target.copy_(self.raw.read(source, r).reshape(-1))
            done += n
        return out.view(shape)

    def prefetch(self, name: str, rows: tuple[int, int] | None = None) -> None:
        if isinstance(self.raw, PrefetchingReader):
            for source, r in self._pieces(name, rows):
                self.raw.prefetch(source, r)

    def __repr__(self) -> str:
        return f"<DitSingleFileReader {self.ref.id!r} ({self.scheme})>"


def wrap(reader: ModelReader) -> ModelReader:
    """``reader`` listing a Flux / SD3 single file under diffusers' names; any other reader unchanged."""
    infos = reader.tensor_infos()
    found = layout({n: (i.shape, i.dtype) for n, i in infos.items()})
    return reader if found is None else DitSingleFileReader(reader, found)
