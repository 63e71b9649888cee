"""A third typed model set made the way yet another team might, with none of ``mother_zoo``'s code (issue 11).

``benchmarks/elsewhere_set.py`` and ``benchmarks/elsewhere2_set.py`` were the first two stress sets built
outside ``mother zoo typed``; this one shares no code with either and makes other choices again, with the
real tools only (transformers training, peft, mergekit, the ``gguf`` package's writer and quantizers,
torchao; never noise added to weights):

- architectures no profile and no earlier stress set uses: GLM-4 (fused ``gate_up_proj``, four norms per
  block, partial rotary), T5 v1.1 (an encoder-decoder with relative position buckets, gated-GELU), BLOOM (fused per-head
  ``query_key_value``, ALiBi, an embedding layer norm), Cohere 2 (parallel blocks, sliding windows, tied
  head) and a CLIP text encoder as a distractor;
- its own data (each task a permutation of the vocabulary: the second half of a sequence is the first half
  permuted) and loop (cosine schedule after a short warm-up; AdamW, RMSprop or SGD; no accumulation);
- a fine-tune trained very briefly (two steps at lr 1e-5: a near-copy) and one trained long (600 steps); a
  chain of five generations (BLOOM);
- adapters: VeRA (unmerged and merged), AdaLoRA on an encoder-decoder (unmerged and merged), LoRA on the
  embeddings and the fused attention (unmerged and merged);
- mergekit methods with no earlier use: ``model_stock`` over three fine-tunes, ``karcher`` (no base),
  ``arcee_fusion``, ``nearswap``, ``dare_linear`` with ``rescale``;
- GGUF Q4_1 and Q5_1 written with the ``gguf`` package (llama.cpp's BLOOM conventions: ``query_key_value``
  regrouped from per-head q/k/v to all q, all k, all v); torchao int8 weight-only through transformers'
  ``TorchAoConfig``; a torch pickle ``pytorch_model.bin``; an fp16 ``.bin`` sharded with its index; a bf16
  and an fp16 cast;
- declared metadata that is WRONG or missing, as cards often are: an adapter whose ``adapter_config.json``
  (and card) names a sibling of its real base, a LoRA with no base named anywhere, model cards whose
  ``base_model`` names the grandparent or a merge's wrong input (the engine must follow the weights and show
  the declared one).

Ids are random hex strings. The truth file (``typed/truth.json``) is in the engine's format; how each model
was made, and what its metadata declares, is in ``recipe.json`` beside the ``typed`` folder.

    python benchmarks/elsewhere3_set.py --out /tmp/elsewhere3/set1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

VOCAB = 192
HALF = 16  # a sequence: HALF tokens, then the same tokens through the task's permutation
BATCH = 16


@dataclass(frozen=True)
class Spec:
    """One model: a private role, the operation that makes it, its inputs, the truth relation."""

    role: str
    how: str
    inputs: tuple[str, ...] = ()
    relation: str | None = None
    args: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    truth: tuple[str, ...] | None = None  # truth parents where they are not ``inputs``
    declares: str | None = None  # a role whose id the model's metadata names as its base (wrong on purpose)


def make_config(family: str) -> Any:
    """A small config (width 64, two blocks) of ``family``."""
    import transformers as tf

    if family == "glm4":
        return tf.Glm4Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, partial_rotary_factor=0.5,
                             max_position_embeddings=2 * HALF + 8, pad_token_id=0, eos_token_id=1,
                             tie_word_embeddings=False)
    if family == "t5":
        return tf.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                           num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                           feed_forward_proj="gated-gelu", pad_token_id=0,
                           eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
    if family == "bloom":
        return tf.BloomConfig(vocab_size=VOCAB, hidden_size=64, n_layer=2, n_head=4, hidden_dropout=0.0,
                              attention_dropout=0.0, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if family == "cohere2":
        return tf.Cohere2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, sliding_window=16,
                                max_position_embeddings=2 * HALF + 8, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if family == "clip":
        return tf.CLIPTextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=2 * HALF, eos_token_id=1,
                                 pad_token_id=0, bos_token_id=2, projection_dim=32)
    raise KeyError(family)


def model_cls(family: str) -> Any:
    import transformers as tf

    return {"glm4": tf.Glm4ForCausalLM, "t5": tf.T5ForConditionalGeneration, "bloom": tf.BloomForCausalLM,
            "cohere2": tf.Cohere2ForCausalLM, "clip": tf.CLIPTextModel}[family]


def permutation(task: int) -> np.ndarray:
    """Task ``task``: a permutation of the tokens 3 .. VOCAB-1 (0, 1, 2 are pad, eos, bos)."""
    p = np.arange(VOCAB)
    p[3:] = 3 + np.random.default_rng(5000 + task).permutation(VOCAB - 3)
    return p


def draw(tasks: list[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch: the first halves (BATCH, HALF), their permuted second halves, and each row's task index."""
    which = rng.integers(len(tasks), size=BATCH)
    first = rng.integers(3, VOCAB, size=(BATCH, HALF))
    second = np.stack([permutation(tasks[w])[row] for w, row in zip(which, first)])
    return torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(which)


def objective(model: Any, family: str, tasks: list[int], rng: np.random.Generator, head: Any = None) -> Any:
    """The loss of one batch: next token over both halves (decoders), the permuted half from the first
    (T5), the task from the pooled text (CLIP, through ``head``)."""
    first, second, which = draw(tasks, rng)
    if family == "t5":
        return model(input_ids=first, labels=second).loss
    if family == "clip":
        ids = torch.cat([torch.full((BATCH, 1), 2), first, torch.ones(BATCH, 1, dtype=torch.long)], 1)
        return torch.nn.functional.cross_entropy(head(model(input_ids=ids).pooler_output), which)
    ids = torch.cat([first, second], 1)
    return model(input_ids=ids, labels=ids).loss


def fit(model: Any, family: str, tasks: list[int], seed: int, steps: int, lr: float, optimiser: str = "adamw",
        only: Any = None, head: Any = None, after_step: Any = None) -> float:
    """Train the parameters ``only(name)`` accepts (all by default) with a cosine schedule after a warm-up of
    a twentieth of the steps; returns the last loss."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = [p for n, p in model.named_parameters() if only is None or only(n)]
    for n, p in model.named_parameters():
        p.requires_grad_(only is None or bool(only(n)))
    if head is not None:
        params += list(head.parameters())
    opt: torch.optim.Optimizer
    if optimiser == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.8)
    elif optimiser == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=lr, alpha=0.95)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)

    def scale(s: int) -> float:
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, scale)
    model.train()
    loss = torch.tensor(0.0)
    for step in range(steps):
        opt.zero_grad()
        loss = objective(model, family, tasks, rng, head)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step(step)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return float(loss.detach())


ALL = list(range(10))


def specs() -> list[Spec]:
    """The set: four families and three distractors."""
    s = Spec
    return [
        # GLM-4: a long fine-tune, a near-copy, model_stock over three fine-tunes, VeRA whose config names a
        # sibling of its base, a torch pickle copy, torchao int8
        s("glm_root", "pretrain", args={"family": "glm4", "seed": 101, "steps": 220, "lr": 2e-3}),
        s("glm_a", "finetune", ("glm_root",), "finetune", {"tasks": [11], "steps": 90, "lr": 1e-3}),
        s("glm_b", "finetune", ("glm_root",), "finetune", {"tasks": [12], "steps": 90, "lr": 1e-3}),
        s("glm_long", "finetune", ("glm_root",), "finetune", {"tasks": [13, 14], "steps": 600, "lr": 6e-4}),
        s("glm_near", "finetune", ("glm_a",), "finetune", {"tasks": [15], "steps": 2, "lr": 1e-5}),
        s("glm_stock", "merge", ("glm_root", "glm_a", "glm_b", "glm_long"), "merge", {"method": "model_stock"}),
        s("glm_vera", "adapter", ("glm_b",), "adapter", {"tasks": [16], "steps": 80, "lr": 5e-3, "kind": "vera"},
          declares="glm_a"),
        s("glm_vera_merged", "fold", ("glm_b", "glm_vera"), "lora", truth=("glm_b",)),
        s("glm_pickle", "pickle", ("glm_b",), "convert"),
        s("glm_int8", "torchao", ("glm_long",), "quantized"),
        # T5: karcher mean of two fine-tunes, AdaLoRA (unmerged and merged), an fp16 sharded .bin, a card that
        # names the grandparent
        s("t5_root", "pretrain", args={"family": "t5", "seed": 202, "steps": 220, "lr": 2e-3}),
        s("t5_a", "finetune", ("t5_root",), "finetune", {"tasks": [21], "steps": 90, "lr": 1e-3}),
        s("t5_b", "finetune", ("t5_root",), "finetune", {"tasks": [22], "steps": 90, "lr": 2e-3,
                                                          "optimiser": "rmsprop"}),
        s("t5_karcher", "merge", ("t5_a", "t5_b"), "merge", {"method": "karcher"}),
        s("t5_a_more", "finetune", ("t5_a",), "finetune", {"tasks": [23], "steps": 70, "lr": 8e-4},
          declares="t5_root"),
        s("t5_adalora", "adapter", ("t5_a",), "adapter", {"tasks": [24], "steps": 80, "lr": 3e-3, "kind": "adalora"}),
        s("t5_adalora_merged", "fold", ("t5_a", "t5_adalora"), "lora", truth=("t5_a",)),
        s("t5_fp16_bin", "bin_shards", ("t5_b",), "convert"),
        # BLOOM: a chain of five generations, GGUF Q4_1 / Q5_1, LoRA on the embeddings, a bf16 cast
        s("bl_root", "pretrain", args={"family": "bloom", "seed": 303, "steps": 220, "lr": 2e-3}),
        s("bl_g1", "finetune", ("bl_root",), "finetune", {"tasks": [31], "steps": 90, "lr": 1e-3}),
        s("bl_g2", "finetune", ("bl_g1",), "finetune", {"tasks": [32], "steps": 80, "lr": 8e-4}),
        s("bl_g3", "finetune", ("bl_g2",), "finetune", {"tasks": [33], "steps": 80, "lr": 8e-4},
          declares="bl_root"),
        s("bl_g4", "finetune", ("bl_g3",), "finetune", {"tasks": [34], "steps": 70, "lr": 6e-4}),
        s("bl_side", "finetune", ("bl_root",), "finetune", {"tasks": [35], "steps": 90, "lr": 0.05,
                                                             "optimiser": "sgd"}),
        s("bl_q4_1", "gguf", ("bl_g4",), "quantized", {"qtype": "Q4_1"}),
        s("bl_q5_1", "gguf", ("bl_side",), "quantized", {"qtype": "Q5_1"}),
        s("bl_emb_lora", "adapter", ("bl_g2",), "adapter", {"tasks": [36], "steps": 80, "lr": 3e-3,
                                                            "kind": "lora_embed"}),
        s("bl_emb_lora_merged", "fold", ("bl_g2", "bl_emb_lora"), "lora", truth=("bl_g2",)),
        s("bl_bf16", "cast", ("bl_g1",), "convert", {"dtype": "bfloat16"}),
        # Cohere 2: arcee_fusion, nearswap, dare_linear with rescale (its card names a wrong input), an fp16 cast,
        # a LoRA that names no base
        s("co_root", "pretrain", args={"family": "cohere2", "seed": 404, "steps": 220, "lr": 2e-3}),
        s("co_a", "finetune", ("co_root",), "finetune", {"tasks": [41], "steps": 90, "lr": 1e-3}),
        s("co_b", "finetune", ("co_root",), "finetune", {"tasks": [42], "steps": 90, "lr": 1e-3}),
        s("co_c", "finetune", ("co_root",), "finetune", {"tasks": [43], "steps": 90, "lr": 0.05, "optimiser": "sgd"}),
        s("co_fusion", "merge", ("co_root", "co_a"), "merge", {"method": "arcee_fusion"}),
        s("co_nearswap", "merge", ("co_b", "co_c"), "merge", {"method": "nearswap"}),
        s("co_dare", "merge", ("co_root", "co_a", "co_c"), "merge", {"method": "dare_linear"}, declares="co_b"),
        s("co_dare_fp16", "cast", ("co_dare",), "convert", {"dtype": "float16"}),
        s("co_lora_nobase", "adapter", ("co_a",), "adapter", {"tasks": [44], "steps": 60, "lr": 3e-3, "kind": "lora"},
          declares=""),
        # distractors: unrelated roots of two families, a CLIP text encoder
        s("x_glm", "pretrain", args={"family": "glm4", "seed": 505, "steps": 160, "lr": 2e-3}),
        s("x_bloom", "pretrain", args={"family": "bloom", "seed": 606, "steps": 160, "lr": 2e-3}),
        s("x_clip", "pretrain", args={"family": "clip", "seed": 707, "steps": 160, "lr": 2e-3}),
    ]


def mergekit_config(method: str, paths: list[str]) -> dict[str, Any]:
    """mergekit configurations of the methods no earlier set used."""
    if method == "model_stock":
        return {"merge_method": "model_stock", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": p} for p in paths[1:]]}
    if method == "karcher":
        return {"merge_method": "karcher", "dtype": "float32", "parameters": {"max_iter": 10, "tol": 1e-5},
                "models": [{"model": p} for p in paths]}
    if method == "arcee_fusion":
        return {"merge_method": "arcee_fusion", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": paths[1]}]}
    if method == "nearswap":
        return {"merge_method": "nearswap", "base_model": paths[0], "dtype": "float32",
                "parameters": {"t": 0.001}, "models": [{"model": paths[1]}]}
    if method == "dare_linear":
        return {"merge_method": "dare_linear", "base_model": paths[0], "dtype": "float32",
                "parameters": {"rescale": True, "normalize": True},
                "models": [{"model": paths[1], "parameters": {"weight": 0.6, "density": 0.55}},
                           {"model": paths[2], "parameters": {"weight": 0.4, "density": 0.7}}]}
    raise KeyError(method)


def bloom_gguf(folder: Path, path: Path, qtype_name: str) -> None:
    """BLOOM to GGUF with the ``gguf`` package, as llama.cpp's ``BloomModel`` converter does: the fused
    ``query_key_value`` rows (per head: q, k, v) regrouped to all q, all k, all v; the tied head not written."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    march = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == "bloom")
    names = gguf.get_tensor_name_map(march, cfg["n_layer"])
    qtype = gguf.GGMLQuantizationType[qtype_name]
    n_head, n_embd = cfg["n_head"], cfg["hidden_size"]
    w = gguf.GGUFWriter(str(path), "bloom")
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(cfg["n_layer"])
    w.add_feed_forward_length(4 * n_embd)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    w.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{qtype_name}"))
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"<{i}>" for i in range(VOCAB)])
    for hf_name, t in state.items():
        if hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name.removeprefix("transformer."), try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(hf_name)
        t = t.float()
        if "query_key_value" in hf_name:
            if t.ndim == 2:
                qkv = t.reshape(n_head, 3, n_embd // n_head, n_embd)
                t = torch.cat([qkv[:, i].reshape(-1, n_embd) for i in range(3)])
            else:
                qkv = t.reshape(n_head, 3, n_embd // n_head)
                t = torch.cat([qkv[:, i].reshape(-1) for i in range(3)])
        arr = t.numpy()
        if arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_bin_shards(state: dict[str, torch.Tensor], out: Path, parts: int) -> None:
    """``pytorch_model-0000k-of-0000n.bin`` pickles and their ``pytorch_model.bin.index.json``, written as
    transformers 4's ``save_pretrained(safe_serialization=False)`` wrote them."""
    keys = list(state)
    size = math.ceil(len(keys) / parts)
    weight_map = {}
    total = 0
    for k in range(parts):
        name = f"pytorch_model-{k + 1:05d}-of-{parts:05d}.bin"
        chunk = {key: state[key].contiguous() for key in keys[k * size:(k + 1) * size]}
        torch.save(chunk, out / name)
        weight_map.update({key: name for key in chunk})
        total += sum(t.numel() * t.element_size() for t in chunk.values())
    (out / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def card(out: Path, base: str, relation: str | None) -> None:
    """A model card whose front matter declares ``base`` (what the uploader wrote; may be wrong)."""
    lines = ["---", f"base_model: {base}"] + ([f"base_model_relation: {relation}"] if relation else []) + ["---"]
    (out / "README.md").write_text("\n".join(lines) + "\n\nA model.\n")


def build(sp: Spec, folders: dict[str, Path], out: Path, family: dict[str, str], ids: dict[str, str]) -> str:
    """Make ``sp`` into ``out``; returns its family."""
    a = sp.args
    fam = a["family"] if sp.how == "pretrain" else family[sp.inputs[0]]
    cls = model_cls(fam)
    src = folders[sp.inputs[0]] if sp.inputs else None
    seed = zlib.crc32(sp.role.encode()) % 100_000
    if sp.how == "pretrain":
        torch.manual_seed(a["seed"])
        model = cls(make_config(fam))
        head = torch.nn.Linear(64, len(ALL)) if fam == "clip" else None
        fit(model, fam, ALL, a["seed"], a["steps"], a["lr"], head=head)
        model.save_pretrained(str(out))
    elif sp.how == "finetune":
        model = cls.from_pretrained(str(src))
        fit(model, fam, a["tasks"], seed, a["steps"], a["lr"], optimiser=a.get("optimiser", "adamw"))
        model.save_pretrained(str(out))
    elif sp.how == "adapter":
        import peft

        model = cls.from_pretrained(str(src))
        after = None
        if a["kind"] == "vera":
            cfg: Any = peft.VeraConfig(r=16, target_modules=["q_proj", "v_proj", "down_proj"], vera_dropout=0.0,
                                       task_type="CAUSAL_LM")
        elif a["kind"] == "adalora":
            cfg = peft.AdaLoraConfig(init_r=8, target_r=4, tinit=10, tfinal=20, deltaT=5, total_step=a["steps"],
                                     target_modules=["q", "v", "wi_0", "wo"], lora_alpha=16, task_type="SEQ_2_SEQ_LM")
        elif a["kind"] == "lora_embed":
            cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["word_embeddings", "query_key_value"],
                                  lora_dropout=0.0, task_type="CAUSAL_LM")
        else:
            cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"], lora_dropout=0.0,
                                  task_type="CAUSAL_LM")
        pm = peft.get_peft_model(model, cfg)
        if a["kind"] == "adalora":
            def after(step: int) -> None:
                pm.base_model.update_and_allocate(step)
        names = ("vera_lambda", "lora_")
        fit(pm, fam, a["tasks"], seed, a["steps"], a["lr"], only=lambda n: any(k in n for k in names),
            after_step=after)
        pm.save_pretrained(str(out))
        adapter_cfg = out / "adapter_config.json"
        meta = json.loads(adapter_cfg.read_text())
        if sp.declares is not None:  # what the uploader's config says the base is: a wrong path, or nothing
            meta["base_model_name_or_path"] = str(folders[sp.declares]) if sp.declares else None
            adapter_cfg.write_text(json.dumps(meta, indent=2))
            if sp.declares:  # PEFT's own card repeats the config's base: the uploader's wrong one
                card(out, str(folders[sp.declares]), "adapter")
            else:
                (out / "README.md").write_text("---\nlibrary_name: peft\n---\n\nAn adapter.\n")
    elif sp.how == "fold":
        from peft import PeftModel

        model = cls.from_pretrained(str(src))
        PeftModel.from_pretrained(model, str(folders[sp.inputs[1]])).merge_and_unload().save_pretrained(str(out))
    elif sp.how == "merge":
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        cfg = mergekit_config(a["method"], [str(folders[r]) for r in sp.inputs])
        run_merge(MergeConfiguration.model_validate(cfg), str(out),
                  MergeOptions(copy_tokenizer=False, quiet=True, random_seed=3, write_model_card=False,
                               lazy_unpickle=False))
    elif sp.how == "pickle":  # a plain torch.save of the state dict, as many older uploads are
        model = cls.from_pretrained(str(src))
        out.mkdir(parents=True)
        model.config.save_pretrained(str(out))
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out / "pytorch_model.bin")
    elif sp.how == "bin_shards":
        model = cls.from_pretrained(str(src), dtype=torch.float16)
        out.mkdir(parents=True)
        model.config.save_pretrained(str(out))
        write_bin_shards({k: v for k, v in model.state_dict().items()}, out, 3)
    elif sp.how == "cast":
        cls.from_pretrained(str(src), dtype=getattr(torch, a["dtype"])).save_pretrained(str(out))
    elif sp.how == "gguf":
        out.mkdir(parents=True)
        bloom_gguf(src, out / f"bloom-{a['qtype'].lower()}.gguf", a["qtype"])  # type: ignore[arg-type]
    elif sp.how == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        model = cls.from_pretrained(str(src), dtype=torch.float32,
                                    quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))
        model.save_pretrained(str(out), safe_serialization=True)
    else:
        raise KeyError(sp.how)
    if sp.declares and sp.how != "adapter":
        card(out, ids[sp.declares], "merge" if sp.how == "merge" else "finetune")
    return fam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    plan = specs()
    ids = {sp.role: rng.bytes(5).hex() for sp in plan}
    typed = args.out / "typed"
    if typed.exists():
        shutil.rmtree(typed)
    typed.mkdir(parents=True)
    folders: dict[str, Path] = {}
    family: dict[str, str] = {}
    recipe = []
    for sp in plan:
        t0 = time.perf_counter()
        folders[sp.role] = typed / ids[sp.role]
        family[sp.role] = build(sp, folders, folders[sp.role], family, ids)
        recipe.append({"id": ids[sp.role], "role": sp.role, "how": sp.how, "family": family[sp.role],
                       "inputs": [ids[r] for r in sp.inputs], "relation": sp.relation, "args": dict(sp.args),
                       "declared_base": (ids[sp.declares] if sp.declares else sp.declares),
                       "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{sp.role:20s} {ids[sp.role]} {time.perf_counter() - t0:6.1f}s", flush=True)
    edges = [{"parent": ids[p], "child": ids[sp.role], "relation": sp.relation}
             for sp in plan if sp.relation for p in (sp.truth or sp.inputs)]
    (typed / "truth.json").write_text(json.dumps({"edges": edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str))


if __name__ == "__main__":
    main()
