"""A second typed model set made the way another team might, with none of ``mother_zoo``'s code (issue 11).

``benchmarks/elsewhere_set.py`` was the first stress set built outside ``mother zoo typed``; this one makes
DIFFERENT choices again (it shares no code with either), with the real tools only (transformers training,
peft, mergekit, the ``gguf`` package's writer and quantizers, bitsandbytes and optimum-quanto on the CPU; never
noise added to weights):

- architectures no profile and no earlier stress set uses: Gemma 2 (four norms per block, soft-capping, tied
  head), Falcon (Falcon-40B's layout: grouped fused ``query_key_value``, two norms, parallel attention),
  GPT-J (rotary on part of the head, untied head with a bias), Mamba (no attention at all: ``A_log``, ``D``,
  a depthwise conv), RoBERTa (an encoder trained by masked-token prediction) and a DistilBERT distractor;
- its own data (sparse Markov chains over the tokens) and training loop (linear warm-up and decay, gradient
  accumulation; AdamW, Adafactor or SGD);
- fine-tunes the hubs are full of: a chat fine-tune that EXTENDS THE VOCABULARY (``resize_token_embeddings``
  with transformers' mean-initialised rows) followed by an instruction fine-tune and a preference-style
  fine-tune at a low learning rate (a chain of four generations); a fine-tune whose tied head was untied; one
  whose head was re-initialised and retrained; a sequence classifier grown from a masked-LM encoder, and its
  own fine-tune; a sentence-embedding fine-tune saved headless (``AutoModel``: names without the prefix);
- adapters: DoRA on ``all-linear`` and rsLoRA with a Gaussian init, each shipped unmerged and merged;
- mergekit methods with a base and two or three task models: ``della``, ``breadcrumbs_ties``,
  ``task_arithmetic`` over three fine-tunes, ``nuslerp`` with a base;
- GGUF written with the ``gguf`` package (llama.cpp's conventions: Gemma's norms stored as 1 + w, Falcon's
  fused ``query_key_value`` regrouped; a file whose tensors mix Q8_0 and Q4_0 as llama.cpp's mixed presets
  do; Q5_0); quanto qint4 and qint8; a bf16 cast sharded into safetensors with an index; an fp16 cast
  (bitsandbytes, int8 or 4-bit, left this Falcon's linear layers in float on the CPU: a copy, so not used;
  the ``gguf`` package has no K-quant quantizer, so no Q4_K / Q6_K).

Ids are random hex strings. The truth file (``typed/truth.json``) is in the engine's format; how each model
was made is in ``recipe.json`` beside the ``typed`` folder (outside what the engine reads).

    python benchmarks/elsewhere2_set.py --out /tmp/elsewhere2/set1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

V = 256  # base vocabulary
CHAT = 8  # tokens a chat fine-tune adds
T = 32  # sequence length
BATCH = 12


@dataclass(frozen=True)
class Node:
    """One model of the set: its role (a private name), how it is made, from which roles."""

    role: str
    op: str
    parents: tuple[str, ...] = ()
    relation: str | None = None  # of every edge parent -> this node
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    truth_parents: tuple[str, ...] | None = None  # parents in the truth file, where they differ from ``parents``


def config(arch: str) -> Any:
    """A small config of ``arch`` (hidden 64, 2 blocks)."""
    import transformers as tf

    if arch == "gemma2":
        return tf.Gemma2Config(vocab_size=V, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                               sliding_window=16, query_pre_attn_scalar=16, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2)
    if arch == "falcon":
        return tf.FalconConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_kv_heads=2, new_decoder_architecture=True, parallel_attn=True, bias=False,
                               max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                               tie_word_embeddings=False)  # mergekit's falcon table wants lm_head
    if arch == "gptj":
        return tf.GPTJConfig(vocab_size=V, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64,
                             n_inner=192, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    if arch == "mamba":
        return tf.MambaConfig(vocab_size=V, hidden_size=64, state_size=8, num_hidden_layers=2, expand=2,
                              conv_kernel=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "roberta":
        return tf.RobertaConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=160, max_position_embeddings=T + 4, type_vocab_size=1,
                                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if arch == "distilbert":
        return tf.DistilBertConfig(vocab_size=V, dim=64, n_layers=2, n_heads=4, hidden_dim=160,
                                   max_position_embeddings=T + 4, pad_token_id=0)
    raise KeyError(arch)


def model_class(arch: str) -> Any:
    import transformers as tf

    return {"gemma2": tf.Gemma2ForCausalLM, "falcon": tf.FalconForCausalLM, "gptj": tf.GPTJForCausalLM,
            "mamba": tf.MambaForCausalLM, "roberta": tf.RobertaForMaskedLM,
            "roberta_cls": tf.RobertaForSequenceClassification, "distilbert": tf.DistilBertForMaskedLM}[arch]


MASKED = ("roberta", "distilbert")
MASK_ID = 3


def chain(task: int) -> np.ndarray:
    """Task ``task``'s Markov chain: every token has three successors (a table (V + CHAT, 3))."""
    return np.random.default_rng(1000 + task).integers(4, V, size=(V + CHAT, 3))


def batch(tasks: list[int], rng: np.random.Generator, chat: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences walked on the chains of ``tasks`` (one task per sequence); with ``chat``, a turn token from the
    added vocabulary every eight positions. Returns the ids (BATCH, T) and each sequence's task index."""
    out = np.empty((BATCH, T), dtype=np.int64)
    which = rng.integers(len(tasks), size=BATCH)
    for i in range(BATCH):
        table = chain(tasks[which[i]])
        x = int(rng.integers(4, V))
        for t in range(T):
            if chat and t % 8 == 0:
                out[i, t] = V + (t // 8 + tasks[which[i]]) % CHAT
                continue
            out[i, t] = x
            x = int(table[x, rng.integers(3)])
    return torch.from_numpy(out), torch.from_numpy(which)


def loss_of(model: Any, arch: str, ids: torch.Tensor, which: torch.Tensor, rng: np.random.Generator) -> Any:
    """Next-token loss, masked-token loss (15% of positions) or the task's class, by ``arch``."""
    if arch == "roberta_cls":
        return model(input_ids=ids, labels=which).loss
    if arch in MASKED:
        mask = torch.from_numpy(rng.random(ids.shape) < 0.15)
        labels = torch.where(mask, ids, torch.full_like(ids, -100))
        return model(input_ids=torch.where(mask, torch.full_like(ids, MASK_ID), ids), labels=labels).loss
    return model(input_ids=ids, labels=ids).loss


def train(model: Any, arch: str, tasks: list[int], seed: int, steps: int, lr: float, opt: str = "adamw",
          trainable: Any = None, weight_decay: float = 0.0, chat: bool = False, accumulate: int = 2) -> float:
    """Train ``model`` (the parameters ``trainable(name)`` accepts; all by default) with a linear warm-up over a
    tenth of the steps and a linear decay; returns the last loss."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(trainable is None or bool(trainable(n)))
        if p.requires_grad:
            params.append(p)
    o: torch.optim.Optimizer
    if opt == "sgd":
        o = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    elif opt == "adafactor":
        o = torch.optim.Adafactor(params, lr=lr, weight_decay=weight_decay)
    else:
        o = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98), eps=1e-6)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        o, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        o.zero_grad()
        for _ in range(accumulate):
            ids, which = batch(tasks, rng, chat)
            loss = loss_of(model, arch, ids, which, rng) / accumulate
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        o.step()
        sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return float(loss.detach()) * accumulate


BROAD = list(range(8))


def plan() -> list[Node]:
    """The set: five families of new architectures and distractors."""
    n = Node
    return [
        # Gemma 2: a chat fine-tune with an extended vocabulary, then a chain of two more fine-tunes; a fine-tune
    # whose tied head was untied
        n("g_root", "root", params={"arch": "gemma2", "seed": 12, "steps": 260, "lr": 2e-3}),
        n("g_chat", "vocab", ("g_root",), "finetune", {"steps": 150, "lr": 1e-3, "tasks": [20, 21]}),
        n("g_inst", "finetune", ("g_chat",), "finetune", {"steps": 110, "lr": 6e-4, "tasks": [22], "chat": True}),
        n("g_pref", "finetune", ("g_inst",), "finetune",
          {"steps": 60, "lr": 1e-4, "tasks": [23], "chat": True, "opt": "adafactor"}),
        n("g_untied", "untie", ("g_root",), "finetune", {"steps": 100, "lr": 8e-4, "tasks": [26]}),
        n("g_code", "finetune", ("g_chat",), "finetune", {"steps": 110, "lr": 8e-4, "tasks": [24], "chat": True}),
        n("g_della", "merge", ("g_chat", "g_inst", "g_code"), "merge", {"config": "della"}),
        n("g_dora", "adapter", ("g_inst",), "adapter",
          {"steps": 100, "lr": 2e-3, "tasks": [25], "chat": True, "variant": "dora"}),
        n("g_dora_merged", "merge_adapter", ("g_inst", "g_dora"), "lora", truth_parents=("g_inst",)),
        n("g_q4mix", "gguf", ("g_pref",), "quantized", {"qtype": "Q4_0", "keep": "Q8_0"}),
        n("g_bf16_shards", "cast", ("g_pref",), "convert", {"dtype": "bfloat16", "shard": "40KB"}),
        # Falcon: a fine-tune whose head was re-initialised and retrained
        n("f_root", "root", params={"arch": "falcon", "seed": 22, "steps": 260, "lr": 2e-3}),
        n("f_ft", "finetune", ("f_root",), "finetune", {"steps": 120, "lr": 8e-4, "tasks": [30]}),
        n("f_newhead", "reinit_head", ("f_ft",), "finetune", {"steps": 120, "lr": 1e-3, "tasks": [31]}),
        n("f_ada", "finetune", ("f_root",), "finetune",
          {"steps": 120, "lr": 2e-3, "tasks": [32], "opt": "adafactor", "weight_decay": 0.01}),
        n("f_sgd", "finetune", ("f_root",), "finetune", {"steps": 120, "lr": 0.03, "tasks": [33], "opt": "sgd"}),
        n("f_bct", "merge", ("f_root", "f_ada", "f_sgd"), "merge", {"config": "breadcrumbs_ties"}),
        n("f_rslora", "adapter", ("f_ada",), "adapter", {"steps": 100, "lr": 2e-3, "tasks": [34],
                                                           "variant": "rslora"}),
        n("f_rslora_merged", "merge_adapter", ("f_ada", "f_rslora"), "lora", truth_parents=("f_ada",)),
        n("f_q5", "gguf", ("f_sgd",), "quantized", {"qtype": "Q5_0"}),
        n("f_q8", "gguf", ("f_newhead",), "quantized", {"qtype": "Q8_0"}),
        # GPT-J: a chain, one step with frozen embeddings; an fp16 cast and a quanto qint4
        n("j_root", "root", params={"arch": "gptj", "seed": 32, "steps": 260, "lr": 2e-3}),
        n("j_ft", "finetune", ("j_root",), "finetune", {"steps": 120, "lr": 1e-3, "tasks": [40]}),
        n("j_ft_ft", "finetune", ("j_ft",), "finetune",
          {"steps": 100, "lr": 5e-4, "tasks": [41], "freeze": ["wte"]}),
        n("j_qint4", "quanto", ("j_ft_ft",), "quantized", {"weights": "qint4"}),
        n("j_fp16", "cast", ("j_ft",), "convert", {"dtype": "float16"}),
        # Mamba: three fine-tunes and their task arithmetic on the root
        n("m_root", "root", params={"arch": "mamba", "seed": 42, "steps": 160, "lr": 3e-3}),
        n("m_ft1", "finetune", ("m_root",), "finetune", {"steps": 70, "lr": 1e-3, "tasks": [50]}),
        n("m_ft2", "finetune", ("m_root",), "finetune", {"steps": 70, "lr": 1e-3, "tasks": [51]}),
        n("m_ft3", "finetune", ("m_root",), "finetune", {"steps": 70, "lr": 1e-3, "tasks": [52]}),
        n("m_ta3", "merge", ("m_root", "m_ft1", "m_ft2", "m_ft3"), "merge", {"config": "task_arithmetic3"}),
        n("m_qint8", "quanto", ("m_ft2",), "quantized", {"weights": "qint8"}),
        # RoBERTa: masked-LM root, a classifier and its fine-tune, domain fine-tunes, a headless embedder
        n("r_root", "root", params={"arch": "roberta", "seed": 52, "steps": 260, "lr": 2e-3}),
        n("r_cls", "classifier", ("r_root",), "finetune", {"steps": 120, "lr": 1e-3, "tasks": [60, 61, 62]}),
        n("r_cls_ft", "finetune", ("r_cls",), "finetune", {"steps": 80, "lr": 5e-4, "tasks": [63, 64, 65]}),
        n("r_dom1", "finetune", ("r_root",), "finetune", {"steps": 120, "lr": 1e-3, "tasks": [66]}),
        n("r_dom2", "finetune", ("r_root",), "finetune", {"steps": 120, "lr": 1e-3, "tasks": [67]}),
        n("r_nuslerp", "merge", ("r_root", "r_dom1", "r_dom2"), "merge", {"config": "nuslerp"}),
        n("r_embed", "embedder", ("r_dom1",), "finetune", {"steps": 100, "lr": 5e-4, "tasks": [68, 69]}),
        # Distractors: unrelated roots of the same architectures, a DistilBERT
        n("x_gemma2", "root", params={"arch": "gemma2", "seed": 72, "steps": 200, "lr": 2e-3}),
        n("x_falcon", "root", params={"arch": "falcon", "seed": 82, "steps": 200, "lr": 2e-3}),
        n("x_mamba", "root", params={"arch": "mamba", "seed": 92, "steps": 120, "lr": 3e-3}),
        n("x_distilbert", "root", params={"arch": "distilbert", "seed": 102, "steps": 200, "lr": 2e-3}),
    ]


def merge_config(kind: str, paths: list[str]) -> dict[str, Any]:
    """mergekit configurations: a base and two or three task models."""
    if kind == "della":
        return {"merge_method": "della", "base_model": paths[0], "dtype": "float32",
                "parameters": {"epsilon": 0.1, "lambda": 1.0},
                "models": [{"model": paths[1], "parameters": {"weight": 0.6, "density": 0.6}},
                           {"model": paths[2], "parameters": {"weight": 0.4, "density": 0.5}}]}
    if kind == "breadcrumbs_ties":
        return {"merge_method": "breadcrumbs_ties", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": paths[1], "parameters": {"weight": 0.5, "density": 0.8, "gamma": 0.02}},
                           {"model": paths[2], "parameters": {"weight": 0.5, "density": 0.8, "gamma": 0.02}}]}
    if kind == "task_arithmetic3":
        return {"merge_method": "task_arithmetic", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": p, "parameters": {"weight": w}} for p, w in zip(paths[1:], (0.5, 0.3, 0.4))]}
    if kind == "nuslerp":
        return {"merge_method": "nuslerp", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": paths[1], "parameters": {"weight": 0.6}},
                           {"model": paths[2], "parameters": {"weight": 0.4}}]}
    raise KeyError(kind)


def write_gguf(arch: str, folder: Path, path: Path, qtype_name: str, keep: str | None) -> None:
    """A GGUF written with the ``gguf`` package's writer, name tables and quantizers, with llama.cpp's
    conventions for the architecture (Gemma's RMS norms stored as 1 + w; Falcon's fused grouped
    ``query_key_value``, per kv group (q of its heads, k, v), regrouped to all q, all k, all v as
    ``FalconModel.modify_tensors`` in ``convert_hf_to_gguf.py`` does).
    ``keep`` stores the embeddings (and a head) in that type instead, as llama.cpp's mixed presets do."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    arch_name = {"gemma2": "gemma2", "falcon": "falcon"}[arch]
    march = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
    layers = cfg["num_hidden_layers"]
    names = gguf.get_tensor_name_map(march, layers)
    qtype = gguf.GGMLQuantizationType[qtype_name]
    w = gguf.GGUFWriter(str(path), arch_name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(layers)
    w.add_head_count(cfg["num_attention_heads"])
    if arch == "gemma2":
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    else:
        w.add_feed_forward_length(4 * cfg["hidden_size"])
        w.add_head_count_kv(cfg["num_kv_heads"])
        w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    w.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{qtype_name}"))
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(state[next(k for k in state if "embed" in k)].shape[0])])
    for hf_name, t in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(hf_name)
        if arch == "falcon" and "query_key_value" in hf_name:  # llama.cpp's regrouping, as its converter
            n_head, n_kv = cfg["num_attention_heads"], cfg["num_kv_heads"]
            hd = cfg["hidden_size"] // n_head
            qkv = t.float().view(n_kv, n_head // n_kv + 2, hd, hd * n_head)
            t = torch.cat((qkv[:, :-2].reshape(n_head * hd, hd * n_head), qkv[:, [-2]].reshape(n_kv * hd, hd * n_head),
                           qkv[:, [-1]].reshape(n_kv * hd, hd * n_head))).reshape_as(t)
        arr = t.float().numpy()
        if arch == "gemma2" and hf_name.endswith("norm.weight"):
            arr = arr + 1.0  # llama.cpp's Gemma converters store the scale 1 + w
        kind = qtype
        if keep and (name.startswith("token_embd") or name.startswith("output.")):
            kind = gguf.GGMLQuantizationType[keep]
        if arr.ndim == 1 or arr.shape[-1] % 32:
            w.add_tensor(name, arr.astype(np.float32))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def trainable_by(p: dict[str, Any]) -> Any:
    freeze = p.get("freeze")
    return (lambda name: not any(k in name for k in freeze)) if freeze else None


def make(node: Node, folders: dict[str, Path], out: Path, arch: dict[str, str]) -> str:
    """Make ``node`` into the folder ``out``; returns its architecture (its model class's key)."""
    p = node.params
    a = p["arch"] if node.op == "root" else arch[node.parents[0]]
    if node.op == "classifier":
        a = "roberta_cls"
    cls = model_class(a)
    src = folders[node.parents[0]] if node.parents else None
    seed = zlib.crc32(node.role.encode())
    if node.op == "root":
        torch.manual_seed(p["seed"])
        model = cls(config(a))
        train(model, a, BROAD, p["seed"], p["steps"], p["lr"], weight_decay=0.05)
        model.save_pretrained(str(out))
    elif node.op in ("finetune", "vocab", "untie", "reinit_head", "classifier"):
        kw: dict[str, Any] = {"num_labels": len(p["tasks"])} if node.op == "classifier" else {}
        model = cls.from_pretrained(str(src), **kw)
        torch.manual_seed(seed)
        if node.op == "vocab":  # chat tokens added; transformers draws the new rows around the old rows' mean
            model.resize_token_embeddings(V + CHAT)
        if node.op == "untie":  # the head becomes its own tensor, a copy of the embeddings, trained apart
            model.config.tie_word_embeddings = False
            model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
        if node.op == "reinit_head":  # a new head, drawn as the initialiser draws it, then trained
            torch.nn.init.normal_(model.lm_head.weight, std=model.config.initializer_range)
        train(model, a, p["tasks"], seed, p["steps"], p["lr"], opt=p.get("opt", "adamw"),
              trainable=trainable_by(p), weight_decay=p.get("weight_decay", 0.0),
              chat=p.get("chat", node.op == "vocab"))
        model.save_pretrained(str(out))
    elif node.op == "embedder":  # the encoder alone (AutoModel), trained to tell tasks apart by mean pooling
        from transformers import RobertaModel

        enc = RobertaModel.from_pretrained(str(src), add_pooling_layer=False)
        head = torch.nn.Linear(64, len(p["tasks"]))
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        o = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=p["lr"])
        enc.train()
        for _ in range(p["steps"]):
            ids, which = batch(p["tasks"], rng)
            emb = enc(input_ids=ids).last_hidden_state.mean(1)
            loss = torch.nn.functional.cross_entropy(head(torch.nn.functional.normalize(emb, dim=-1) * 10), which)
            o.zero_grad()
            loss.backward()
            o.step()
        enc.eval()
        enc.save_pretrained(str(out))
    elif node.op == "adapter":
        from peft import LoraConfig, get_peft_model

        model = cls.from_pretrained(str(src))
        if p["variant"] == "dora":
            cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", use_dora=True, lora_dropout=0.05,
                             task_type="CAUSAL_LM")
        else:
            cfg = LoraConfig(r=16, lora_alpha=8, use_rslora=True, init_lora_weights="gaussian",
                             target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
                             lora_dropout=0.0, task_type="CAUSAL_LM")
        pm = get_peft_model(model, cfg)
        train(pm, a, p["tasks"], seed, p["steps"], p["lr"], trainable=lambda name: "lora_" in name,
              chat=p.get("chat", False), accumulate=1)
        pm.save_pretrained(str(out))
    elif node.op == "merge_adapter":
        from peft import PeftModel

        model = cls.from_pretrained(str(src))
        merged = PeftModel.from_pretrained(model, str(folders[node.parents[1]])).merge_and_unload()
        merged.save_pretrained(str(out))
    elif node.op == "merge":
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        cfg = merge_config(p["config"], [str(folders[r]) for r in node.parents])
        run_merge(MergeConfiguration.model_validate(cfg), str(out),
                  MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=7,
                               write_model_card=True, lazy_unpickle=False))
    elif node.op == "gguf":
        out.mkdir(parents=True)
        write_gguf(a, src, out / f"model-{p['qtype'].lower()}.gguf", p["qtype"], p.get("keep"))  # type: ignore[arg-type]
    elif node.op == "quanto":
        import optimum.quanto as oq
        from optimum.quanto import QuantizedModelForCausalLM

        model = cls.from_pretrained(str(src))
        QuantizedModelForCausalLM.quantize(model, weights=getattr(oq, p["weights"]),
                                           exclude="lm_head").save_pretrained(str(out))
    elif node.op == "cast":
        model = cls.from_pretrained(str(src), dtype=getattr(torch, p["dtype"]))
        model.save_pretrained(str(out), **({"max_shard_size": p["shard"]} if p.get("shard") else {}))
    else:
        raise KeyError(node.op)
    return "roberta" if a == "roberta_cls" else a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    nodes = plan()
    ids = {nd.role: rng.bytes(6).hex() for nd in nodes}
    typed = args.out / "typed"
    if typed.exists():
        shutil.rmtree(typed)
    typed.mkdir(parents=True)
    folders: dict[str, Path] = {}
    arch: dict[str, str] = {}
    recipe = []
    for nd in nodes:
        t0 = time.perf_counter()
        folders[nd.role] = typed / ids[nd.role]
        arch[nd.role] = make(nd, folders, folders[nd.role], arch)
        recipe.append({"id": ids[nd.role], "role": nd.role, "op": nd.op, "arch": arch[nd.role],
                       "parents": [ids[r] for r in nd.parents], "relation": nd.relation,
                       "params": dict(nd.params), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{nd.role:18s} {ids[nd.role]} {time.perf_counter() - t0:5.1f}s", flush=True)
    edges = [{"parent": ids[par], "child": ids[nd.role], "relation": nd.relation}
             for nd in nodes if nd.relation for par in (nd.truth_parents or nd.parents)]
    (typed / "truth.json").write_text(json.dumps({"edges": edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str))


if __name__ == "__main__":
    main()
