"""How each model of a typed set is made, one function per op, each with the real tool.

Every op reads its parents from their folders (written by an earlier op) with ``transformers``'
``from_pretrained`` on a local path, and writes the child's folder the way its tool does:

- training (root, fine-tune, prune, distill): :func:`mother_zoo.training.train` (AdamW), then
  ``save_pretrained``;
- adapters: ``peft`` (``get_peft_model`` + training; ``save_pretrained`` unmerged, or
  ``merge_and_unload`` merged; a shipped adapter is merged back with ``PeftModel.from_pretrained``);
- merges: ``mergekit``'s Python API (``run_merge``) on local folders, ``trust_remote_code`` off;
- dtype casts: ``model.to(dtype).save_pretrained``; a ``.bin`` copy with ``torch.save`` of the state
  dict (what ``save_pretrained(safe_serialization=False)`` wrote); a duplicate with ``shutil.copytree``.

Quantizations (GGUF, quanto, bitsandbytes) live in :mod:`mother_zoo.typed.quant`.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..training import train
from .archs import (
    ARCHS,
    ArchSize,
    distill_loss,
    lm_batch,
    lm_loss,
    model_class,
    new_model,
)
from .plan import BATCH, TypedNode

# Per architecture, the prefix of decoder/encoder layer ``i`` in the state dict.
LAYER_PREFIX = {"llama": "model.layers.{i}.", "qwen2": "model.layers.{i}.", "mistral": "model.layers.{i}.",
                "gpt2": "transformer.h.{i}.", "bert": "bert.encoder.layer.{i}.", "phi3": "model.layers.{i}.",
                "gemma": "model.layers.{i}.", "gpt_neox": "gpt_neox.layers.{i}.", "opt": "model.decoder.layers.{i}.",
                "starcoder2": "model.layers.{i}.", "qwen3": "model.layers.{i}.", "granite": "model.layers.{i}.",
                "olmo2": "model.layers.{i}.", "gemma2": "model.layers.{i}.", "llama_tied": "model.layers.{i}.",
                "qwen3_cls": "model.layers.{i}.", "gemma2_cls": "model.layers.{i}.", "mixtral": "model.layers.{i}.",
                "qwen3_moe": "model.layers.{i}.", "olmoe": "model.layers.{i}."}
#: mergekit methods whose inputs take a ``weight`` (the others weigh them by their own rule: Model Stock by
#: the angle between task vectors, Karcher equally, SCE by task-vector variance).
WEIGHTED_METHODS = ("linear", "ties", "dare_ties", "dare_linear", "task_arithmetic", "breadcrumbs",
                    "breadcrumbs_ties", "della", "della_linear", "multislerp", "nuslerp")


def load(arch: str, folder: Path) -> Any:
    """A full-precision model from its folder (local files only, never remote code).

    Always float32 (``dtype``): transformers 5 loads a bf16 checkpoint in bf16 by default, and training
    there would lose most of AdamW's small updates to rounding.
    """
    return model_class(arch).from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                             dtype=torch.float32)


def save(model: Any, node: TypedNode, out: Path) -> None:
    """``save_pretrained`` in the node's storage dtype (``params["store"]``; float32 when absent), as hub
    checkpoints are usually stored in bf16 after training in float32; ``params["shard"]``: in several
    ``model-0000k-of-0000n.safetensors`` files with their index (``max_shard_size``), as large uploads are."""
    store = node.params.get("store")
    if store is not None:
        model = model.to(getattr(torch, store))
    model.save_pretrained(str(out), **({"max_shard_size": SHARD_SIZE} if node.params.get("shard") else {}))


#: Shard size of sharded checkpoints: a few shards for the tiny models of a typed set.
SHARD_SIZE = "200KB"


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint folder, one file or sharded (``model.safetensors.index.json``)."""
    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    state: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("model-*.safetensors")):
        state.update(load_file(str(f)))
    return state


def _train(model: torch.nn.Module, node: TypedNode, teacher: torch.nn.Module | None = None) -> dict[str, object]:
    """Train ``model`` on the node's task; returns :func:`~mother_zoo.training.train`'s log."""
    p = node.params
    rng = np.random.default_rng(node.seed)
    eval_batch = lm_batch(node.arch, p["task"], BATCH, np.random.default_rng(node.seed ^ 0x5EED5))

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        batch = lm_batch(node.arch, p["task"], BATCH, rng)
        return lm_loss(m, batch) if teacher is None else distill_loss(m, teacher, batch)

    log = train(model, loss_fn, lambda m: float(lm_loss(m, eval_batch)), steps=p["steps"], lr=p["lr"],
                weight_decay=0.1 if node.op == "root" else 0.01)
    log.pop("losses", None)
    return log


def make_root(node: TypedNode, out: Path) -> dict[str, object]:
    """A model initialised from scratch (seeded) and pre-trained on the broad task mixture."""
    torch.manual_seed(node.seed)
    model = new_model(node.arch, node.params["size"])
    log = _train(model, node)
    save(model, node, out)
    return log


def make_finetune(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """Full fine-tuning: every parameter trained on a narrower task."""
    torch.manual_seed(node.seed)
    model = load(node.arch, parent)
    log = _train(model, node)
    save(model, node, out)
    return log


def _lora_config(node: TypedNode) -> Any:
    from peft import LoraConfig

    p = node.params
    variant = p.get("variant")  # rsLoRA scales by alpha / sqrt(r); DoRA adds a per-column magnitude
    targets = p.get("targets") or ARCHS[node.arch].lora_targets
    # ``target_parameters``: 3-D parameters (transformers 5's fused MoE experts, ``mlp.experts.gate_up_proj``)
    extra = {"target_parameters": list(p["target_parameters"])} if p.get("target_parameters") else {}
    return LoraConfig(r=p["rank"], lora_alpha=p["alpha"], target_modules=list(targets), **extra,
                      lora_dropout=0.0, fan_in_fan_out=ARCHS[node.arch].conv1d,
                      use_rslora=variant == "rslora", use_dora=variant == "dora",
                      task_type="CAUSAL_LM" if ARCHS[node.arch].objective == "causal" else "SEQ_CLS")


def make_adapter(node: TypedNode, parent: Path, out: Path, declared_base: str, merged: bool) -> dict[str, object]:
    """Train a LoRA adapter with ``peft``; save it unmerged (adapter files only) or merged into the weights.

    Parameters
    ----------
    declared_base : str
        What ``adapter_config.json``'s ``base_model_name_or_path`` says (an id in the set or not).
    merged : bool
        ``merge_and_unload`` and save the full model (relation ``lora``) instead of the adapter.
    """
    from peft import get_peft_model

    torch.manual_seed(node.seed)  # fixes lora_A's Kaiming init
    model = get_peft_model(load(node.arch, parent), _lora_config(node))
    log = _train(model, node)
    if merged:
        save(model.merge_and_unload(), node, out)
    else:
        model.peft_config["default"].base_model_name_or_path = declared_base
        model.save_pretrained(str(out))
    return log


def make_qlora(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """QLoRA, merged: a LoRA trained on a bitsandbytes 4-bit checkpoint's dequantized weights (transformers'
    ``dequantize``), then ``merge_and_unload`` into those weights: the child of the quantized model."""
    from peft import get_peft_model

    import copy

    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    quantized = model_class(node.arch).from_pretrained(str(parent), local_files_only=True, device_map="cpu")
    # bitsandbytes 0.50's CPU dequantize_4bit misplaces blocks of a 2-D weight whose rows are not a whole
    # number of blocks (relative error 0.22-0.25 instead of NF4's 0.09 at width 96); the same call on the
    # flat view (the codes are stored flat) decodes right, so each weight is decoded that way.
    decoded = {}
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = copy.copy(module.weight.quant_state)
            shape, state.shape = state.shape, torch.Size([math.prod(state.shape)])
            decoded[name + ".weight"] = bnbf.dequantize_4bit(module.weight.data, state).reshape(shape)
    base = quantized.dequantize()  # transformers: every Linear4bit back to a Linear (bf16)
    with torch.no_grad():
        params = dict(base.named_parameters())
        for name, w in decoded.items():
            params[name].copy_(w.to(params[name].dtype))
    base = base.float()
    torch.manual_seed(node.seed)
    model = get_peft_model(base, _lora_config(node))
    log = _train(model, node)
    save(model.merge_and_unload(), node, out)
    return log


def make_vocab(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """A fine-tune with an extended vocabulary: ``resize_token_embeddings`` adds ``new_tokens`` rows (the
    embeddings and an untied head grow; transformers draws them around the old rows' mean), then every
    weight is trained on a task whose sequences use the new tokens."""
    from dataclasses import replace

    torch.manual_seed(node.seed)
    model = load(node.arch, parent)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(old + node.params["new_tokens"])
    task = node.params["task"]
    grown = replace(node, params={**node.params, "task": replace(task, vocab=old + node.params["new_tokens"])})
    log = _train(model, grown)
    save(model, node, out)
    return {**log, "vocab_parent": old}


def make_classifier(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """A sequence classifier (``*ForSequenceClassification``: the LM head dropped, a new ``score`` head drawn)
    loaded from a causal-LM checkpoint and fine-tuned, every weight trained."""
    from ..data import SEQUENCE_TASKS

    torch.manual_seed(node.seed)  # the new head's draw
    # node.arch is the classifier's class; the backbone's tensor names match the causal LM's.
    model = model_class(node.arch).from_pretrained(str(parent), local_files_only=True, trust_remote_code=False,
                                                   dtype=torch.float32, num_labels=len(SEQUENCE_TASKS))
    log = _train(model, node)
    save(model, node, out)
    return log


def merge_adapter(node: TypedNode, parent: Path, adapter: Path, out: Path) -> dict[str, object]:
    """A shipped adapter folded into its base: ``PeftModel.from_pretrained`` then ``merge_and_unload``."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load(node.arch, parent), str(adapter), is_trainable=False)
    save(model.merge_and_unload(), node, out)
    return {"merged_adapter": True}


def merge_config(node: TypedNode, paths: dict[int, str]) -> dict[str, Any]:
    """mergekit's YAML configuration (as a dict) for a merge node; ``paths`` maps indices to model names."""
    p = node.params
    method, models, weights = p["method"], [i for i in node.parents if i != p.get("base")], p.get("weights", [])
    cfg: dict[str, Any] = {"merge_method": method, "dtype": "float32"}
    if p.get("store"):
        cfg["out_dtype"] = p["store"]
    if method == "passthrough":  # layer stacking: each slice one model's layer range, in order
        cfg["slices"] = [{"sources": [{"model": paths[m], "layer_range": [a, b]}]} for m, a, b in p["slices"]]
        return cfg
    if method == "slerp":
        # SLERP takes two models, the first as base; t = 0 gives the base, t = 1 the other model.
        cfg["base_model"] = paths[node.parents[0]]
        cfg["models"] = [{"model": paths[i]} for i in node.parents]
        cfg["parameters"] = {"t": p["t"]}
        return cfg
    entries = []
    for i, w in zip(models, weights):
        params: dict[str, Any] = {"weight": w} if method in WEIGHTED_METHODS else {}
        for key in ("density", "epsilon", "gamma"):
            if key in p:
                params[key] = p[key]
        entries.append({"model": paths[i], **({"parameters": params} if params else {})})
    cfg["models"] = entries
    if p.get("base") is not None:
        cfg["base_model"] = paths[p["base"]]
    if method == "linear":
        cfg["parameters"] = {"normalize": True}
    if method == "sce":
        cfg["parameters"] = {"select_topk": p["select_topk"]}
    return cfg


def make_merge(node: TypedNode, folders: dict[int, Path], ids: dict[int, str], out: Path) -> dict[str, object]:
    """A mergekit merge of local folders (``run_merge``; ``trust_remote_code=False``).

    mergekit's own model card looks its parents up on the hub, so the card is written by
    :func:`merge_card` instead (same content, offline); ``mergekit_config.yml`` names the parents by id.
    """
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    cfg = merge_config(node, {i: str(f) for i, f in folders.items()})
    options = MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=node.seed % 2**31,
                           write_model_card=False, lazy_unpickle=False)
    run_merge(MergeConfiguration.model_validate(cfg), str(out), options)
    shown = merge_config(node, ids)
    (out / "mergekit_config.yml").write_text(yaml.safe_dump(shown, sort_keys=False))
    return {"mergekit_config": shown}


def merge_card(node: TypedNode, ids: dict[int, str]) -> str:
    """The README mergekit writes for a merge (base models listed in the YAML front-matter)."""
    import yaml

    shown = merge_config(node, ids)
    bases = "\n".join(f"- {ids[i]}" for i in node.parents)
    return (f"---\nbase_model:\n{bases}\nlibrary_name: transformers\ntags:\n- mergekit\n- merge\n---\n"
            "# merged\n\nThis is a merge of pre-trained language models created using "
            "[mergekit](https://github.com/cg123/mergekit).\n\n## Merge Details\n### Merge Method\n\n"
            f"This model was merged using the {node.params['method']} merge method.\n\n### Configuration\n\n"
            f"```yaml\n{yaml.safe_dump(shown, sort_keys=False)}```\n")


def make_cast(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """The parent's weights in another floating-point dtype (``config.json``'s ``dtype`` follows)."""
    dtype = getattr(torch, node.params["dtype"])
    # Loaded at the parent's own precision (a float32 load of a bf16 checkpoint is exact, so an upcast
    # holds the bf16 values on a float32 grid).
    load(node.arch, parent).to(dtype).save_pretrained(str(out))
    return {}


def make_bin(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """The parent's tensors in a PyTorch ``pytorch_model.bin`` (plain tensors, loads with ``weights_only``)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(load_state(parent), out / "pytorch_model.bin")
    for f in ("config.json", "generation_config.json"):
        if (parent / f).is_file():
            shutil.copyfile(parent / f, out / f)
    return {}


def make_fused(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """The parent's ``state_dict()`` as transformers 5 holds it in memory, saved with ``torch.save`` as training
    scripts do (``pytorch_model.bin``): a mixture-of-experts model's experts fused (``mlp.experts.gate_up_proj``
    (experts, 2 x inter, hidden), ``mlp.experts.down_proj``), where ``save_pretrained`` writes them per expert."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(load(node.arch, parent).state_dict(), out / "pytorch_model.bin")
    shutil.copyfile(parent / "config.json", out / "config.json")
    return {}


def make_copy(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """A byte-identical duplicate of the parent's folder (a re-upload)."""
    shutil.copytree(parent, out)
    return {}


def _neuron_slices(arch: str, state: dict[str, torch.Tensor], layers: int, keep: int) -> dict[str, torch.Tensor]:
    """The state dict with each MLP narrowed to its ``keep`` largest neurons (by weight norm), in order."""
    spec = ARCHS[arch]
    out = dict(state)
    for i in range(layers):
        ups = [u.format(i=i) for u in spec.mlp_up]
        downs = [d.format(i=i) for d in spec.mlp_down]
        # Conv1D (GPT-2) stores (in, out): neurons are columns of c_fc and rows of c_proj.
        n_axis_up, n_axis_down = (1, 0) if spec.conv1d else (0, 1)
        score = sum(state[u + ".weight"].norm(dim=1 - n_axis_up) for u in ups)
        score = score + sum(state[d + ".weight"].norm(dim=1 - n_axis_down) for d in downs)
        idx = torch.sort(torch.topk(score, keep).indices).values
        for u in ups:
            out[u + ".weight"] = state[u + ".weight"].index_select(n_axis_up, idx).contiguous()
            if u + ".bias" in state:
                out[u + ".bias"] = state[u + ".bias"][idx].contiguous()
        for d in downs:
            out[d + ".weight"] = state[d + ".weight"].index_select(n_axis_down, idx).contiguous()
    return out


def _drop_layer(arch: str, state: dict[str, torch.Tensor], layers: int, drop: int) -> dict[str, torch.Tensor]:
    """The state dict without layer ``drop``; later layers renumbered down."""
    pat = re.compile("^" + re.escape(LAYER_PREFIX[arch]).replace(re.escape("{i}"), r"(\d+)"))
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        m = pat.match(k)
        if m is None:
            out[k] = v
            continue
        i = int(m.group(1))
        if i == drop:
            continue
        j = i - 1 if i > drop else i
        out[LAYER_PREFIX[arch].format(i=j) + k[m.end():]] = v
    return out


def _size_of(arch: str, cfg: Any) -> ArchSize:
    if arch == "gpt2":
        return ArchSize(cfg.vocab_size, cfg.n_embd, cfg.n_inner, cfg.n_layer, cfg.n_head, cfg.n_head, cfg.n_positions)
    if arch == "opt":
        return ArchSize(cfg.vocab_size, cfg.hidden_size, cfg.ffn_dim, cfg.num_hidden_layers, cfg.num_attention_heads,
                        cfg.num_attention_heads, cfg.max_position_embeddings)
    return ArchSize(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                    cfg.num_attention_heads,
                    getattr(cfg, "num_key_value_heads", cfg.num_attention_heads), cfg.max_position_embeddings)


def _smaller(node: TypedNode, parent: Any, **change: int) -> tuple[Any, dict[str, torch.Tensor]]:
    from dataclasses import replace

    size = replace(_size_of(node.arch, parent.config), **change)
    torch.manual_seed(node.seed)
    return new_model(node.arch, size), {k: v.detach().clone() for k, v in parent.state_dict().items()}


def make_prune(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """Structured pruning (as Minitron's width pruning): keep the strongest MLP neurons, then train."""
    teacher = load(node.arch, parent)
    inter = _size_of(node.arch, teacher.config).intermediate
    keep = max(8, round(inter * node.params["keep"] / 8) * 8)
    student, state = _smaller(node, teacher, intermediate=keep)
    state = _neuron_slices(node.arch, state, _size_of(node.arch, teacher.config).layers, keep)
    student.load_state_dict(state, strict=True)
    log = _train(student, node)
    save(student, node, out)
    return {**log, "intermediate_kept": keep, "intermediate_parent": inter}


def make_distill(node: TypedNode, parent: Path, out: Path) -> dict[str, object]:
    """Depth pruning plus distillation: drop one layer, then train on the parent's softened logits."""
    teacher = load(node.arch, parent)
    teacher.eval()
    layers = _size_of(node.arch, teacher.config).layers
    student, state = _smaller(node, teacher, layers=layers - 1)
    student.load_state_dict(_drop_layer(node.arch, state, layers, node.params["drop_layer"]), strict=True)
    log = _train(student, node, teacher=teacher)
    save(student, node, out)
    return {**log, "dropped_layer": node.params["drop_layer"]}
