"""Value types and the reader protocol shared by every checkpoint format.

Everything outside :mod:`mother_core.io` reads weights only through :class:`ModelReader`;
formats (safetensors, torch pickles, PEFT adapters, ...) are implementation details behind it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol, TypeVar, runtime_checkable

from mother_core.io.safetensors_header import DTYPES

if TYPE_CHECKING:  # torch is imported where tensors are read, not where models are found (`mother scan`)
    import numpy as np
    import torch

FLOAT_DTYPES: frozenset[str] = frozenset({"float64", "float32", "float16", "bfloat16"})


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and stored dtype of one tensor, without its data.

    ``name`` is already normalised (task-wrapper prefixes such as ``module.`` removed) so that the
    same weight in two models has the same name.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch.", e.g. "bfloat16"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def nbytes(self) -> int:
        size = _ITEM_SIZES.get(self.dtype)
        if size is None:  # a rarer dtype: ask torch
            import torch

            size = torch.empty((), dtype=getattr(torch, self.dtype)).element_size()
        return self.numel * size


#: Bytes per element of the dtypes safetensors stores, so that listing models needs no torch import.
_ITEM_SIZES: dict[str, int] = dict(DTYPES.values())


@dataclass(frozen=True)
class FileIdentity:
    """What identifies a file's content cheaply: path, size and modification time (ns)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> "FileIdentity":
        st = os.stat(path)
        return cls(os.path.abspath(os.fspath(path)), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class ModelRef:
    """A model found on disk, before any tensor is read.

    Attributes
    ----------
    id : str
        The model's name: the folder name or file stem, or the hub id for a Hugging Face cache entry.
    path : str
        The folder or file the model was found at.
    format : str
        ``container[:scheme]``. The container is one of ``"safetensors"``, ``"safetensors-sharded"``,
        ``"torch"``, ``"torch-sharded"``, ``"peft-lora"``, ``"sd-lora"``, ``"gguf"`` (see
        :mod:`mother_core.io.registry`); the scheme, when present, says how the weights are stored inside
        it: a quantization (``"gguf:Q4_K_M"``, ``"safetensors:bnb-nf4"``, ``"safetensors:gptq-int4"``,
        ``"safetensors:awq-int4"``, ``"safetensors:quanto-int8"``, ``"safetensors:fp8"``) or a layout
        (``"safetensors:sd-single-file"``, a Stable Diffusion single-file checkpoint;
        ``"safetensors:flux-single-file"`` / ``"sd3-single-file"``, a Flux / SD3 one; ``"sd-lora:kohya"`` and
        ``"sd-lora:diffusers"``, a Stable Diffusion LoRA file).
    files : tuple of str
        The weight files that make up the model (shards in order; for a LoRA adapter, the adapter file).
    component : str or None
        The sub-folder used for multi-component repositories (diffusers ``unet`` or ``transformer``), if any.
    base_id : str or None
        For a LoRA adapter: the id (or ``base_model_name_or_path``) of the model it must be merged into.
    base_source : str or None
        Which metadata named ``base_id``: None for ``adapter_config.json`` (PEFT); for a Stable Diffusion
        LoRA file ``"ss_sd_model_name"`` or ``"ss_sd_model_hash"`` (kohya-ss header metadata).
    declared_parent : str or None
        The parent the model *declares* (``base_model:`` in its model card, or its config), if any.
    architecture : str or None
        What ``config.json`` says the model is (``architectures[0]`` or ``model_type``), if known.
    adapter_kinds : tuple of str
        For a Stable Diffusion LoRA file in the kohya layout: the module types it holds (``lora``, and the
        LyCORIS ``loha``, ``lokr``, ``full``, ``norm``, ``oft``, ``ia3``: :data:`.sd_lora.KIND_NAMES`), read
        from its tensor names; empty otherwise.
    """

    id: str
    path: str
    format: str
    files: tuple[str, ...]
    component: str | None = None
    base_id: str | None = None
    declared_parent: str | None = None
    architecture: str | None = None
    base_source: str | None = None
    adapter_kinds: tuple[str, ...] = ()

    @property
    def container(self) -> str:
        """The file format the reader is chosen by (``format`` without its scheme)."""
        return self.format.split(":", 1)[0]

    @property
    def scheme(self) -> str | None:
        """How the weights are stored in the container (quantization or layout), if not plainly."""
        _, _, scheme = self.format.partition(":")
        return scheme or None

    def identity(self) -> tuple[FileIdentity, ...]:
        """Identity of every file the model's tensors come from (for cache keys)."""
        return tuple(FileIdentity.of(f) for f in self.files)

    @property
    def size_bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files)


@dataclass(frozen=True)
class Problem:
    """An input that was skipped, and why (shown to the user; never silently dropped)."""

    path: str
    message: str


@dataclass
class Discovery:
    """The result of resolving user paths into models."""

    models: list[ModelRef] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@runtime_checkable
class ModelReader(Protocol):
    """Read-only access to one model's tensors, one tensor (or row range) at a time.

    Implementations keep at most one file open at a time where they can, never hold the whole model,
    and never execute code from the checkpoint.
    """

    ref: ModelRef

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        """All tensors of the model, keyed by normalised name (float and non-float alike)."""
        ...

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Read one tensor (or rows ``[start, stop)`` of its first dimension) in its stored dtype, on CPU."""
        ...

    def close(self) -> None:
        """Release open files."""
        ...

    def __enter__(self) -> "ModelReader": ...

    def __exit__(self, *exc: object) -> None: ...


# Optional capabilities of a reader, declared so that their callers are checked (mypy) and found by
# ``isinstance``: the executor (stats/execute.py) and compute_statistics (stats/compute.py) use them when
# a reader has them (docs/ARCHITECTURE.md, "How to add a checkpoint format").
@runtime_checkable
class BufferReader(Protocol):
    """A reader that fills a caller's contiguous CPU buffer of the listed dtype (no intermediate copy)."""

    def read_into(self, name: str, rows: tuple[int, int] | None, out: torch.Tensor) -> torch.Tensor:
        """Read ``name`` (rows ``[start, stop)``, or whole) into ``out``; returns ``out``."""
        ...


@runtime_checkable
class PrefetchingReader(Protocol):
    """A reader that can be told which rows come next (an OS read-ahead hint; never fails the pass)."""

    def prefetch(self, name: str, rows: tuple[int, int] | None = None) -> None: ...


@runtime_checkable
class HalfWidthReader(Protocol):
    """A reader whose values of some tensors are bfloat16 values whatever their listed dtype (GGUF's 4- to
    6-bit codes, rounded on every read), so that it may also fill a bfloat16 buffer with them."""

    def half_width(self, name: str) -> bool: ...


@runtime_checkable
class CodedReader(Protocol):
    """A reader that can hand over the stored code blocks of some tensors' rows as they are in the file
    (GGUF's 4- to 6-bit blocks, in row order), so the pass decodes them inside its statistics kernel
    (:mod:`mother_core.stats.fused_codes`) instead of into a chunk buffer."""

    def coded(self, name: str) -> str | None:
        """The block type of ``name``'s rows (e.g. ``"Q4_K"``) when :meth:`read_codes` reads them, else None."""
        ...

    def read_codes(self, name: str, rows: tuple[int, int], out: np.ndarray) -> np.ndarray:
        """The stored bytes of rows ``[start, stop)`` of ``name`` into ``out`` (uint8, exactly that many)."""
        ...


@runtime_checkable
class NotingReader(Protocol):
    """A reader that left tensors out and says why (reported as ``Problem``s of its model)."""

    notes: list[str]


@runtime_checkable
class ShapeAdoptingReader(Protocol):
    """A reader of a format that does not store some shapes; it takes them from the other models."""

    def adopt_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None: ...


_W = TypeVar("_W", bound="WrappingReader")


class WrappingReader:
    """The shared part of readers that list another reader's tensors under other names or layouts (Flux / SD3
    single files, stacked experts): they own the wrapped reader (``raw``), and report its notes, read when
    asked (a quantized reader's change as it learns shapes), then their own (``_notes``)."""

    raw: ModelReader
    _notes: list[str]

    @property
    def notes(self) -> list[str]:
        return list(self.raw.notes if isinstance(self.raw, NotingReader) else ()) + self._notes

    def close(self) -> None:
        self.raw.close()

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

