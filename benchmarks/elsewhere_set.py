"""A typed model set made the way another team might, with none of ``mother_zoo``'s code (issue 11).

Every rule of the engine was fitted on sets from ``mother zoo typed`` (profiles A-E, S, SD). This script
builds a small stress set DIFFERENTLY, with the real tools only (transformers training, peft, mergekit, the
``gguf`` package's writer, bitsandbytes and optimum-quanto on the CPU; never noise added to weights):

- architectures no profile uses: StableLM (partial rotary, LayerNorm, q/k/v biases), Phi (phi-2: parallel
  attention and MLP, ``dense`` output, biases everywhere), Cohere (tied head, logit scale, bias-free
  LayerNorm) and a GPT-BigCode distractor (multi-query ``c_attn``);
- its own data (affine token recurrences) and training loop: an untrained, random-init root ("tiny-random"
  checkpoints are common on the hub) with children; a fine-tune at a high learning rate for many steps; SGD
  with momentum; a partial fine-tune (only the last block and the head trained); a BitFit fine-tune (only
  biases and norms); a fine-tune with frozen embeddings;
- a LoRA with ``rank_pattern`` / ``alpha_pattern`` and ``modules_to_save`` (the head trained whole),
  shipped unmerged and merged;
- mergekit options no profile uses: ``linear`` with ``normalize: false`` and per-layer gradient weights,
  ``task_arithmetic`` with ``lambda`` and a negative weight on a BitFit child, ``slerp`` with per-filter t
  gradients between a model and its own fine-tune, ``dare_linear`` with a base;
- GGUF written by the ``gguf`` writer (no llama.cpp): Q4_1 and an F16 GGUF; bitsandbytes FP4 with double
  quantization; quanto qint2 and qfloat8;
- a sharded fp16 ``pytorch_model.bin`` with its index; a bf16 ``.bin``; a headless ``AutoModel`` export.

Ids are random hex strings. The truth file (``typed/truth.json``) is in the engine's format; how each
model was made is in ``recipe.json`` beside the ``typed`` folder (outside what the engine reads).

    python benchmarks/elsewhere_set.py --out /tmp/elsewhere/set1 --seed 1
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

V = 256  # vocabulary
T = 32  # sequence length
BATCH = 16


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

    if arch == "stablelm":
        return tf.StableLmConfig(vocab_size=V, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, partial_rotary_factor=0.25,
                                 use_qkv_bias=True, max_position_embeddings=64, tie_word_embeddings=False)
    if arch == "phi":
        return tf.PhiConfig(vocab_size=V, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=64)
    if arch == "cohere":
        return tf.CohereConfig(vocab_size=V, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, logit_scale=0.0625,
                               tie_word_embeddings=True, max_position_embeddings=64,
                               use_qk_norm=True)  # Command R+ (mergekit's table lists q_norm / k_norm)
    if arch == "gpt_bigcode":
        return tf.GPTBigCodeConfig(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=192,
                                   multi_query=True)
    raise KeyError(arch)


def model_class(arch: str) -> Any:
    import transformers as tf

    return {"stablelm": tf.StableLmForCausalLM, "phi": tf.PhiForCausalLM, "cohere": tf.CohereForCausalLM,
            "gpt_bigcode": tf.GPTBigCodeForCausalLM}[arch]


def batch(rules: list[tuple[int, int]], rng: np.random.Generator) -> torch.Tensor:
    """Sequences x_{t+1} = (a x_t + b) mod V, one rule per sequence drawn from ``rules``."""
    out = np.empty((BATCH, T), dtype=np.int64)
    for i in range(BATCH):
        a, b = rules[int(rng.integers(len(rules)))]
        x = int(rng.integers(V))
        for t in range(T):
            out[i, t] = x
            x = (a * x + b) % V
    return torch.from_numpy(out)


def train(model: torch.nn.Module, rules: list[tuple[int, int]], seed: int, steps: int, lr: float,
          opt: str = "adamw", trainable: Any = None, weight_decay: float = 0.0) -> float:
    """Train ``model`` (the parameters ``trainable(name)`` accepts; all by default); returns the last loss."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(trainable is None or bool(trainable(n)))
        if p.requires_grad:
            params.append(p)
    o: torch.optim.Optimizer
    if opt == "sgd":
        o = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        o = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(o, steps)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        ids = batch(rules, rng)
        loss = model(input_ids=ids, labels=ids).loss
        o.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        o.step()
        sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return float(loss.detach())


BROAD = [(a, b) for a in (1, 3, 5, 7, 9, 11) for b in (1, 2, 17, 29)]


def plan() -> list[Node]:
    """The set: three families of new architectures and distractors."""
    n = Node
    return [
        # StableLM: an untrained random-init root and its children
        n("s_root", "random", params={"arch": "stablelm", "seed": 11}),
        n("s_hot", "finetune", ("s_root",), "finetune", {"steps": 300, "lr": 3e-3, "rules": [(5, 1), (5, 17)]}),
        n("s_partial", "finetune", ("s_root",), "finetune",
          {"steps": 150, "lr": 1e-3, "rules": [(3, 2)], "train_only": ["layers.1.", "lm_head", "model.norm"]}),
        n("s_sgd", "finetune", ("s_hot",), "finetune", {"steps": 120, "lr": 0.05, "opt": "sgd", "rules": [(5, 29)]}),
        n("s_adapter", "adapter", ("s_hot",), "adapter", {"steps": 120, "lr": 2e-3, "rules": [(7, 1)]}),
        n("s_adapter_merged", "merge_adapter", ("s_hot", "s_adapter"), "lora", truth_parents=("s_hot",)),
        n("s_q41", "gguf", ("s_sgd",), "quantized", {"qtype": "Q4_1"}),
        n("s_f16gguf", "gguf", ("s_partial",), "convert", {"qtype": "F16"}),
        n("s_bin_shards", "bin_shards", ("s_partial",), "convert"),
        # Phi: a trained root
        n("p_root", "root", params={"arch": "phi", "seed": 21, "steps": 300, "lr": 2e-3}),
        n("p_wd", "finetune", ("p_root",), "finetune",
          {"steps": 200, "lr": 5e-4, "rules": [(9, 2)], "weight_decay": 0.1}),
        n("p_bitfit", "finetune", ("p_root",), "finetune",
          {"steps": 200, "lr": 5e-3, "rules": [(11, 17)], "bitfit": True}),
        n("p_frozen_emb", "finetune", ("p_root",), "finetune",
          {"steps": 60, "lr": 3e-4, "rules": [(1, 29)], "freeze": ["embed_tokens"]}),
        n("p_linear", "merge", ("p_wd", "p_frozen_emb"), "merge", {"config": "linear_gradient"}),
        n("p_ta", "merge", ("p_root", "p_wd", "p_bitfit"), "merge", {"config": "task_arithmetic_lambda"}),
        n("p_fp4", "bnb", ("p_wd",), "quantized", {}),
        n("p_qint2", "quanto", ("p_frozen_emb",), "quantized", {"weights": "qint2"}),
        n("p_qfloat8", "quanto", ("p_bitfit",), "quantized", {"weights": "qfloat8"}),
        # Cohere: a trained root, a chain, merges of a model with its own fine-tune
        n("c_root", "root", params={"arch": "cohere", "seed": 31, "steps": 300, "lr": 2e-3}),
        n("c_ft", "finetune", ("c_root",), "finetune", {"steps": 100, "lr": 1e-3, "rules": [(3, 29)]}),
        n("c_ft2", "finetune", ("c_ft",), "finetune", {"steps": 100, "lr": 1e-3, "rules": [(7, 2)]}),
        n("c_slerp", "merge", ("c_ft", "c_ft2"), "merge", {"config": "slerp_filters"}),
        n("c_dare", "merge", ("c_root", "c_ft", "c_ft2"), "merge", {"config": "dare_linear"}),
        n("c_bf16bin", "bf16_bin", ("c_ft2",), "convert"),
        n("c_headless", "headless", ("c_ft",), "convert"),
        # Distractors: unrelated roots of the same architectures (one with a child), a multi-query model
        n("x_s_root", "root", params={"arch": "stablelm", "seed": 41, "steps": 200, "lr": 2e-3}),
        n("x_s_ft", "finetune", ("x_s_root",), "finetune", {"steps": 100, "lr": 1e-3, "rules": [(5, 1)]}),
        n("x_p_random", "random", params={"arch": "phi", "seed": 51}),
        n("x_c_root", "root", params={"arch": "cohere", "seed": 61, "steps": 200, "lr": 2e-3}),
        n("x_bigcode", "root", params={"arch": "gpt_bigcode", "seed": 71, "steps": 200, "lr": 2e-3}),
        n("x_bigcode_ft", "finetune", ("x_bigcode",), "finetune", {"steps": 80, "lr": 1e-3, "rules": [(9, 29)]}),
    ]


def merge_config(kind: str, paths: list[str]) -> dict[str, Any]:
    """mergekit configurations with options the typed profiles never set."""
    if kind == "linear_gradient":  # normalize false, per-layer gradient weights
        return {"merge_method": "linear", "dtype": "float32", "parameters": {"normalize": False},
                "models": [{"model": paths[0], "parameters": {"weight": [0.2, 0.8]}},
                           {"model": paths[1], "parameters": {"weight": [0.7, 0.3]}}]}
    if kind == "task_arithmetic_lambda":  # base, a task vector added, a BitFit one subtracted, lambda
        return {"merge_method": "task_arithmetic", "base_model": paths[0], "dtype": "float32",
                "parameters": {"lambda": 0.8},
                "models": [{"model": paths[1], "parameters": {"weight": 1.0}},
                           {"model": paths[2], "parameters": {"weight": -0.5}}]}
    if kind == "slerp_filters":  # a model with its own fine-tune, t per filter and per layer
        return {"merge_method": "slerp", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": paths[0]}, {"model": paths[1]}],
                "parameters": {"t": [{"filter": "self_attn", "value": [0.0, 0.6]},
                                     {"filter": "mlp", "value": [0.6, 0.2]}, {"value": 0.4}]}}
    if kind == "dare_linear":
        return {"merge_method": "dare_linear", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": paths[1], "parameters": {"weight": 0.6, "density": 0.5}},
                           {"model": paths[2], "parameters": {"weight": 0.4, "density": 0.7}}]}
    raise KeyError(kind)


def write_gguf(arch: str, folder: Path, path: Path, qtype_name: str) -> None:
    """A GGUF written with the ``gguf`` package's writer and its name tables (no llama.cpp)."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    arch_name = {"stablelm": "stablelm", "phi": "phi2", "cohere": "command-r"}[arch]
    march = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
    names = gguf.get_tensor_name_map(march, cfg["num_hidden_layers"])
    qtype = gguf.GGMLQuantizationType[qtype_name]
    w = gguf.GGUFWriter(str(path), arch_name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    rotary = cfg.get("partial_rotary_factor") or cfg.get("rope_parameters", {}).get("partial_rotary_factor", 1.0)
    w.add_rope_dimension_count(int(rotary * cfg["hidden_size"] // cfg["num_attention_heads"]))
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_file_type({"F16": gguf.LlamaFileType.MOSTLY_F16, "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[qtype_name])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(V)])
    for hf_name, t in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(hf_name)
        arr = t.float().numpy()
        if arr.ndim == 1:
            w.add_tensor(name, arr.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_bin(model: Any, out: Path, shard_bytes: int | None = None) -> None:
    """``pytorch_model.bin`` as transformers 4 wrote it (transformers 5 writes safetensors only): one pickle,
    or shards of about ``shard_bytes`` with ``pytorch_model.bin.index.json``."""
    out.mkdir(parents=True)
    model.config.save_pretrained(str(out))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    if shard_bytes is None:
        torch.save(state, out / "pytorch_model.bin")
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        if size and size + v.numel() * v.element_size() > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += v.numel() * v.element_size()
    weight_map = {}
    for i, sh in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save(sh, out / name)
        weight_map.update({k: name for k in sh})
    total = sum(v.numel() * v.element_size() for v in state.values())
    (out / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def make(node: Node, folders: dict[str, Path], out: Path, arch: dict[str, str]) -> str:
    """Make ``node`` into the folder ``out``; returns its architecture."""
    p = node.params
    a = p["arch"] if node.op in ("random", "root") else arch[node.parents[0]]
    cls = model_class(a)
    src = folders[node.parents[0]] if node.parents else None
    if node.op in ("random", "root"):
        torch.manual_seed(p["seed"])
        model = cls(config(a))
        if node.op == "root":
            train(model, BROAD, p["seed"], p["steps"], p["lr"], weight_decay=0.1)
        model.save_pretrained(str(out))
    elif node.op == "finetune":
        model = cls.from_pretrained(str(src))
        only, freeze = p.get("train_only"), p.get("freeze")

        def trainable(name: str) -> bool:
            if p.get("bitfit"):
                return name.endswith(".bias") or "layernorm" in name or "norm" in name
            if only:
                return any(k in name for k in only)
            return not (freeze and any(k in name for k in freeze))

        train(model, p["rules"], zlib.crc32(node.role.encode()), p["steps"], p["lr"],
              opt=p.get("opt", "adamw"), trainable=trainable, weight_decay=p.get("weight_decay", 0.0))
        model.save_pretrained(str(out))
    elif node.op == "adapter":
        from peft import LoraConfig, get_peft_model

        model = cls.from_pretrained(str(src))
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "dense", "up_proj",
                                                              "down_proj", "gate_proj"],
                         rank_pattern={"v_proj": 4, "down_proj": 2}, alpha_pattern={"v_proj": 8},
                         modules_to_save=["lm_head"], lora_dropout=0.0, task_type="CAUSAL_LM")
        pm = get_peft_model(model, cfg)
        rng = np.random.default_rng(5)
        opt = torch.optim.AdamW([q for q in pm.parameters() if q.requires_grad], lr=p["lr"])
        for _ in range(p["steps"]):
            ids = batch(p["rules"], rng)
            loss = pm(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
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
                  MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=3,
                               write_model_card=False, lazy_unpickle=False))
    elif node.op == "gguf":
        out.mkdir(parents=True)
        write_gguf(a, src, out / f"model-{p['qtype'].lower()}.gguf", p["qtype"])  # type: ignore[arg-type]
    elif node.op == "bnb":
        from transformers import BitsAndBytesConfig

        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
        cls.from_pretrained(str(src), quantization_config=qc, device_map="cpu").save_pretrained(str(out))
    elif node.op == "quanto":
        import optimum.quanto as oq
        from optimum.quanto import QuantizedModelForCausalLM

        model = cls.from_pretrained(str(src))
        QuantizedModelForCausalLM.quantize(model, weights=getattr(oq, p["weights"]),
                                           exclude="lm_head").save_pretrained(str(out))
    elif node.op == "bin_shards":
        write_bin(cls.from_pretrained(str(src), dtype=torch.float16), out, shard_bytes=60_000)
    elif node.op == "bf16_bin":
        write_bin(cls.from_pretrained(str(src), dtype=torch.bfloat16), out)
    elif node.op == "headless":  # the base model alone (AutoModel): no head, names without the "model." prefix
        model = cls.from_pretrained(str(src))
        model.model.save_pretrained(str(out))
    else:
        raise KeyError(node.op)
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    nodes = plan()
    ids = {nd.role: rng.bytes(5).hex() for nd in nodes}
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
                       "params": {k: v for k, v in nd.params.items()}, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{nd.role:18s} {ids[nd.role]} {time.perf_counter() - t0:5.1f}s", flush=True)
    edges = [{"parent": ids[par], "child": ids[nd.role], "relation": nd.relation}
             for nd in nodes if nd.relation for par in (nd.truth_parents or nd.parents)]
    (typed / "truth.json").write_text(json.dumps({"edges": edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str))


if __name__ == "__main__":
    main()
