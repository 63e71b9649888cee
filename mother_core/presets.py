"""The paper's in-the-wild model families (docs/METHOD.md, "Data used in the paper"), and finding them locally.

A :class:`Preset` lists the hub ids of a family, its known tree and the kurtosis regime the paper used.
:func:`find_in_hf_cache` looks for those weights in the local Hugging Face cache (no network, ever): the
app runs a preset when everything is there and otherwise says exactly what is missing.

Examples
--------
>>> p = get_preset("llama2")
>>> len(p.hub_ids), len(p.edges), p.regime
(5, 4, 'specialization')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CachedModel", "Preset", "PresetAvailability", "PRESETS", "get_preset", "find_in_hf_cache",
    "scan_hf_cache",
]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


@dataclass(frozen=True)
class Preset:
    """A model family with a known lineage.

    Attributes
    ----------
    key : str
        Short name (``"llama2"``).
    title : str
        What the app shows.
    hub_ids : tuple of str
        The models, as hub ids.
    edges : tuple of (str, str)
        The known tree, (parent, child) hub ids.
    regime : str
        ``"specialization"`` or ``"generalization"`` (docs/METHOD.md, "Signals" 2).
    component : str or None
        Sub-folder to compare for multi-component repositories (``"unet"`` for Stable Diffusion).
    aliases : dict of str to tuple of str
        Other hub ids under which the same weights are published (renamed or mirrored repositories).
    alternative_edges : tuple of (str, str)
        Edges that some sources state instead (to score both readings).
    note : str
        A caveat for people.
    """

    key: str
    title: str
    hub_ids: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    regime: str
    component: str | None = None
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    alternative_edges: tuple[tuple[str, str], ...] = ()
    note: str = ""

    def __hash__(self) -> int:  # aliases is a dict: hash on the key only
        return hash(self.key)


_LLAMA, _CHAT = "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"
_CODE, _PY = "codellama/CodeLlama-7b-hf", "codellama/CodeLlama-7b-Python-hf"
_INSTR = "codellama/CodeLlama-7b-Instruct-hf"
_SD = [f"CompVis/stable-diffusion-v1-{i}" for i in (1, 2, 3, 4)]
_SD5 = "stable-diffusion-v1-5/stable-diffusion-v1-5"

PRESETS: tuple[Preset, ...] = (
    Preset(
        key="llama2",
        title="Llama 2 7B family (Llama 2 -> chat, CodeLlama, CodeLlama-Python, CodeLlama-Instruct)",
        hub_ids=(_LLAMA, _CHAT, _CODE, _PY, _INSTR),
        edges=((_LLAMA, _CHAT), (_LLAMA, _CODE), (_LLAMA, _PY), (_CODE, _INSTR)),
        regime="specialization",
        aliases={_LLAMA: ("meta-llama/Llama-2-7b",), _CHAT: ("meta-llama/Llama-2-7b-chat",)},
        note="The paper recovered 4/4 edges. About 13 GB per model in fp16.",
    ),
    Preset(
        key="sd1",
        title="Stable Diffusion 1.1 - 1.5 (UNet)",
        hub_ids=(*_SD, _SD5),
        edges=((_SD[0], _SD[1]), (_SD[1], _SD[2]), (_SD[1], _SD[3]), (_SD[3], _SD5)),
        regime="generalization",
        component="unet",
        aliases={_SD5: ("runwayml/stable-diffusion-v1-5", "benjamin-paine/stable-diffusion-v1-5")},
        alternative_edges=((_SD[1], _SD5),),
        note="Continued pre-training: kurtosis rises from parent to child. The v1-5 model card says it "
        "started from v1-2; both readings are scored.",
    ),
)


def get_preset(key: str) -> Preset:
    """The preset called ``key`` (``"llama2"``, ``"sd1"``)."""
    for p in PRESETS:
        if p.key == key:
            return p
    raise KeyError(f"No preset {key!r}; known: {', '.join(p.key for p in PRESETS)}")


@dataclass(frozen=True)
class CachedModel:
    """A model repository in the local Hugging Face cache.

    Attributes
    ----------
    repo_id : str
        Hub id, e.g. ``"meta-llama/Llama-2-7b-hf"``.
    path : str
        The cache entry (``.../models--org--name``): what to pass to ``discover``, which picks the
        revision ``refs/main`` names and uses the hub id as the model id.
    snapshot : str
        The snapshot folder of that revision.
    architecture : str
        From ``config.json`` (``architectures[0]`` or ``model_type``) or diffusers' ``model_index.json``;
        ``"unknown"`` when neither says.
    size_bytes : int
        Size on disk of the repository.
    has_weights : bool
        Whether the snapshot holds weight files (a cache entry may hold only a config).
    """

    repo_id: str
    path: str
    snapshot: str
    architecture: str
    size_bytes: int
    has_weights: bool


@dataclass(frozen=True)
class PresetAvailability:
    """Which models of a preset are in the local cache.

    Attributes
    ----------
    found : dict of str to str
        Hub id (as listed by the preset) -> cache entry folder (``models--org--name``).
    missing : tuple of str
        Hub ids with no usable weights in the cache.
    """

    found: dict[str, str]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.found.items())), self.missing))


def _architecture(snapshot: Path) -> str:
    for name, keys in (("config.json", ("architectures", "model_type")), ("model_index.json", ("_class_name",))):
        try:
            cfg = json.loads((snapshot / name).read_text())
        except (OSError, ValueError):
            continue
        for k in keys:
            v = cfg.get(k) if isinstance(cfg, dict) else None
            if isinstance(v, list) and v:
                return str(v[0])
            if isinstance(v, str) and v:
                return v
    return "unknown"


def _is_sd_single_file(path: Path) -> bool:
    """A Stable Diffusion single-file checkpoint: a ``.ckpt``, or a ``.safetensors`` whose header names
    ``model.diffusion_model.*`` tensors."""
    if path.name.endswith(".ckpt"):
        return True
    if not path.name.endswith(".safetensors"):
        return False
    from mother_core.errors import MotherError
    from mother_core.io.safetensors_header import read_header
    from mother_core.io.sd_single_file import is_single_file

    try:
        return is_single_file(read_header(path).shapes())
    except MotherError:
        return False


def _has_weights(snapshot: Path, component: str | None = None) -> bool:
    """Whether the snapshot holds weights for ``component``: in its sub-folder (diffusers layout), or, for
    the UNet, a single-file checkpoint at the top (read as the diffusers UNet, io/sd_single_file.py)."""
    root = snapshot / component if component else snapshot
    try:
        if any(f.name.endswith(WEIGHT_SUFFIXES) for f in root.rglob("*") if f.is_file() or f.is_symlink()):
            return True
        if component == "unet" and not root.exists():
            return any(_is_sd_single_file(f) for f in snapshot.iterdir())
    except OSError:
        return False
    return False


def scan_hf_cache(cache_dir: str | Path | None = None) -> list[CachedModel]:
    """Every model repository in the local Hugging Face cache (nothing is downloaded).

    Parameters
    ----------
    cache_dir : str or Path, optional
        The hub cache (default: ``$HF_HUB_CACHE``, usually ``~/.cache/huggingface/hub``).

    Returns
    -------
    list of CachedModel
        Sorted by hub id; empty when there is no cache.
    """
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.utils import CacheNotFound
    except ImportError:  # pragma: no cover - huggingface_hub is optional
        return []
    if cache_dir is None:
        cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, not at import time
    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError, ValueError):
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        main = [r for r in repo.revisions if "main" in r.refs]
        rev = main[0] if main else max(repo.revisions, key=lambda r: r.last_modified)
        snap = Path(rev.snapshot_path)
        out.append(CachedModel(repo.repo_id, str(repo.repo_path), str(snap), _architecture(snap),
                               int(repo.size_on_disk), _has_weights(snap)))
    return sorted(out, key=lambda m: m.repo_id)


def find_in_hf_cache(preset: Preset, cache_dir: str | Path | None = None) -> PresetAvailability:
    """Look for every model of ``preset`` in the local Hugging Face cache.

    Parameters
    ----------
    preset : Preset
        The family.
    cache_dir : str or Path, optional
        The hub cache (default: ``$HF_HUB_CACHE``).

    Returns
    -------
    PresetAvailability
        Snapshot folders of the models found (with weights for the preset's component) and the hub ids
        still missing, e.g. to print ``huggingface-cli download <id>`` for each.
    """
    cached = {m.repo_id: m for m in scan_hf_cache(cache_dir)}
    found: dict[str, str] = {}
    missing: list[str] = []
    for hub_id in preset.hub_ids:
        hit = None
        for candidate in (hub_id, *preset.aliases.get(hub_id, ())):
            m = cached.get(candidate)
            if m is not None and _has_weights(Path(m.snapshot), preset.component):
                hit = m.path
                break
        if hit is None:
            missing.append(hub_id)
        else:
            found[hub_id] = hit
    return PresetAvailability(found, tuple(missing))
