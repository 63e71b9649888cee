"""Generate a typed model set: run the plan's ops in order, write the folders and ``truth.json``.

``truth.json``::

    {"edges": [{"parent": id, "child": id, "relation": r}, ...],   # one entry per parent of a merge
     "families": {id: family index},
     "meta": {...}}                                                  # settings, per-model details

Model folders are named by random-looking ids (``m-3fa9c2``); no file or folder name tells lineage.
Metadata that the tools write stays (``config.json``, ``adapter_config.json``, GGUF ``general.*``
keys, mergekit's card); fine-tunes declare their base in a model card only for some models, as on the
hub, where about half of the reuse edges are undeclared (method.md).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mother_core.errors import InputError
from mother_core.relations import Relation

from ..splits import model_id
from . import ops
from .plan import PROFILES, TYPED_SIZES, TypedNode, plan_typed, profile_for

ProgressFn = Callable[[int, int, str], None]
SPLIT_NAME = "typed"
# Ops whose output is a full-precision transformers folder that later ops may start from.
_TRAINABLE = {"root", "finetune", "lora", "merge", "prune", "distill"}
# Hub-style ids for adapters whose config names a base that is not in the set.
EXTERNAL_BASES = ("{arch}-tiny-base", "acme-labs/{arch}-mini", "/home/user/checkpoints/{arch}-base")


@contextmanager
def _quiet_tools() -> Iterator[None]:
    """No hub calls, no progress bars, no per-call warnings from transformers, peft or mergekit."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    loggers = [logging.getLogger(n) for n in ("mergekit", "peft", "optimum.quanto", "bitsandbytes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _card(mid: str, arch: str, base: str | None, relation: str | None) -> str:
    """A hub-style model card; ``base`` (when declared) goes into ``base_model`` with its relation."""
    front = ["---", "library_name: transformers", "tags:", f"- {arch}"]
    if base is not None and relation is not None:
        # Cards speak the hub's vocabulary (a merged LoRA, a pruned child: "finetune").
        hub = Relation(relation).info.hub_relation or "finetune"
        front += [f"base_model: {base}", f"base_model_relation: {hub}"]
    return "\n".join(front + ["---", "", f"# {mid}", "", "A small language model.", ""])


def _declared_base(node: TypedNode, parent_id: str, rng: np.random.Generator) -> str:
    if node.params.get("declared_base") == "parent":
        return parent_id
    return EXTERNAL_BASES[int(rng.integers(len(EXTERNAL_BASES)))].format(arch=node.arch)


def _run_op(node: TypedNode, folders: dict[int, Path], ids: dict[int, str], out: Path,
            rng: np.random.Generator, declared_bases: dict[int, list[str]]) -> dict[str, Any]:
    """Make one model into ``out``; returns what its log records."""
    par = [folders[i] for i in node.parents]
    op = node.op
    if op == "root":
        return ops.make_root(node, out)
    if op == "finetune":
        return ops.make_finetune(node, par[0], out)
    if op == "adapter":
        declared = _declared_base(node, ids[node.parents[0]], rng)
        return {**ops.make_adapter(node, par[0], out, declared, merged=False), "declared_base": declared}
    if op == "lora":
        src = node.params.get("from_adapter")
        if src is not None:
            return ops.merge_adapter(node, par[0], folders[src], out)
        return ops.make_adapter(node, par[0], out, "", merged=True)
    if op == "merge":
        return ops.make_merge(node, {i: folders[i] for i in node.parents}, ids, out)
    if op == "cast":
        return ops.make_cast(node, par[0], out)
    if op == "bin":
        return ops.make_bin(node, par[0], out)
    if op == "copy":
        return ops.make_copy(node, par[0], out)
    if op == "fused":
        return ops.make_fused(node, par[0], out)
    if op == "prune":
        return ops.make_prune(node, par[0], out)
    if op == "vocab":
        return ops.make_vocab(node, par[0], out)
    if op == "classify":
        return ops.make_classifier(node, par[0], out)
    if op == "qlora":
        return ops.make_qlora(node, par[0], out)
    if op == "distill":
        return ops.make_distill(node, par[0], out)
    if op in ("gguf", "quanto", "bnb", "hqq"):
        from . import quant

        return quant.make_quantized(node, par[0], out, ids, declare_name=bool(rng.random() < 0.5),
                                    base_models=declared_bases.get(node.parents[0], []))
    raise ValueError(f"unknown op {op!r}")


def _public(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly op settings for truth.json's meta."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k == "task":
            out[k] = v.describe()
        elif k == "size":  # (a dense model's zero experts left out: the A-D sets' truth files as they were)
            out[k] = {f: x for f, x in v.__dict__.items() if f != "experts" or x}
        elif v is not None:
            out[k] = v
    return out


def generate_typed(
    out_dir: Path,
    *,
    size: str = "full",
    seed: int = 0,
    progress: ProgressFn | None = None,
    threads: int | None = 1,
    name: str = SPLIT_NAME,
    profile: str = "auto",
) -> Path:
    """Make a typed model set with the real tools into ``out_dir / name``.

    Parameters
    ----------
    out_dir : Path
        Parent folder; the set goes to ``out_dir / name`` (replaced if it exists).
    size : {"full", "small"}
        ``full``: four architectures, about 80 models; ``small``: three, about 45 (tests, demo).
    seed : int
        Same seed, same set. Even seeds use generator profile A (fit thresholds on these), odd seeds
        profile B (other architectures, widths, ranks, merge methods and weights, quantization types:
        report on these); see :data:`~mother_zoo.typed.plan.PROFILES`.
    progress : callable, optional
        ``progress(done, total, model_id)`` after every model.
    threads : int or None
        Torch intra-op threads while generating (restored afterwards).
    name : str
        Folder name of the set.
    profile : {"auto", "A", "B", "C", "D", "E", "S"}
        Generator profile; ``auto`` follows the seed's parity (A even, B odd). ``C`` is made to differ
        from both as sets made elsewhere do (other architectures, bf16 storage, rsLoRA / DoRA, merges of
        three or four models with other mergekit methods, other quantizers: :mod:`.plan`); ``D`` differs
        from all three (other architectures, per-model storage dtypes, sharding, vocabulary growth, a
        classifier head, negative task arithmetic, merges of merges, QLoRA, hqq: :mod:`.plan`); ``E`` is made of
        mixture-of-experts families (Mixtral, Qwen3-MoE, OLMoE; :mod:`.plan`); ``S`` holds layer stacks (mergekit
        passthrough) among the other relations (:mod:`.plan`).

    Returns
    -------
    Path
        The set's folder (model folders plus ``truth.json``).

    Raises
    ------
    InputError
        For an unknown size or profile.
    """
    if size not in TYPED_SIZES:
        raise InputError(f"Unknown size {size!r}: choose from {', '.join(TYPED_SIZES)}.")
    if profile != "auto" and profile not in PROFILES:
        raise InputError(f"Unknown profile {profile!r}: choose from auto, {', '.join(PROFILES)}.")
    nodes = plan_typed(size, seed, profile)
    t0 = time.perf_counter()
    set_dir = Path(out_dir) / name
    if set_dir.exists():
        shutil.rmtree(set_dir)
    set_dir.mkdir(parents=True)
    taken: set[str] = set()
    ids: dict[int, str] = {}
    for n in nodes:
        ids[n.index] = model_id(f"{name}-{size}", seed, n.index, taken)
        taken.add(ids[n.index])
    folders = {n.index: set_dir / ids[n.index] for n in nodes}
    rng = np.random.default_rng(seed + 7919)  # declarations: which cards name their base
    models_meta: dict[str, dict[str, Any]] = {}
    declared_bases: dict[int, list[str]] = {}  # what each model's card declares (GGUF copies it)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with _quiet_tools():
            for done, n in enumerate(nodes, 1):
                t1 = time.perf_counter()
                log = _run_op(n, folders, ids, folders[n.index], rng, declared_bases)
                mid = ids[n.index]
                declared = None
                if n.op in ("finetune", "lora", "prune", "distill", "cast", "vocab", "classify", "qlora") \
                        and rng.random() < 0.5:
                    declared = [ids[n.parents[0]]]
                    (folders[n.index] / "README.md").write_text(_card(mid, n.arch, declared[0], n.relation))
                elif n.op == "merge" and rng.random() < 0.6:  # mergekit writes its card; some uploads drop it
                    declared = [ids[i] for i in n.parents]
                    (folders[n.index] / "README.md").write_text(ops.merge_card(n, ids))
                if declared:
                    declared_bases[n.index] = declared
                models_meta[mid] = {
                    "family": n.family, "architecture": n.arch, "op": n.op, "relation": n.relation,
                    "parents": [ids[i] for i in n.parents], "seed": n.seed, "params": _public(n.params),
                    "declared_in_card": declared, "seconds": round(time.perf_counter() - t1, 3),
                    "log": {k: v for k, v in log.items() if k in ("loss_start", "loss_end", "eval_loss_before",
                                                                  "eval_loss_after", "declared_base", "steps",
                                                                  "general_name", "tensor_types")},
                }
                if progress is not None:
                    progress(done, len(nodes), mid)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    edges = [{"parent": ids[p], "child": ids[n.index], "relation": n.relation} for n in nodes for p in n.parents]
    families = {ids[n.index]: n.family for n in nodes}
    meta = {
        "split": name, "size": size, "seed": seed, "profile": profile_for(seed, profile).name,
        "description": "typed model set made with transformers, peft, mergekit, gguf, optimum-quanto, bitsandbytes",
        "n_models": len(nodes), "n_edges": len(edges),
        "relations": {
            r: sum(1 for e in edges if e["relation"] == r) for r in sorted({str(e["relation"]) for e in edges})
        },
        "n_families": len(set(families.values())),
        "architectures": sorted({n.arch for n in nodes}),
        "models": models_meta, "generation_seconds": round(time.perf_counter() - t0, 2), "threads": threads,
        "tools": _tool_versions(), "torch_version": torch.__version__, "platform": platform.machine(),
    }
    import json

    (set_dir / "truth.json").write_text(
        json.dumps({"edges": edges, "families": families, "meta": meta}, indent=1) + "\n"
    )
    return set_dir


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("transformers", "peft", "mergekit", "gguf", "optimum-quanto", "bitsandbytes", "hqq"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
