"""Builders of tiny *real* checkpoints in every format the I/O layer reads (reusable by any test).

Every builder writes with the real library (``safetensors.torch.save_file``, ``torch.save``), so the
files are byte-for-byte what users have on disk; only the models are tiny (hidden size 16, 2 layers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file

HIDDEN = 16
INTER = 24
VOCAB = 40
LAYERS = 2

#: Set when something from a checkpoint was called: a loader must never do that.
TRIGGERED: list[str] = []


def trigger(what: str) -> None:
    """Called only if an unpickler executes what the checkpoint asks for."""
    TRIGGERED.append(what)


class SideEffect:
    """Importable class whose unpickling calls :func:`trigger` (so a test can see code execution)."""

    def __reduce__(self):  # noqa: D105
        return (trigger, ("SideEffect was unpickled by calling code from the checkpoint",))


class FlagOnInit:
    """Importable class that flags being instantiated or given state."""

    def __init__(self) -> None:
        self.x = 1

    def __setstate__(self, state):  # noqa: D105
        trigger("FlagOnInit.__setstate__ ran")


def llama_state(seed: int = 0, dtype: torch.dtype = torch.float32, prefix: str = "model.",
                head: bool = True) -> dict[str, torch.Tensor]:
    """A tiny Llama-like state dict (``model.layers.N...`` names as ``LlamaForCausalLM`` saves them)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.1).to(dtype)

    sd: dict[str, torch.Tensor] = {f"{prefix}embed_tokens.weight": r(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"{prefix}layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"{p}self_attn.{proj}.weight"] = r(HIDDEN, HIDDEN)
        sd[f"{p}mlp.gate_proj.weight"] = r(INTER, HIDDEN)
        sd[f"{p}mlp.up_proj.weight"] = r(INTER, HIDDEN)
        sd[f"{p}mlp.down_proj.weight"] = r(HIDDEN, INTER)
        sd[f"{p}input_layernorm.weight"] = torch.ones(HIDDEN, dtype=dtype)
        sd[f"{p}post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=dtype)
    sd[f"{prefix}norm.weight"] = torch.ones(HIDDEN, dtype=dtype)
    if head:
        sd["lm_head.weight"] = r(VOCAB, HIDDEN)
    return sd


def with_buffers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add non-float buffers (position ids, BatchNorm counter) as real models carry them."""
    out = dict(sd)
    out["model.position_ids"] = torch.arange(8, dtype=torch.int64)[None]
    out["bn.num_batches_tracked"] = torch.tensor(3, dtype=torch.int64)
    out["model.mask"] = torch.ones(4, dtype=torch.bool)
    return out


# --- safetensors -------------------------------------------------------------------------------------

def save_safetensors(path: str | Path, sd: Mapping[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def hf_folder(folder: str | Path, sd: Mapping[str, torch.Tensor], config: dict | None = None,
              readme_base_model: str | list[str] | None = None) -> Path:
    """``folder/model.safetensors`` + ``config.json`` (+ a model card declaring ``base_model``)."""
    folder = Path(folder)
    save_safetensors(folder / "model.safetensors", sd)
    config = config or {"model_type": "llama", "_name_or_path": "somewhere/else"}
    (folder / "config.json").write_text(json.dumps(config))
    if readme_base_model is not None:
        write_readme(folder, readme_base_model)
    return folder


def write_readme(folder: str | Path, base_model: str | list[str]) -> None:
    if isinstance(base_model, list):
        body = "base_model:\n" + "".join(f"- {b}\n" for b in base_model)
    else:
        body = f"base_model: {base_model}\n"
    Path(folder, "README.md").write_text(f"---\nlicense: mit\n{body}tags:\n- test\n---\n# Model card\n")


def _split(sd: Mapping[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    keys = list(sd)
    return [{k: sd[k] for k in keys[i::n]} for i in range(n)]


def sharded_safetensors(folder: str | Path, sd: Mapping[str, torch.Tensor], n: int = 3) -> Path:
    """HF sharded layout: ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``."""
    folder = _shards(folder, sd, n, "model", ".safetensors", save_safetensors)
    (folder / "config.json").write_text("{}")
    return folder


def _shards(folder: str | Path, sd: Mapping[str, torch.Tensor], n: int, stem: str, ext: str, save) -> Path:
    """``{stem}-0000i-of-0000n{ext}`` shards written by ``save(path, part)``, and their index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, part in enumerate(_split(sd, n), 1):
        name = f"{stem}-{i:05d}-of-{n:05d}{ext}"
        save(folder / name, part)
        weight_map.update({k: name for k in part})
    (folder / f"{stem}{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


# --- torch pickles -----------------------------------------------------------------------------------

def torch_bin_folder(folder: str | Path, sd: Mapping[str, torch.Tensor]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(dict(sd), folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")
    return folder


def sharded_bin(folder: str | Path, sd: Mapping[str, torch.Tensor], n: int = 2) -> Path:
    return _shards(folder, sd, n, "pytorch_model", ".bin", lambda path, part: torch.save(part, path))


def _unimportable_config() -> object:
    """An instance of a class whose module will not exist when the checkpoint is loaded."""
    mod = types.ModuleType("mother_gone_module")

    class Config:
        def __init__(self) -> None:
            self.lr = 0.1
            self.layers = [1, 2]

    Config.__module__ = "mother_gone_module"
    Config.__qualname__ = "Config"
    mod.Config = Config  # type: ignore[attr-defined]
    sys.modules["mother_gone_module"] = mod
    return Config()


def training_checkpoint(path: str | Path, sd: Mapping[str, torch.Tensor], legacy: bool = False) -> Path:
    """A ``.pth.tar`` training checkpoint: nested ``state_dict`` with ``module.`` prefixes, optimizer
    moments, an ``argparse.Namespace``, a custom class from a module that is gone at load time, and
    objects whose unpickling would run code (:class:`SideEffect`, :class:`FlagOnInit`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = {f"module.{k}": v for k, v in sd.items()}
    params = list(model.values())
    optimizer = {
        "state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.ones_like(p)}
                  for i, p in enumerate(params)},
        "param_groups": [{"lr": 0.1, "params": list(range(len(params)))}],
    }
    ckpt = {
        "epoch": 7,
        "arch": "tiny",
        "args": argparse.Namespace(lr=0.1, arch="tiny"),
        "config": _unimportable_config(),
        "hook": SideEffect(),
        "flag": FlagOnInit(),
        "state_dict": model,
        "optimizer": optimizer,
        "best_acc1": torch.tensor(0.5),
    }
    try:
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    finally:
        sys.modules.pop("mother_gone_module", None)
    return path


def legacy_file(path: str | Path, sd: Mapping[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(sd), path, _use_new_zipfile_serialization=False)
    return path


def no_tensor_pickle(path: str | Path) -> Path:
    torch.save({"epoch": 3, "note": "no weights here", "numbers": [1, 2, 3]}, path)
    return Path(path)


def truncate(path: str | Path, keep: float = 0.6) -> Path:
    """Cut a file to a fraction of its size (an interrupted download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- hub layouts -------------------------------------------------------------------------------------

def hf_cache_entry(root: str | Path, hub_id: str, sd: Mapping[str, torch.Tensor], revs: int = 2) -> Path:
    """``root/models--org--name`` with blobs, ``revs`` snapshots and ``refs/main`` naming the last one.

    Older snapshots hold different weights (seed-shifted) so tests can check the right one is used.
    """
    entry = Path(root) / ("models--" + hub_id.replace("/", "--"))
    (entry / "blobs").mkdir(parents=True, exist_ok=True)
    (entry / "refs").mkdir(exist_ok=True)
    rev = ""
    for k in range(revs):
        rev = f"{k:040x}"
        snap = entry / "snapshots" / rev
        snap.mkdir(parents=True, exist_ok=True)
        blob = entry / "blobs" / f"blob{k}"
        weights = sd if k == revs - 1 else {n: t + 1 for n, t in sd.items()}
        save_safetensors(blob, weights)
        os.symlink(os.path.relpath(blob, snap), snap / "model.safetensors")
        (snap / "config.json").write_text("{}")
    (entry / "refs" / "main").write_text(rev)
    return entry


def diffusers_repo(folder: str | Path, seed: int = 0) -> Path:
    """A diffusers-style repository: ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``."""
    folder = Path(folder)
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    unet = {
        "conv_in.weight": torch.randn(8, 4, 3, 3, generator=g),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": torch.randn(8, 8, generator=g),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight": torch.randn(8, 8, generator=g),
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": torch.randn(16, 8, generator=g),
        "down_blocks.0.resnets.0.norm1.weight": torch.ones(8),
    }
    save_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors", unet)
    (folder / "unet" / "config.json").write_text("{}")
    save_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors",
                     {"encoder.conv_in.weight": torch.randn(4, 3, 3, 3, generator=g)})
    save_safetensors(folder / "text_encoder" / "model.safetensors",
                     {"embeddings.token_embedding.weight": torch.randn(10, 8, generator=g)})
    return folder


def peft_adapter(folder: str | Path, base_sd: Mapping[str, torch.Tensor], base_name: str, r: int = 4,
                 alpha: float = 8, targets: tuple[str, ...] = ("q_proj", "v_proj"), seed: int = 1,
                 use_rslora: bool = False, rank_pattern: dict | None = None, alpha_pattern: dict | None = None,
                 adapter_suffix: str = "", as_bin: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A PEFT LoRA adapter folder for a model saved with :func:`llama_state` names.

    Returns
    -------
    dict
        Base tensor name (as stored in ``base_sd``) -> (A, B), so tests can compute the merge directly.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    pairs = {}
    for name, w in base_sd.items():
        module = name.removesuffix(".weight")
        if not any(module.endswith(t) for t in targets) or w.dim() != 2:
            continue
        rank = r
        for pat, val in (rank_pattern or {}).items():
            if module.endswith(pat):
                rank = val
        a = torch.randn(rank, w.shape[1], generator=g) * 0.1
        b = torch.randn(w.shape[0], rank, generator=g) * 0.1
        tensors[f"base_model.model.{module}.lora_A{adapter_suffix}.weight"] = a
        tensors[f"base_model.model.{module}.lora_B{adapter_suffix}.weight"] = b
        pairs[name] = (a, b)
    if as_bin:
        torch.save(tensors, folder / "adapter_model.bin")
    else:
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(targets),
        "base_model_name_or_path": base_name, "fan_in_fan_out": False, "use_rslora": use_rslora,
        "rank_pattern": rank_pattern or {}, "alpha_pattern": alpha_pattern or {},
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return pairs


def adam_steps(model, seed: int, steps: int, lr: float, vocab: int = 64, decay: float = 0.0):
    """``steps`` AdamW steps (decoupled weight decay ``decay``, none by default) of next-token prediction on
    one fixed random batch of 16 x 16 tokens below ``vocab`` (the task of ``seed``), on the parameters that
    require gradients; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (16, 16), generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=decay)
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def tiny_llama(seed: int | None = None, hidden: int = 48, intermediate: int = 96):
    """A freshly initialised two-layer Llama with grouped-query attention (4 heads, 2 key/value heads,
    vocabulary 64), seeded with ``torch.manual_seed(seed)`` first when ``seed`` is given."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=intermediate,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=32))


def llama_tree(folder: str | Path, tree: tuple[tuple[str, str, int], ...], root_steps: int, root_lr: float,
               child_steps: int, child_lr: float, decay: float = 0.0,
               dtype: torch.dtype = torch.float32) -> Path:
    """A trained family of :func:`tiny_llama` models in ``folder``: ``m-root`` (seed 0, ``root_steps`` Adam
    steps on task 0), then each ``(name, parent, seed)`` of ``tree`` in order, loaded from its parent as
    stored and trained ``child_steps`` steps on task ``seed`` (decoupled weight decay ``decay``); every
    model saved in ``dtype``, as a user's training run loads and saves it."""
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    adam_steps(tiny_llama(seed=0), 0, root_steps, root_lr).to(dtype).save_pretrained(folder / "m-root")
    for name, parent, seed in tree:
        model = LlamaForCausalLM.from_pretrained(folder / parent, dtype=torch.float32)
        adam_steps(model, seed, child_steps, child_lr, decay=decay).to(dtype).save_pretrained(folder / name)
    return folder
