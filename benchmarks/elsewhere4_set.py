"""A fourth typed model set made the way a fourth team might, with none of ``mother_zoo``'s code (issue 11).

``benchmarks/elsewhere_set.py``, ``elsewhere2_set.py`` and ``elsewhere3_set.py`` were the first three stress
sets built outside ``mother zoo typed``; this one shares no code with any of them and covers what none of
them nor the zoo's profiles covers, with the real tools only (transformers training, peft, mergekit, the
``gguf`` package's writer and quantizers, transformers' own fp8 layout; never noise added to weights):

- architectures no profile and no earlier stress set uses: DeepSeek-V3 (multi-head latent attention with
  low-rank q / kv projections, one dense block then a mixture-of-experts block with a shared expert and a
  router bias), Gemma 3 (q / k norms, sliding and global layers, 1 + w norms), SmolLM3 (rotary left out on
  every fourth layer), DeBERTa-v2 (disentangled relative attention, masked LM) and an ELECTRA distractor;
- its own data (each task a lookup table of the vocabulary; a sequence's second half is its first half
  reversed and looked up) and loop (linear decay, no warm-up; Adam, Adagrad or AdamW); masked-LM pre-training
  for the encoders, and **continued pre-training on other, broader data** (two generations) beside a narrow
  fine-tune;
- a **wide fan-out**: eight sibling fine-tunes of one root, short and of varied learning rates;
- **a merge of merges** (mergekit ``ties`` of two siblings, then ``linear`` of that merge and a third
  sibling) and **a merge whose input is a PEFT-merged LoRA** (mergekit ``slerp``);
- adapters no earlier set made: **IA3 on the MLP only** and a **prompt-tuning adapter**, which carries no
  weight change at all (truth: an adapter of its base; only its config can tell);
- formats: a **DeepSeek-V3-style fp8 checkpoint** (``F8_E4M3`` weights with 128 x 128 ``weight_scale_inv``
  blocks, as DeepSeek ships them), GGUF **MXFP4** (with **TQ2_0** on rows of 256) and a **BF16 GGUF** of Gemma 3
  written with the ``gguf`` package in llama.cpp's conventions (norms as 1 + w);
- a **byte-identical copy** under another name whose card lies (names a sibling of its source as its base),
  and a card that names the grandparent.

Ids are random hex strings. The truth file (``typed/truth.json``) is in the engine's format; how each model
was made, and what its metadata declares, is in ``recipe.json`` beside the ``typed`` folder.

    python benchmarks/elsewhere4_set.py --out /tmp/elsewhere4/set1 --seed 1
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

VOCAB = 160
HALF = 12  # a sequence: HALF tokens, then the same tokens reversed and looked up in the task's table
ROWS = 12  # sequences per batch
MASK = 3  # [MASK] of the masked-LM encoders (0, 1, 2: pad, eos, bos)


@dataclass(frozen=True)
class Item:
    """One model of the set: a private name, how it is made, from what, and its truth relation."""

    name: str
    op: str
    src: tuple[str, ...] = ()
    relation: str | None = None
    kw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    parents: tuple[str, ...] | None = None  # truth parents where they are not ``src``
    card_base: str | None = None  # a name whose id the model's card declares as its base (wrong on purpose)


def config_of(arch: str) -> Any:
    """A small config (width 64, two blocks) of ``arch``."""
    import transformers as tf

    if arch == "deepseek_v3":
        return tf.DeepseekV3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                                   num_hidden_layers=2, first_k_dense_replace=1, n_routed_experts=4,
                                   num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                                   num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16,
                                   qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                                   max_position_embeddings=2 * HALF + 8, pad_token_id=0, eos_token_id=1,
                                   bos_token_id=2, tie_word_embeddings=False)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                   max_position_embeddings=2 * HALF + 8, pad_token_id=0, eos_token_id=1,
                                   bos_token_id=2)
    if arch == "smollm3":
        return tf.SmolLM3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2 * HALF + 8,
                                pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False)
    if arch == "deberta_v2":
        return tf.DebertaV2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=2 * HALF, relative_attention=True,
                                  pos_att_type=["p2c", "c2p"], position_buckets=8, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, pad_token_id=0)
    if arch == "electra":
        return tf.ElectraConfig(vocab_size=VOCAB, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=128, max_position_embeddings=2 * HALF,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    raise KeyError(arch)


def class_of(arch: str) -> Any:
    import transformers as tf

    return {"deepseek_v3": tf.DeepseekV3ForCausalLM, "gemma3": tf.Gemma3ForCausalLM,
            "smollm3": tf.SmolLM3ForCausalLM, "deberta_v2": tf.DebertaV2ForMaskedLM,
            "electra": tf.ElectraForMaskedLM}[arch]


MASKED = ("deberta_v2", "electra")


def table(task: int) -> np.ndarray:
    """Task ``task``: a lookup table of the tokens 4 .. VOCAB-1 onto themselves (not a permutation)."""
    t = np.arange(VOCAB)
    t[4:] = 4 + np.random.default_rng(9000 + task).integers(0, VOCAB - 4, size=VOCAB - 4)
    return t


def batch(tasks: list[int], rng: np.random.Generator) -> torch.Tensor:
    """(ROWS, 2 * HALF) token ids: a first half, then it reversed and looked up in its row's task table."""
    first = rng.integers(4, VOCAB, size=(ROWS, HALF))
    which = rng.integers(len(tasks), size=ROWS)
    second = np.stack([table(tasks[w])[row[::-1]] for w, row in zip(which, first)])
    return torch.from_numpy(np.concatenate([first, second], 1))


def loss_of(model: Any, arch: str, tasks: list[int], rng: np.random.Generator) -> Any:
    """Next token over the sequence (decoders); 15% of the tokens masked and restored (encoders)."""
    ids = batch(tasks, rng)
    if arch in MASKED:
        hide = torch.from_numpy(rng.random(ids.shape) < 0.15)
        labels = torch.where(hide, ids, torch.full_like(ids, -100))
        return model(input_ids=torch.where(hide, torch.full_like(ids, MASK), ids), labels=labels).loss
    return model(input_ids=ids, labels=ids).loss


def train(model: Any, arch: str, tasks: list[int], seed: int, steps: int, lr: float, opt_name: str = "adam",
          trainable: Any = None) -> float:
    """Train the parameters ``trainable(name)`` accepts (all by default), lr decaying linearly to 0."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(trainable is None or bool(trainable(n)))
        if p.requires_grad:
            params.append(p)
    opt: torch.optim.Optimizer
    if opt_name == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr)
    elif opt_name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model, arch, tasks, rng)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return float(loss.detach())


BROAD = list(range(12))


def plan() -> list[Item]:
    """The set: four families and two distractors."""
    i = Item
    sibs = [i(f"g3_s{k}", "finetune", ("g3_root",), "finetune",
              {"tasks": [60 + k], "steps": 40, "lr": (3e-4, 1e-3, 2e-3)[k % 3],
               "opt": ("adam", "adamw", "adagrad")[k % 3] if k % 3 != 2 else "adam"}) for k in range(1, 9)]
    return [
        # DeepSeek-V3: two fine-tunes, a DeepSeek-style fp8 copy, IA3 on the MLP only, a prompt-tuning adapter,
        # a byte-identical copy whose card names its source's sibling
        i("ds_root", "pretrain", kw={"arch": "deepseek_v3", "seed": 11, "steps": 200, "lr": 2e-3}),
        i("ds_a", "finetune", ("ds_root",), "finetune", {"tasks": [21], "steps": 80, "lr": 1e-3}),
        i("ds_b", "finetune", ("ds_root",), "finetune", {"tasks": [22], "steps": 80, "lr": 1e-3, "opt": "adamw"}),
        i("ds_b_fp8", "fp8", ("ds_b",), "quantized"),
        i("ds_ia3", "adapter", ("ds_a",), "adapter", {"tasks": [23], "steps": 60, "lr": 1e-2, "kind": "ia3_mlp"}),
        i("ds_prompt", "adapter", ("ds_b",), "adapter", {"tasks": [24], "steps": 40, "lr": 1e-2,
                                                          "kind": "prompt"}),
        i("ds_b_copy", "copy", ("ds_b",), "convert", card_base="ds_a"),
        # Gemma 3: eight siblings, a merge of merges, MXFP4 / TQ2_0 and BF16 GGUFs
        i("g3_root", "pretrain", kw={"arch": "gemma3", "seed": 12, "steps": 200, "lr": 2e-3}),
        *sibs,
        i("g3_ties", "merge", ("g3_root", "g3_s1", "g3_s2"), "merge", {"method": "ties"}),
        i("g3_mm", "merge", ("g3_ties", "g3_s3"), "merge", {"method": "linear"}),
        i("g3_mxfp4", "gguf", ("g3_s4",), "quantized", {"qtype": "MXFP4"}),
        i("g3_bf16", "gguf", ("g3_s5",), "convert", {"qtype": "BF16"}),
        # SmolLM3: a chain of three, a LoRA (unmerged and merged), a slerp whose input is the merged LoRA,
        # a card naming the grandparent
        i("sm_root", "pretrain", kw={"arch": "smollm3", "seed": 13, "steps": 200, "lr": 2e-3}),
        i("sm_a", "finetune", ("sm_root",), "finetune", {"tasks": [31], "steps": 80, "lr": 1e-3}),
        i("sm_a2", "finetune", ("sm_a",), "finetune", {"tasks": [32], "steps": 60, "lr": 8e-4, "opt": "adamw"}),
        i("sm_a3", "finetune", ("sm_a2",), "finetune", {"tasks": [33], "steps": 60, "lr": 8e-4},
          card_base="sm_a"),
        i("sm_b", "finetune", ("sm_root",), "finetune", {"tasks": [34], "steps": 80, "lr": 5e-2, "opt": "adagrad"}),
        i("sm_lora", "adapter", ("sm_a",), "adapter", {"tasks": [35], "steps": 60, "lr": 3e-3, "kind": "lora"}),
        i("sm_lora_m", "fold", ("sm_a", "sm_lora"), "lora", parents=("sm_a",)),
        i("sm_slerp", "merge", ("sm_lora_m", "sm_b"), "merge", {"method": "slerp"}),
        # DeBERTa-v2: masked-LM pre-training, two generations of continued pre-training on broader data, a
        # narrow fine-tune
        i("deb_root", "pretrain", kw={"arch": "deberta_v2", "seed": 14, "steps": 200, "lr": 2e-3,
                                      "tasks": BROAD[:4]}),
        i("deb_cpt1", "finetune", ("deb_root",), "finetune", {"tasks": BROAD[:8], "steps": 150, "lr": 1e-3}),
        i("deb_cpt2", "finetune", ("deb_cpt1",), "finetune", {"tasks": BROAD, "steps": 150, "lr": 1e-3}),
        i("deb_narrow", "finetune", ("deb_root",), "finetune", {"tasks": [41], "steps": 80, "lr": 1e-3}),
        # distractors: an unrelated SmolLM3 root, an ELECTRA
        i("x_smol", "pretrain", kw={"arch": "smollm3", "seed": 15, "steps": 150, "lr": 2e-3}),
        i("x_electra", "pretrain", kw={"arch": "electra", "seed": 16, "steps": 150, "lr": 2e-3}),
    ]


def merge_config(method: str, paths: list[str]) -> dict[str, Any]:
    """mergekit configurations: ties (with a base), linear and slerp (without)."""
    if method == "ties":
        return {"merge_method": "ties", "base_model": paths[0], "dtype": "float32",
                "parameters": {"normalize": True},
                "models": [{"model": paths[1], "parameters": {"weight": 0.6, "density": 0.6}},
                           {"model": paths[2], "parameters": {"weight": 0.5, "density": 0.8}}]}
    if method == "linear":
        return {"merge_method": "linear", "dtype": "float32",
                "models": [{"model": paths[0], "parameters": {"weight": 0.65}},
                           {"model": paths[1], "parameters": {"weight": 0.35}}]}
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": paths[0], "dtype": "float32",
                "parameters": {"t": 0.4}, "models": [{"model": paths[0]}, {"model": paths[1]}]}
    raise KeyError(method)


def gemma3_gguf(folder: Path, path: Path, qtype_name: str) -> None:
    """Gemma 3 to GGUF with the ``gguf`` package, as llama.cpp's ``Gemma3Model`` converter does: every
    ``*norm.weight`` written as 1 + w, the tied head not written; matrices in ``qtype_name`` (MXFP4: TQ2_0 on
    rows of 256 values, as a mixed preset would), the rest float32."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == "gemma3")
    names = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    qtype = gguf.GGMLQuantizationType[qtype_name]
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_sliding_window(cfg["sliding_window"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if qtype_name == "BF16" else gguf.LlamaFileType.MOSTLY_MXFP4_MOE)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<{k}>" for k in range(VOCAB)])
    for hf_name, t in state.items():
        if hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(hf_name)
        t = t.float()
        if hf_name.endswith("norm.weight"):
            t = t + 1.0
        arr = t.numpy()
        if arr.ndim == 2 and qtype_name == "BF16":
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        elif arr.ndim == 2 and arr.shape[-1] % 256 == 0:
            tq = gguf.GGMLQuantizationType.TQ2_0
            w.add_tensor(name, gguf.quants.quantize(arr, tq), raw_dtype=tq)
        elif arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def fp8_blocks(src: Path, out: Path) -> None:
    """The DeepSeek-V3 fp8 layout: every 2-D projection weight as ``float8_e4m3fn`` scaled per 128 x 128 block
    (``weight_scale_inv``, float32: W ~= fp8 * scale), the rest as stored; the config declares
    ``quantization_config`` as DeepSeek's does. The cast and the block scales are those of DeepSeek's
    ``fp8_cast`` (amax / 448 per block)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    state = load_file(str(src / "model.safetensors"))
    packed: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if t.ndim == 2 and name.endswith("proj.weight"):
            rows, cols = t.shape
            nb_r, nb_c = -(-rows // 128), -(-cols // 128)
            scale = torch.empty(nb_r, nb_c, dtype=torch.float32)
            q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
            for r in range(nb_r):
                for c in range(nb_c):
                    blk = t[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128].float()
                    s = blk.abs().max().clamp(min=1e-12) / 448.0
                    scale[r, c] = s
                    q[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128] = (blk / s).to(torch.float8_e4m3fn)
            packed[name] = q
            packed[name + "_scale_inv"] = scale
        else:
            packed[name] = t.contiguous()
    save_file(packed, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": [128, 128]}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))


def write_card(out: Path, base: str, relation: str) -> None:
    """A model card whose front matter declares ``base`` (what the uploader wrote; may be wrong)."""
    (out / "README.md").write_text(f"---\nbase_model: {base}\nbase_model_relation: {relation}\n---\n\nOur model.\n")


def make(it: Item, where: dict[str, Path], out: Path, arch_of: dict[str, str], ids: dict[str, str]) -> str:
    """Make ``it`` into ``out``; returns its architecture."""
    kw = it.kw
    arch = kw["arch"] if it.op == "pretrain" else arch_of[it.src[0]]
    cls = class_of(arch)
    src = where[it.src[0]] if it.src else None
    seed = zlib.crc32(it.name.encode()) % 100_000
    if it.op == "pretrain":
        torch.manual_seed(kw["seed"])
        model = cls(config_of(arch))
        train(model, arch, kw.get("tasks", BROAD), kw["seed"], kw["steps"], kw["lr"])
        model.save_pretrained(str(out))
    elif it.op == "finetune":
        model = cls.from_pretrained(str(src))
        train(model, arch, kw["tasks"], seed, kw["steps"], kw["lr"], kw.get("opt", "adam"))
        model.save_pretrained(str(out))
    elif it.op == "adapter":
        import peft

        model = cls.from_pretrained(str(src))
        if kw["kind"] == "ia3_mlp":
            cfg: Any = peft.IA3Config(target_modules=["gate_proj", "up_proj", "down_proj"],
                                      feedforward_modules=["down_proj"], task_type="CAUSAL_LM")
            keep = ("ia3_",)
        elif kw["kind"] == "prompt":
            cfg = peft.PromptTuningConfig(num_virtual_tokens=6, task_type="CAUSAL_LM")
            keep = ("prompt_encoder",)
        else:
            cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0,
                                  task_type="CAUSAL_LM")
            keep = ("lora_",)
        pm = peft.get_peft_model(model, cfg)
        train(pm, arch, kw["tasks"], seed, kw["steps"], kw["lr"], trainable=lambda n: any(k in n for k in keep))
        pm.save_pretrained(str(out))
    elif it.op == "fold":
        from peft import PeftModel

        model = cls.from_pretrained(str(src))
        PeftModel.from_pretrained(model, str(where[it.src[1]])).merge_and_unload().save_pretrained(str(out))
    elif it.op == "merge":
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        cfg = merge_config(kw["method"], [str(where[r]) for r in it.src])
        run_merge(MergeConfiguration.model_validate(cfg), str(out),
                  MergeOptions(copy_tokenizer=False, quiet=True, random_seed=7, write_model_card=False,
                               lazy_unpickle=False))
    elif it.op == "fp8":
        fp8_blocks(src, out)  # type: ignore[arg-type]
    elif it.op == "gguf":
        out.mkdir(parents=True)
        gemma3_gguf(src, out / f"gemma3-{kw['qtype'].lower()}.gguf", kw["qtype"])  # type: ignore[arg-type]
    elif it.op == "copy":  # a re-upload: the same bytes under another name
        shutil.copytree(src, out)  # type: ignore[arg-type]
    else:
        raise KeyError(it.op)
    if it.card_base:
        write_card(out, ids[it.card_base], "finetune")
    return arch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    items = plan()
    ids = {it.name: rng.bytes(6).hex() for it in items}
    typed = args.out / "typed"
    if typed.exists():
        shutil.rmtree(typed)
    typed.mkdir(parents=True)
    where: dict[str, Path] = {}
    arch_of: dict[str, str] = {}
    recipe = []
    for it in items:
        t0 = time.perf_counter()
        where[it.name] = typed / ids[it.name]
        arch_of[it.name] = make(it, where, where[it.name], arch_of, ids)
        recipe.append({"id": ids[it.name], "name": it.name, "op": it.op, "arch": arch_of[it.name],
                       "src": [ids[r] for r in it.src], "relation": it.relation, "kw": dict(it.kw),
                       "card_base": ids[it.card_base] if it.card_base else None,
                       "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{it.name:12s} {ids[it.name]} {time.perf_counter() - t0:6.1f}s", flush=True)
    edges = [{"parent": ids[p], "child": ids[it.name], "relation": it.relation}
             for it in items if it.relation for p in (it.parents or it.src)]
    (typed / "truth.json").write_text(json.dumps({"edges": edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str))


if __name__ == "__main__":
    main()
