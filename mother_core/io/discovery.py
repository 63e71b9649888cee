"""Turn the paths a user gives into models: :func:`discover`.

Each path is a model or a folder of models. Recognised, in this order, for a folder:

1. a Hugging Face cache entry ``models--org--name`` (id ``org/name``; snapshot of ``refs/main`` if
   present, else the newest), or a hub cache root holding several ``models--*`` (or ``hub/models--*``);
2. a diffusers repository (``model_index.json`` or component sub-folders): ``component`` picks the
   sub-folder, else the pipeline's denoiser (``unet`` if present, else ``transformer``: Flux, SD3, PixArt,
   Sana), else a problem listing the components;
3. a PEFT adapter, LoRA / DoRA / LoHa / LoKr / IA3 (``adapter_config.json`` +
   ``adapter_model.safetensors``/``.bin``; other PEFT types are a problem); a Stable Diffusion LoRA file
   (kohya-ss or diffusers layout, :mod:`.sd_lora`) is found by its tensor names wherever a weight file is,
   and its base named by its header metadata (``ss_sd_model_name``, else the base file whose legacy hash
   is its ``ss_sd_model_hash``) or by the model card beside it;
4. a model folder: ``*.safetensors.index.json`` / ``*.bin.index.json`` (shards), ``model.safetensors``,
   ``diffusion_pytorch_model.safetensors``, ``pytorch_model.bin`` (and their variants such as
   ``model.fp16.safetensors``), or exactly one weight file next to a ``config.json``;
5. otherwise a folder of models: each child folder (by 1-3 or 4, where a single weight file of any name
   also counts) or weight file is one model, id = folder name or file stem (``foo.pth.tar`` -> ``foo``).

Discovery reads safetensors headers and zip directories (to report truncated files early), never tensor
data. ``declared_parent`` comes from the model card's ``base_model:`` or config.json's ``base_model``
(``_name_or_path`` is where a model was loaded from, not a declaration). A LoRA adapter's ``base_id`` is
the id in the set matching its ``base_model_name_or_path`` (see :func:`match_model_id`), else that string.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from mother_core.errors import ModelNotFoundError, UnreadableCheckpointError
from mother_core.io.base import Discovery, ModelRef, Problem
from mother_core.io.confine import Roots, at_or_below
from mother_core.io.filekind import not_a_regular_file, read_json_file, read_text_file
from mother_core.io.quant_scheme import detect_scheme, quantization_config
from mother_core.io.safetensors_header import read_header
from mother_core.io import sd_lora
from mother_core.io.registry import PEFT_TYPES, needs_base, peft_refusal
from mother_core.io.dit_single_file import sniff as dit_sniff
from mother_core.io.sd_single_file import is_single_file
from mother_core.io.sniff import check_torch_file, looks_like_safetensors

TORCH_SUFFIXES: tuple[str, ...] = (".pth.tar", ".bin", ".pt", ".pth", ".ckpt")
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".gguf", ".traineddata") + TORCH_SUFFIXES
#: File stems that name a model's weights, not the model: a file with such a name takes its folder's name.
GENERIC_STEMS = re.compile(r"^(model|pytorch_model|diffusion_pytorch_model|adapter_model|pytorch_lora_weights|"
                           r"consolidated|weights)"
                           r"([.-].*)?$")
FORMATS_HELP = (
    "single .safetensors files, Hugging Face folders (model.safetensors, sharded *.index.json, "
    "pytorch_model.bin), diffusers repositories (unet/ or transformer/), PyTorch pickles "
    "(.bin .pt .pth .pth.tar .ckpt), Flux / SD3 single files, "
    "GGUF files (.gguf, any quantization the gguf package reads), Tesseract LSTM models (.traineddata), "
    "PEFT adapter folders (LoRA, DoRA, LoHa, LoKr, IA3), Stable Diffusion LoRA files (kohya-ss or diffusers "
    ".safetensors) and Hugging Face cache folders (models--org--name)"
)
#: The components that are a diffusers pipeline's denoiser, the one compared by default, most preferred
#: first: the UNet of Stable Diffusion 1.x / 2.x / XL, else the transformer of the DiT pipelines (Flux, SD3 /
#: 3.5, PixArt, Sana), which have no ``unet/``. A pipeline has one or the other.
DENOISERS: tuple[str, ...] = ("unet", "transformer")
# How many folders deep a named PEFT adapter is looked for (a name ``a/b/c`` is three): PEFT sets no bound, but
# a set's entry that holds no model is walked this deep, and real names hold a slash or two at most.
NAMED_ADAPTER_DEPTH = 8
# How many folders one walk for named adapters lists at most: a set's entry that holds no model is walked
# NAMED_ADAPTER_DEPTH deep, and one holding a large tree of other folders (9,840 empty ones) cost 0.6-1.7 s.
# PEFT's own folders are a handful; a training run's output (2,000 folders, adapters among them) fits.
NAMED_ADAPTER_FOLDERS = 5000
_STANDARD = (  # per format, most preferred first
    ("model.safetensors", "safetensors"),
    ("diffusion_pytorch_model.safetensors", "safetensors"),
    ("pytorch_model.bin", "torch"),
    ("diffusion_pytorch_model.bin", "torch"),
)
#: Files a training run writes beside its weights (HF Trainer, Lightning): never models themselves.
NOT_MODELS = re.compile(r"^(training_args\.bin|optimizer(\.pt|\.bin)?|scheduler\.pt|scaler\.pt|"
                        r"rng_state(_\d+)?\.pth|trainer_state\.json)$")
_SHARD = re.compile(r"^(?P<stem>.+)-\d{5}-of-(?P<n>\d{5})\.(safetensors|bin|gguf)$")


def _weight_suffix(name: str) -> str | None:
    low = name.lower()
    return next((s for s in WEIGHT_SUFFIXES if low.endswith(s)), None)


def _container(file_name: str) -> str:
    """The container format of a single weight file, from its suffix."""
    suffix = _weight_suffix(file_name)
    return {".safetensors": "safetensors", ".gguf": "gguf", ".traineddata": "tesseract"}.get(suffix or "", "torch")


def file_stem(path: str | os.PathLike[str]) -> str:
    """A weight file's name without its (possibly double) extension: ``foo.pth.tar`` -> ``foo``."""
    name = os.path.basename(os.fspath(path))
    suffix = _weight_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def display_id(name: str) -> str:
    """A model id that every page, terminal and JSON file can show: a folder name's undecodable bytes
    (a non-UTF-8 file name reaches Python as lone surrogates) become ``\\xNN`` and control characters
    their escapes. Names that are already clean are returned unchanged."""
    if name.isprintable():
        return name
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def match_model_id(name: str | None, ids: Sequence[str]) -> str | None:
    """The id in ``ids`` that a declared name (hub id or path) refers to, or ``None``: the one rule for
    matching names to models (adapter bases, declared parents, truth files, presets).

    Exact match first, then case-insensitive, then by the last path component when exactly one model
    has it (a hub id ``org/name`` matches a folder called ``name`` and vice versa; ``/models/llama``
    matches ``llama``). An ambiguous name matches nothing. To match many names against the same ids,
    build one :class:`IdMatcher` (this builds its indexes on every call).

    Examples
    --------
    >>> match_model_id("meta-llama/Llama-2-7b-hf", ["llama-2-7b-hf", "mistral"])
    'llama-2-7b-hf'
    >>> match_model_id("org/base", ["a/base", "b/base"]) is None
    True
    """
    return IdMatcher(ids)(name) if name else None


class IdMatcher:
    """:func:`match_model_id` against fixed ids, its indexes built once: matching every model's declared
    parent in a set of N models was N passes over the N ids (seconds at 1,000 models).

    Examples
    --------
    >>> match = IdMatcher(["llama-2-7b-hf", "mistral"])
    >>> match("/home/someone/models/Mistral/"), match("other") is None
    ('mistral', True)
    """

    def __init__(self, ids: Sequence[str]) -> None:
        self._ids = set(ids)
        self._by_norm = {_norm_id(m): m for m in ids}
        self._by_tail: dict[str, list[str]] = {}
        for m in ids:
            self._by_tail.setdefault(_norm_id(m).split("/")[-1], []).append(m)

    def __call__(self, name: str | None) -> str | None:
        # A weight file's name ("v1-5-pruned-emaonly.safetensors", what kohya-ss records as the base): its
        # model's id is the file stem. Suffixes are taken off one at a time, in a loop: a name of a thousand
        # ".pt" (a result.json's declared parent may be 2,000 characters) recursed past Python's limit.
        while name:
            if name in self._ids:
                return name
            norm = _norm_id(name)
            if norm in self._by_norm:
                return self._by_norm[norm]
            tail = norm.split("/")[-1]
            hits = self._by_tail.get(tail, [])
            if len(hits) == 1:
                return hits[0]
            suffix = _weight_suffix(tail)
            if not suffix or len(tail) <= len(suffix):
                return None
            name = name.strip().rstrip("/")[:-len(suffix)]
        return None


def _base_names(ref: ModelRef) -> tuple[tuple[str | None, str], ...]:
    """The names an adapter gives its base, in the order they are read, each with where it is written:
    its ``base_id`` (``adapter_config.json``, or ``ref.base_source``), then its card's ``base_model``."""
    return (ref.base_id, ref.base_source or "adapter_config.json"), (ref.declared_parent, "model card")


def adapter_base(ref: ModelRef, ids: Sequence[str]) -> tuple[str, str] | None:
    """The model of ``ids`` an adapter is read on, and which metadata named it: its
    ``adapter_config.json`` ``base_model_name_or_path`` first, else its model card's ``base_model``
    (peft writes both; a config may name a local path that is not in the set while the card names
    the model that is). ``None`` when neither matches a model (:func:`match_model_id`).

    A Stable Diffusion LoRA file's ``base_id`` comes from its header metadata instead
    (``ref.base_source``: ``ss_sd_model_name``, or ``ss_sd_model_hash`` when discovery matched the hash).

    Both are declared metadata: the weights can confirm the architecture (the adapter's shapes fit) and
    that the update is low-rank, not which model of a family of fine-tunes it was trained on.
    """
    others = [i for i in ids if i != ref.id]
    for name, source in _base_names(ref):
        found = match_model_id(name, others)
        if found is not None:
            return found, source
    return None


def names_itself(ref: ModelRef, ids: Sequence[str]) -> tuple[str, str] | None:
    """``(name, where)`` when the adapter ``ref`` names itself as its base (the name matches ``ref.id``
    among ``ids``, by :func:`match_model_id`), in the order :func:`adapter_base` reads them; else None.

    A copied ``adapter_config.json`` (or a folder renamed after its base) can do this; the adapter is in
    the set, so "its base is not in the set" would mislead.

    Examples
    --------
    >>> ref = ModelRef(id="lora", path="/m/lora", format="peft-lora", files=[], base_id="/home/u/lora")
    >>> names_itself(ref, ["lora", "b"])
    ('/home/u/lora', 'adapter_config.json')
    """
    for name, where in _base_names(ref):
        if name and match_model_id(name, ids) == ref.id:
            return name, where
    return None


def base_model(ref: ModelRef, models: Mapping[str, ModelRef]) -> ModelRef | None:
    """The model of ``models`` (id -> model) the adapter ``ref`` is read on: :func:`adapter_base` among the
    models that are not adapters themselves (:func:`~mother_core.io.registry.needs_base`); None when none
    matches."""
    found = adapter_base(ref, [i for i, m in models.items() if not needs_base(m)])
    return models[found[0]] if found is not None else None


def _norm_id(name: str) -> str:
    return name.strip().rstrip("/").lower()


# --- metadata ----------------------------------------------------------------------------------------

def _read_text(path: str, limit: int, roots: Roots | None = None) -> str:
    if roots is not None and not roots.contains(path):
        raise OSError(roots.refusal(path))
    return read_text_file(path, limit)


def _read_json(path: str, roots: Roots | None = None) -> object:
    if roots is not None and not roots.contains(path):
        raise OSError(roots.refusal(path))
    return read_json_file(path)


def _front_matter_base_model(readme: str, roots: Roots | None = None) -> str | None:
    """``base_model:`` from a model card's YAML front matter (a string, or the first of a list)."""
    try:
        text = _read_text(readme, 65536, roots)
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    lines = text[3:end if end > 0 else len(text)].splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^base_model\s*:\s*(.*)$", line)
        if not m:
            continue
        value = m.group(1).strip()
        if value.startswith("["):
            value = value.strip("[]").split(",")[0]
        elif not value:  # block list on the next lines
            for nxt in lines[i + 1:]:
                item = re.match(r"^\s*-\s*(.+)$", nxt)
                if item:
                    value = item.group(1)
                    break
                if nxt.strip():
                    break
        value = value.strip().strip("'\"")
        return value or None
    return None


def _read_config(folder: str, roots: Roots | None = None) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.lexists(path):
        return {}
    try:
        config = _read_json(path, roots)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _declared_parent(*folders: str, roots: Roots | None = None) -> str | None:
    for folder in folders:
        found = _front_matter_base_model(os.path.join(folder, "README.md"), roots)
        if found:
            return found[:500]
        value = _read_config(folder, roots).get("base_model")
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str) and value:
            return value[:500]
    return None


def _architecture(*folders: str, roots: Roots | None = None) -> str | None:
    """``architectures[0]``, else ``model_type``, else diffusers' ``_class_name`` of the nearest config."""
    for folder in reversed(folders):  # the component's own config first
        config = _read_config(folder, roots)
        archs = config.get("architectures")
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            return archs[0][:200]
        for key in ("model_type", "_class_name"):
            if isinstance(config.get(key), str) and config[key]:
                return config[key][:200]
    return None


# --- validation (headers only) -----------------------------------------------------------------------

def _check_files(files: Sequence[str], fmt: str, roots: Roots | None = None) -> str:
    """Validate headers; return the format with its scheme (``gguf:Q4_K_M``; a torch-named file that is
    really safetensors is read as such)."""
    for f in files:
        refusal = roots.refusal(f) if roots is not None else None
        # The readers take a quantization from the config.json beside a weight file (quant_scheme.model_config),
        # read without the roots: one that resolves outside them (a symlink) is refused here, before any read.
        config = os.path.join(os.path.dirname(f), "config.json")
        if not refusal and roots is not None and os.path.lexists(config):
            refusal = roots.refusal(config)
        if refusal:
            raise UnreadableCheckpointError(refusal, f)
        why = not_a_regular_file(f)
        if why == "it does not exist":
            raise UnreadableCheckpointError(f"{f} is missing (listed in the shard index): re-download the model.", f)
        if why:
            raise UnreadableCheckpointError(f"Cannot read {f}: {why}. Replace it with the real weight file.", f)
        if fmt == "gguf":  # every part of a split model is checked; the first one's header names the scheme
            continue
        if fmt == "tesseract":
            from mother_core.io.tesseract_reader import read_header as tesseract_header

            scheme = tesseract_header(f).scheme
            return f"tesseract:{scheme}" if scheme else fmt
        if fmt.startswith("safetensors"):
            header = read_header(f)
            scheme = None
            if f == files[0] and fmt == "safetensors":
                lora = sd_lora.sniff(t.name for t in (*header.tensors, *header.unsupported))
                if lora is not None and lora.startswith(("unsupported:", sd_lora.DIT_LORA)):
                    raise UnreadableCheckpointError(sd_lora.refusal(f, lora), f)
                if lora is not None:
                    return f"sd-lora:{lora}"
            if f == files[0]:
                shapes = header.shapes()
                # A quantization first (an fp8 Flux file is an fp8 copy; its reader still renames it), then a
                # layout: Flux / SD3 single files also put their denoiser under model.diffusion_model.
                scheme = detect_scheme(shapes, quantization_config(f)) or dit_sniff(shapes) or (
                    "sd-single-file" if is_single_file(shapes) else None)
            if scheme is not None:
                fmt = f"{fmt}:{scheme}"
        elif looks_like_safetensors(f):
            read_header(f)
            fmt = fmt.replace("torch", "safetensors")
        else:
            check_torch_file(f)
    if fmt == "gguf":
        from mother_core.io.gguf_header import check_byte_order, read_header as gguf_header  # gguf, not torch

        first = gguf_header(files[0])
        check_byte_order(files[0], first)
        return f"gguf:{first.scheme}"
    return fmt


def _from_index(index: str) -> tuple[str, ...]:
    """Shard files an index lists. Each entry must be a file name relative to the index's folder: an
    absolute path or one climbing out with ``..`` is refused (an index never needs either)."""
    try:
        weight_map = _read_json(index)["weight_map"]  # type: ignore[index]
        shards = list(dict.fromkeys(weight_map.values()))  # first-appearance order, no duplicates
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UnreadableCheckpointError(f"Cannot read the shard index {index}: {str(e)[:200]}. Re-download the "
                                        "model.", index) from None
    folder = os.path.dirname(index)
    for shard in shards:
        if not isinstance(shard, str) or not shard:
            raise UnreadableCheckpointError(f"The shard index {index} lists {str(shard)[:80]!r}, not a file name. "
                                            "Re-download the model.", index)
        norm = os.path.normpath(shard)
        if os.path.isabs(shard) or norm == ".." or norm.startswith(".." + os.sep):
            raise UnreadableCheckpointError(
                f"The shard index {index} lists {shard[:200]!r}, outside the model's folder; shards must sit "
                "next to their index. Re-download the model or fix the index.", index)
        if _weight_suffix(os.path.basename(norm)) is None:  # e.g. the index itself: read as weights, it is noise
            raise UnreadableCheckpointError(
                f"The shard index {index} lists {shard[:200]!r}, which is not a weight file (.safetensors, .bin). "
                "Re-download the model or fix the index.", index)
    return tuple(os.path.join(folder, s) for s in sorted(shards))


# --- folders -----------------------------------------------------------------------------------------

def _weights_in(folder: str, listing: set[str] | None = None) -> list[str]:
    try:
        names = sorted(os.listdir(folder) if listing is None else listing)
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and _weight_suffix(n) and not NOT_MODELS.match(n)
            and os.path.isfile(os.path.join(folder, n))]


def _model_files(folder: str, loose: bool, listing: set[str] | None = None) -> tuple[str, tuple[str, ...]] | None:
    """(format, files) of the model stored directly in ``folder``, or None.

    ``loose`` also accepts a single weight file of any name (used for children of a folder of models).
    ``listing``: the folder's entries when the caller has listed it already (one listing per folder).
    """
    names = set(os.listdir(folder)) if listing is None else listing
    for index_name in ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json",
                       "pytorch_model.bin.index.json", "diffusion_pytorch_model.bin.index.json"):
        if index_name in names:
            fmt = "safetensors-sharded" if ".safetensors." in index_name else "torch-sharded"
            return fmt, _from_index(os.path.join(folder, index_name))
    for file_name, fmt in _STANDARD:
        if file_name in names:
            return fmt, (os.path.join(folder, file_name),)
    weights = _weights_in(folder, names)
    # Variants (model.fp16.safetensors) and other indexes (consolidated.safetensors.index.json).
    indexes = sorted(n for n in names if n.endswith((".safetensors.index.json", ".bin.index.json")))
    if indexes:
        fmt = "safetensors-sharded" if ".safetensors." in indexes[0] else "torch-sharded"
        return fmt, _from_index(os.path.join(folder, indexes[0]))
    shard_stems = {w: m["stem"] for w in weights if (m := _SHARD.match(w))}
    shards = list(shard_stems)
    if shards and len(set(shard_stems.values())) == 1 and len(shards) == len(weights) and not (
            shards[0].endswith(".gguf") and any(os.path.isdir(os.path.join(folder, n)) for n in names)):
        # (the parts of a split GGUF beside model folders are one model of that folder of models: path())
        fmt = _sharded_format(shards[0])
        return fmt, tuple(os.path.join(folder, s) for s in sorted(shards))
    generic = [w for w in weights if GENERIC_STEMS.match(w)]
    if len(generic) >= 1 and (len(weights) == 1 or len(generic) == len(weights)):
        # prefer safetensors, then the shortest name (model.safetensors before model.fp16.safetensors)
        best = sorted(generic, key=lambda w: (not w.endswith(".safetensors"), len(w), w))[0]
        return _container(best), (os.path.join(folder, best),)
    if len(weights) == 1 and (loose or "config.json" in names):
        w = weights[0]
        return _container(w), (os.path.join(folder, w),)
    return None


def _sharded_format(shard: str) -> str:
    """The format of a model stored in numbered shards (``-00001-of-00003``): GGUF files split by llama.cpp's
    ``gguf-split`` are read by the GGUF reader, which takes every file of the model."""
    if shard.endswith(".gguf"):
        return "gguf"
    return "safetensors-sharded" if shard.endswith(".safetensors") else "torch-sharded"


def _components(folder: str, listing: set[str] | None = None) -> list[str]:
    out = []
    for name in sorted(os.listdir(folder) if listing is None else listing):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub) and not name.startswith("."):
            try:
                if _model_files(sub, loose=False):
                    out.append(name)
            except UnreadableCheckpointError:
                out.append(name)  # a component with a broken index is still a component; reported when used
            except OSError:
                continue  # an unreadable sub-folder is reported where it is listed as a model, not here
    return out


@dataclasses.dataclass
class _AdapterWalk:
    """The state of one walk for named adapters (:meth:`_Finder.named_adapters`): the real path it started
    from, the real folders it has entered, and how many more folders it may list."""

    top: str
    entered: set[str]
    budget: int


class _Finder:
    def __init__(self, component: str | None, roots: Roots | None = None) -> None:
        self.component = component
        self.roots = roots
        self.models: list[ModelRef] = []
        self.problems: list[Problem] = []
        #: Stable Diffusion LoRA file -> the legacy hash of its base (kohya-ss ``ss_sd_model_hash``).
        self.legacy_hashes: dict[str, str] = {}

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def add(self, model_id: str, path: str, fmt: str, files: tuple[str, ...], component: str | None = None,
            meta_folders: Sequence[str] = (), base_id: str | None = None) -> None:
        try:
            fmt = _check_files(files, fmt, self.roots)
        except UnreadableCheckpointError as e:
            self.problem(e.path or path, f"Skipped model {model_id!r}: {e.message}")
            return
        base_source = None
        kinds: tuple[str, ...] = ()
        if fmt.startswith("sd-lora"):  # the base kohya-ss recorded in the header (names only, no tensor data)
            header = read_header(files[0])
            meta = header.metadata
            kinds = sd_lora.module_kinds(t.name for t in header.tensors)
            name, legacy = meta.get("ss_sd_model_name"), meta.get("ss_sd_model_hash")
            base_id, base_source = (name[:500], "ss_sd_model_name") if name else (None, None)
            if legacy and re.fullmatch(r"[0-9a-fA-F]{8}", legacy):
                self.legacy_hashes[files[0]] = legacy.lower()
        declared = _declared_parent(*meta_folders, roots=self.roots) if meta_folders else None
        adapter = fmt.startswith(("peft-lora", "sd-lora"))
        if adapter and declared is None:
            declared = base_id  # an adapter's base is part of its format, so it is declared too
        arch = _architecture(*meta_folders, roots=self.roots) if meta_folders and not adapter else None
        self.models.append(ModelRef(id=display_id(model_id), path=path, format=fmt, files=files, component=component,
                                    base_id=base_id, declared_parent=declared, architecture=arch,
                                    base_source=base_source, adapter_kinds=kinds))

    def folder_model(self, folder: str, model_id: str, loose: bool, names: set[str]) -> bool:
        """Add the model stored in ``folder`` (or a problem about it), whose entries are ``names`` (listed
        once by the caller, who walks them for named adapters when this is False: not one model)."""
        try:
            return self._folder_model(folder, model_id, loose, names)
        except UnreadableCheckpointError as e:  # a broken shard index
            self.problem(e.path or folder, f"Skipped model {model_id!r}: {e.message}")
            return True

    def _folder_model(self, folder: str, model_id: str, loose: bool, names: set[str]) -> bool:
        if "adapter_config.json" in names:
            self.named_adapters(folder, model_id, names)
            return self.adapter(folder, model_id)
        # Only model_index.json marks a diffusers repository: a folder of model folders looks the same.
        is_diffusers = "model_index.json" in names
        # Components matter only for a diffusers repository or when one is asked for: a folder of 10,000
        # model folders was otherwise probed twice (each sub-folder listed as a component, then as a model).
        # One listing of the folder serves every check below.
        comps = _components(folder, names) if is_diffusers or self.component else []
        if self.component and self.component in comps:
            return self.component_model(folder, model_id, self.component)
        found = _model_files(folder, loose, names)
        if found and not is_diffusers:
            self.add(model_id, folder, found[0], found[1], meta_folders=(folder,))
            return True
        if is_diffusers:
            denoiser = next((c for c in DENOISERS if c in comps), None) if self.component is None else None
            if denoiser is not None:
                return self.component_model(folder, model_id, denoiser)
            if comps:
                wanted = f"component {self.component!r} is not there" if self.component else "no component was chosen"
                self.problem(folder, f"{folder} is a multi-component (diffusers) repository and {wanted}. "
                                     f"Its components: {', '.join(comps)}. Choose one with component=... "
                                     "(--component).")
                return True
        if found:
            self.add(model_id, folder, found[0], found[1], meta_folders=(folder,))
            return True
        return False

    def named_adapters(self, folder: str, model_id: str, names: set[str]) -> bool:
        """Add the named adapters PEFT saved beside (or instead of) a folder's ``default`` adapter.

        ``PeftModel.save_pretrained`` writes the adapter named ``default`` at the top of the folder and every
        other adapter in ``os.path.join(folder, name)`` (PEFT 0.21 ``peft_model.py``; docs, "save_pretrained":
        ``selected_adapters``), each with its own ``adapter_config.json``. A name may hold ``/`` (PEFT accepts
        ``x/y``), which nests its folder, inside the adapter ``x`` or inside a plain folder ``x``: the walk goes
        down every sub-folder, at most :data:`NAMED_ADAPTER_DEPTH` levels. Each is a model of its own
        (``folder/x/y``); without this the sub-folders were neither read nor reported. Asked of a model's
        folder (beside its ``default``) and of a set's entry that holds no model itself (adapters saved
        without a ``default``), never of the set's own folder, whose sub-folders are its models. True when
        the folder held at least one.

        A walk lists at most :data:`NAMED_ADAPTER_FOLDERS` folders: an entry holding a large tree of other
        folders costs that much, and where the walk stops there is a problem saying so (never a silent skip).
        A link to a folder the walk reads anyway (inside the starting folder) or has entered is said and not
        followed: two folders each holding k links to the other were walked k**8 times (four links each: 22
        CPU s; six: past 300 s).
        """
        top = os.path.realpath(folder)
        walk = _AdapterWalk(top=top, entered={top}, budget=NAMED_ADAPTER_FOLDERS)
        found = self._named_adapters(folder, top, model_id, names, 0, walk)
        if walk.budget < 0:
            self.problem(folder, f"Stopped looking for named PEFT adapters in {folder} after {NAMED_ADAPTER_FOLDERS:,} "
                                 "folders: the rest of its tree was not looked at. Give the adapters saved there a "
                                 "folder of their own in the set (or move them up).")
        return found

    def _named_adapters(self, folder: str, real_folder: str, model_id: str, names: set[str], depth: int,
                        walk: _AdapterWalk) -> bool:
        """:meth:`named_adapters` below ``folder`` (whose real path is ``real_folder``), ``depth`` folders down."""
        found = False
        again: list[tuple[str, str]] = []  # links to folders the walk reads anyway: said once per folder
        for name in sorted(names):
            if walk.budget < 0:
                break
            sub = os.path.join(folder, name)
            if name.startswith("."):
                continue
            # A plain sub-folder's real path is its parent's plus its name: resolving it would cost a stat per
            # folder of the path, at every level; only a link is resolved.
            real = os.path.join(real_folder, name)
            if os.path.islink(sub):
                # A linked sub-folder is followed as the set's own entries are (it was skipped without a word):
                # one leaving the roots is refused before anything under it is looked at, one pointing back
                # at this folder or above it (a loop: the same adapter again, under another id) is said so.
                real = os.path.realpath(sub)
                if self.roots is not None and not self.roots.contains(sub):
                    self.problem(sub, self.roots.refusal(sub) or "")
                    continue
                if at_or_below(real_folder, real):
                    self.problem(sub, f"Skipped {sub}: it is a symbolic link back to {real}, which holds it (a "
                                      "loop), so it is not a named adapter of its own. Remove the link.")
                    continue
                if os.path.isdir(real) and (at_or_below(real, walk.top) or real in walk.entered):
                    again.append((sub, real))
                    continue
            try:
                if not os.path.isdir(sub) or real in walk.entered:  # entered through a link already
                    continue
                walk.budget -= 1
                if walk.budget < 0:
                    break
                inner = set(os.listdir(sub))
            except OSError:
                continue
            is_adapter = "adapter_config.json" in inner
            if depth >= NAMED_ADAPTER_DEPTH:
                if is_adapter or any(os.path.isfile(os.path.join(sub, n, "adapter_config.json")) for n in inner):
                    self.problem(sub, f"Skipped {sub}: a PEFT adapter in it is more than {NAMED_ADAPTER_DEPTH} "
                                      "folders below its model's folder, deeper than named adapters are looked "
                                      "for. Move it up or give it a folder of its own.")
                continue
            if is_adapter and self.roots is not None and not self.roots.contains(sub):
                self.problem(sub, self.roots.refusal(sub) or "")
                continue
            sub_id = f"{model_id}/{name}"
            if is_adapter:
                found = self.adapter(sub, sub_id) or found
            # PEFT nests the adapter ``name/x`` in this one's folder (or in a plain folder ``name``).
            walk.entered.add(real)
            found = self._named_adapters(sub, real, sub_id, inner, depth + 1, walk) or found
        if again:
            more = f" (and {len(again) - 1} more such links in {folder})" if len(again) > 1 else ""
            self.problem(again[0][0], f"Skipped {again[0][0]}: it is a symbolic link to {again[0][1]}, which is read "
                                      f"under its own name (or by another link) already{more}, so it is not a named "
                                      "adapter of its own. Remove the link.")
        return found

    def component_model(self, folder: str, model_id: str, component: str) -> bool:
        sub = os.path.join(folder, component)
        fmt, files = _model_files(sub, loose=False) or ("", ())
        self.add(model_id, sub, fmt, files, component, meta_folders=(folder, sub))
        return True

    def adapter(self, folder: str, model_id: str) -> bool:
        try:
            config = _read_json(os.path.join(folder, "adapter_config.json"), self.roots)
        except (OSError, ValueError) as e:
            self.problem(folder, f"Cannot read {folder}/adapter_config.json: {str(e)[:200]}. Fix or remove the "
                                 "adapter.")
            return True
        if not isinstance(config, dict):
            self.problem(folder, f"{folder}/adapter_config.json is not a JSON object. Fix or remove the adapter.")
            return True
        peft_type = str(config.get("peft_type", "LORA"))[:40].upper()
        if peft_type not in PEFT_TYPES:
            self.problem(folder, peft_refusal(folder, peft_type, config.get("base_model_name_or_path")))
            return True
        for name in ("adapter_model.safetensors", "adapter_model.bin"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                base = config.get("base_model_name_or_path") or None
                base = base[:500] if isinstance(base, str) else None
                # the scheme names a non-LoRA type for people and for the adapter detector (not low rank)
                fmt = "peft-lora" if peft_type == "LORA" else f"peft-lora:{peft_type.lower()}"
                self.add(model_id, folder, fmt, (path,), meta_folders=(folder,), base_id=base)
                return True
        self.problem(folder, f"{folder} has adapter_config.json but no adapter_model.safetensors or .bin.")
        return True

    def hf_cache_entry(self, entry: str) -> None:
        parts = os.path.basename(entry).split("--")
        model_id = parts[1] if len(parts) == 2 else f"{parts[1]}/{'--'.join(parts[2:])}"
        snapshots = os.path.join(entry, "snapshots")
        snapshot = None
        try:
            rev = _read_text(os.path.join(entry, "refs", "main"), 1024, self.roots).strip()
            # A revision is a commit hash: a name with a separator or ".." would point elsewhere.
            if rev and os.sep not in rev and "/" not in rev and rev not in (".", "..") \
                    and os.path.isdir(os.path.join(snapshots, rev)):
                snapshot = os.path.join(snapshots, rev)
        except OSError:
            pass
        if snapshot is None:
            revs = [os.path.join(snapshots, r) for r in os.listdir(snapshots)] if os.path.isdir(snapshots) else []
            revs = [r for r in revs if os.path.isdir(r)]
            snapshot = max(revs, key=os.path.getmtime) if revs else None
        if snapshot is None or not self.folder_model(snapshot, model_id, True, set(os.listdir(snapshot))):
            self.problem(entry, f"The cache entry {entry} has no downloaded weights (no complete snapshot). "
                                "Download the model again or remove the entry.")

    def file(self, path: str, model_id: str | None = None) -> None:
        name = os.path.basename(path)
        if name.endswith(".index.json"):
            fmt = "safetensors-sharded" if ".safetensors." in name else "torch-sharded"
            try:
                files = _from_index(path)
            except UnreadableCheckpointError as e:
                self.problem(path, e.message)
                return
            folder = os.path.dirname(os.path.abspath(path))
            self.add(model_id or os.path.basename(folder), folder, fmt, files, meta_folders=(folder,))
            return
        suffix = _weight_suffix(name)
        if suffix is None:
            self.problem(path, f"{path} is not a checkpoint format we read ({FORMATS_HELP}).")
            return
        meta: tuple[str, ...] = ()
        if model_id is None:
            stem = file_stem(path)
            folder = os.path.dirname(os.path.abspath(path))
            if GENERIC_STEMS.match(stem):  # .../llama/model.safetensors: the folder is the model
                model_id, meta = os.path.basename(folder), (folder,)
            else:
                model_id = stem
        fmt = _container(name)
        self.add(model_id, os.path.abspath(path), fmt, (os.path.abspath(path),), meta_folders=meta)

    def child(self, full: str, name: str) -> None:
        """One entry of a folder of models."""
        if self.roots is not None and not self.roots.contains(full):
            self.problem(full, self.roots.refusal(full) or "")
            return
        if os.path.isdir(full):
            if name.startswith("models--"):
                self.hf_cache_entry(full)
                return
            names = set(os.listdir(full))
            if not self.folder_model(full, name, True, names) and not self.named_adapters(full, name, names):
                self.problem(full, f"{full} holds no model we can read ({FORMATS_HELP}).")
        elif _weight_suffix(name) and not NOT_MODELS.match(name):
            if os.path.islink(full) or os.path.lexists(full) and not os.path.exists(full):
                why = not_a_regular_file(full)
                if why:
                    self.problem(full, f"Skipped {full}: {why}.")
                    return
            self.file(full, file_stem(name))

    def path(self, path: str) -> None:
        if os.path.isfile(path):
            self.file(path)
            return
        path = os.path.abspath(path)
        name = os.path.basename(path.rstrip(os.sep))
        if name.startswith("models--"):
            self.hf_cache_entry(path)
            return
        listing = os.listdir(path)  # once: the checks below and the walk of its entries share it
        hub = os.path.join(path, "hub")  # HF_HOME layout: the cache root is HF_HOME/hub
        if os.path.isdir(hub) and not any(e.startswith("models--") for e in listing):
            entries = sorted(e for e in os.listdir(hub) if e.startswith("models--"))
            if entries:
                for e in entries:
                    self.hf_cache_entry(os.path.join(hub, e))
                return
        if self.folder_model(path, name, False, set(listing)):
            return
        before = len(self.models) + len(self.problems)
        children = sorted(listing)
        # GGUF files split by gguf-split sit beside other models' files: each split model is one model,
        # named by the shards' common stem (safetensors / bin shards only come inside a model's folder).
        split: dict[str, list[str]] = {}
        for child in children:
            m = _SHARD.match(child)
            if m and child.endswith(".gguf") and os.path.isfile(os.path.join(path, child)):
                split.setdefault(m["stem"], []).append(child)
        for stem, shards in split.items():  # (add() checks every part against the roots)
            files = tuple(os.path.join(path, s) for s in sorted(shards))
            self.add(stem, files[0], "gguf", files)
        in_split = {s for shards in split.values() for s in shards}
        for child in children:
            if child.startswith(".") or child in in_split:
                continue
            full = os.path.join(path, child)
            try:
                self.child(full, child)
            except OSError as e:  # one unreadable sub-folder costs that sub-folder, not the set
                self.problem(full, f"Cannot read {full}: {e.strerror or e}. Check its permissions, or remove it.")
        if len(self.models) + len(self.problems) == before:
            self.problem(path, f"{path} holds nothing we can read: expected {FORMATS_HELP}.")


def discover(paths: Sequence[str | os.PathLike[str]], component: str | None = None,
             roots: Sequence[str | os.PathLike[str]] | None = None) -> Discovery:
    """Resolve user paths into models, reading at most file headers.

    Parameters
    ----------
    paths : sequence of str or PathLike
        Each a model (file or folder) or a folder of models (see the module docstring for what is
        recognised).
    component : str, optional
        For multi-component (diffusers) repositories: the sub-folder to use (default: the denoiser,
        ``unet`` if present, else ``transformer``).
    roots : sequence of path, optional
        Confinement (see :mod:`mother_core.io.confine`): every path, weight file, snapshot, shard and
        metadata file must resolve (symlinks followed) inside one of these folders; the others are
        reported as problems and never opened. None (default): no confinement.

    Returns
    -------
    Discovery
        The models found, and a :class:`~mother_core.io.base.Problem` for every input that was skipped
        (unreadable file, unrecognised folder, missing component).

    Raises
    ------
    ModelNotFoundError
        A path does not exist, or no model at all was found.

    Examples
    --------
    >>> found = discover(["zoo/"])  # doctest: +SKIP
    >>> [m.id for m in found.models]  # doctest: +SKIP
    ['child-a', 'child-b', 'root']
    """
    confined = Roots.of(roots)
    finder = _Finder(component, confined)
    for p in paths:
        p = os.fspath(p)
        if confined is not None and not confined.contains(p):
            finder.problem(p, confined.refusal(p) or "")
            continue
        if not os.path.exists(p):
            why = not_a_regular_file(p)
            if os.path.lexists(p) and why:
                finder.problem(p, f"Cannot read {p}: {why}.")
                continue
            raise ModelNotFoundError(
                f"{p} does not exist. Check the path (and that the model was downloaded), or remove it.", p
            )
        try:
            finder.path(p)
        except OSError as e:  # unreadable folder (permissions, a file vanishing while listed)
            finder.problem(p, f"Cannot read {p}: {e.strerror or e}. Check its permissions, or remove it from the set.")
    seen: dict[str, ModelRef] = {}
    unique: list[ModelRef] = []
    for m in finder.models:
        if m.id in seen and seen[m.id].files == m.files:
            continue  # the same model reached twice (a path given twice, or inside a given folder)
        if m.id in seen:
            # One model reported, not the run ended: a stray copy ("x.safetensors" beside folder "x") must
            # not cost the other models of the set. The first found (sorted order) is read.
            finder.problem(m.path, f"Skipped {m.path}: another model of the set, {seen[m.id].path}, has the same id "
                                   f"{m.id!r}. Rename one of the folders (or files) so every model has its own name.")
            continue
        seen[m.id] = m
        unique.append(m)
    if not unique:
        # What went wrong first (a corrupt file, an empty folder), then the formats, said once: after a
        # 600-character list the problem itself was easy to miss.
        # Each empty subfolder's problem names the formats too: a folder of three such folders listed them four
        # times, a wall of red text.
        details = " ".join(p.message.replace(f": expected {FORMATS_HELP}.", ".").replace(f" ({FORMATS_HELP})", "")
                           for p in finder.problems[:5])
        raise ModelNotFoundError(
            f"No model found in {', '.join(os.fspath(p) for p in paths)}."
            + (f" {details}" if details else "") + f" We read {FORMATS_HELP}.",
            os.fspath(paths[0]) if paths else None,
        )
    ids = list(seen)
    models = [
        m if not needs_base(m) or m.base_id is None
        else _with_base(m, match_model_id(m.base_id, [i for i in ids if i != m.id]) or m.base_id)
        for m in unique
    ]
    models = _bases_by_hash(models, finder.legacy_hashes)
    return Discovery(models=models, problems=finder.problems)


def _with_base(m: ModelRef, base_id: str) -> ModelRef:
    return dataclasses.replace(m, base_id=base_id)


def _bases_by_hash(models: list[ModelRef], legacy: dict[str, str]) -> list[ModelRef]:
    """Stable Diffusion LoRA files whose ``ss_sd_model_name`` names no model of the set, given the
    single-file model whose legacy hash (:func:`.sd_lora.legacy_hash`: 64 KiB of the file, the only tensor
    bytes discovery reads) equals their ``ss_sd_model_hash``. A hash shared by several files matches none."""
    ids = [m.id for m in models]
    todo = [i for i, m in enumerate(models) if m.files and m.files[0] in legacy
            and match_model_id(m.base_id, [x for x in ids if x != m.id]) is None]
    if not todo:
        return models
    hashes: dict[str, list[str]] = {}
    for m in models:
        if len(m.files) == 1 and not needs_base(m):
            h = sd_lora.legacy_hash(m.files[0])
            if h is not None:
                hashes.setdefault(h, []).append(m.id)
    out = list(models)
    for i in todo:
        hits = hashes.get(legacy[models[i].files[0]], [])
        if len(hits) == 1:
            out[i] = dataclasses.replace(models[i], base_id=hits[0], base_source="ss_sd_model_hash")
    return out
