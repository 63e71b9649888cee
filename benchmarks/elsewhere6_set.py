"""A sixth typed model set, built the way a sixth team might, with none of ``mother_zoo``'s code (issue 11).

The five earlier stress sets (``benchmarks/elsewhere_set.py`` .. ``elsewhere5_set.py``) were each built outside
``mother zoo typed``; this one shares no code with any of them and covers what none of them nor the zoo covers
(checked by grepping their config classes, optimisers, mergekit methods, PEFT configs and GGUF architectures),
with the real tools only (transformers training, peft, mergekit, the ``gguf`` package's writer, quantizer and
dequantizer; never noise added to weights):

- architectures under transformers names used nowhere yet: **Nemotron** (squared-ReLU MLP without a gate,
  ``layernorm1p`` norms with biases, partial rotary, untied head), **DINOv2** (a ViT with layer scale and a
  mask token, image classifier), **ModernBERT** (fused ``Wqkv``, alternating local / global attention, a tied
  decoder), and **Qwen2** at another width (96, tied head) as the merge family;
- its own data (decoders: ``x[t] = (m x[t-1] + x[t-3] + c) mod V`` per task; DINOv2: classes drawn from per-task
  sums of random gratings plus noise; ModernBERT: the same sequences with 20% of tokens masked) and loop (a
  constant learning rate after a short warm-up; AdamW by default);
- training regimes no earlier set used: **AdamW with weight decay 0.5**, **bf16 autocast** training, a
  **frozen-backbone** child (head and last block only), a **checkpoint-as-parent** (an intermediate checkpoint
  of one run saved as a model, the run finishing as its child, a second run started from it), **knowledge
  distillation into a same-shape student initialised from the teacher** (half KL to the teacher, half the new
  task's labels), and a **fan-out of six** DINOv2 siblings of mixed optimisers (SGD with momentum, Adagrad,
  AdamW);
- mergekit methods no earlier set used: **sce** (base + three), **multislerp** (three, with a base),
  **della_linear** (base + two), **breadcrumbs** without TIES over **four task models and a base** (five
  parents);
- PEFT types no earlier set made: **OFT** and **HRA** (unmerged), **LN tuning**, **BOFT on ModernBERT's fused
  Wqkv** (unmerged and merged), a **FourierFT** adapter (a type the engine does not read: it must say so for
  that model, never crash), and a **QLoRA-like** LoRA trained on the dequantized Q8_0 GGUF of its base (the base's
  Q8_0 GGUF in the set too; the adapter's config names the float base, as QLoRA users publish it);
- formats: GGUF of architectures no set wrote yet (**Nemotron Q8_0 and F16**, written as llama.cpp's
  ``NemotronModel`` does: every ``*norm.weight`` stored as 1 + w; **Qwen2 Q8_0**), a fine-tune whose tensor
  names carry a **``model.`` prefix** (a training wrapper's state dict), a **tied model saved with its head
  written out** beside the embedding, **bf16 tensors whose metadata and config say float16 / float32**, an
  fp16 DINOv2 copy;
- metadata: a **byte-identical copy** whose card names the root; a distilled student whose card names the root.

Ids are random hex strings (12 digits). The truth file (``typed/truth.json``) is in the engine's format; how each
model was made is in ``recipe.json`` beside the ``typed`` folder.

    python benchmarks/elsewhere6_set.py --out /tmp/elsewhere6/set1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

VOCAB = 96
SEQ = 20
BATCH = 12
PIX = 32
N_CLASSES = 5


# --- data: every task its own generator ------------------------------------------------------------------------

def token_stream(task: int, seed: int) -> Iterator[torch.Tensor]:
    """Batches (BATCH, SEQ) of ``x[t] = (m x[t-1] + x[t-3] + c) mod VOCAB``, m and c fixed by ``task``."""
    r = np.random.default_rng(7919 * task + 13)
    m, c = int(r.integers(2, 9)), int(r.integers(1, VOCAB))
    g = np.random.default_rng(seed)
    while True:
        x = np.zeros((BATCH, SEQ), dtype=np.int64)
        x[:, :3] = g.integers(0, VOCAB, (BATCH, 3))
        for t in range(3, SEQ):
            x[:, t] = (m * x[:, t - 1] + x[:, t - 3] + c) % VOCAB
        yield torch.from_numpy(x)


def image_stream(task: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (BATCH, 3, PIX, PIX) images: each class a sum of three random gratings (per task), plus noise."""
    r = np.random.default_rng(104729 * task + 5)
    yy, xx = np.mgrid[0:PIX, 0:PIX] / PIX
    protos = np.zeros((N_CLASSES, 3, PIX, PIX), dtype=np.float32)
    for k in range(N_CLASSES):
        for _ in range(3):
            fx, fy, ph = r.uniform(0.5, 6), r.uniform(0.5, 6), r.uniform(0, 6.3)
            protos[k] += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)[None] * r.uniform(0.3, 1, (3, 1, 1))
    g = np.random.default_rng(seed)
    while True:
        y = g.integers(0, N_CLASSES, BATCH)
        x = protos[y] + g.normal(0, 0.8, (BATCH, 3, PIX, PIX)).astype(np.float32)
        yield torch.from_numpy(x), torch.from_numpy(y)


def loss_of(kind: str, model: torch.nn.Module, batch: Any, g: np.random.Generator) -> tuple[torch.Tensor, Any]:
    """The task loss of one batch and the logits (for distillation)."""
    if kind == "image":
        x, y = batch
        out = model(pixel_values=x)
        return F.cross_entropy(out.logits, y), out.logits
    if kind == "mlm":
        mask = torch.from_numpy(g.random(batch.shape) < 0.2)
        inp = batch.clone()
        inp[mask] = VOCAB - 1
        labels = torch.where(mask, batch, torch.full_like(batch, -100))
        out = model(input_ids=inp, labels=labels)
        return out.loss, out.logits
    out = model(input_ids=batch, labels=batch)
    return out.loss, out.logits


# --- the loop --------------------------------------------------------------------------------------------------

def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, wd: float) -> torch.optim.Optimizer:
    if name == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def train(model: torch.nn.Module, kind: str, task: int, seed: int, steps: int, lr: float, *, optim: str = "adamw",
          wd: float = 0.01, bf16: bool = False, trainable: Callable[[str], bool] | None = None,
          teacher: torch.nn.Module | None = None, snapshot: tuple[int, Callable[[], None]] | None = None) -> None:
    """A constant rate after ``steps // 10`` warm-up steps, gradients clipped at 1.0."""
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    stream: Iterator[Any] = image_stream(task, seed) if kind == "image" else token_stream(task, seed)
    for n, p in model.named_parameters():
        p.requires_grad_(trainable is None or trainable(n))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optim, params, lr, wd)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    model.train()
    for step in range(steps):
        batch = next(stream)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, logits = loss_of(kind, model, batch, g)
            if teacher is not None:  # distillation: half KL to the teacher's softened outputs, half the labels
                with torch.no_grad():
                    _, t_logits = loss_of(kind, teacher, batch, np.random.default_rng(seed + step))
                kl = F.kl_div(F.log_softmax(logits.float() / 2, -1), F.softmax(t_logits.float() / 2, -1),
                              reduction="batchmean") * 4
                loss = 0.5 * loss + 0.5 * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if snapshot is not None and step + 1 == snapshot[0]:
            snapshot[1]()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


# --- architectures ---------------------------------------------------------------------------------------------

def new_model(family: str, seed: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(seed)
    if family == "nemotron":
        return tf.NemotronForCausalLM(tf.NemotronConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, partial_rotary_factor=0.5, max_position_embeddings=64,
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    if family == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(
            vocab_size=VOCAB, hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, use_sliding_window=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=0))
    if family == "dinov2":
        return tf.Dinov2ForImageClassification(tf.Dinov2Config(
            hidden_size=64, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=2, image_size=PIX, patch_size=8,
            num_labels=N_CLASSES))
    if family == "modernbert":
        return tf.ModernBertForMaskedLM(tf.ModernBertConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=64, global_attn_every_n_layers=3, local_attention=16, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, tie_word_embeddings=True))
    raise KeyError(family)


def load(family: str, path: Path) -> torch.nn.Module:
    import transformers as tf

    cls = {"nemotron": tf.NemotronForCausalLM, "qwen2": tf.Qwen2ForCausalLM,
           "dinov2": tf.Dinov2ForImageClassification, "modernbert": tf.ModernBertForMaskedLM}[family]
    return cls.from_pretrained(str(path), dtype=torch.float32)


KIND = {"nemotron": "lm", "qwen2": "lm", "dinov2": "image", "modernbert": "mlm"}


# --- GGUF, as llama.cpp's converter writes these architectures --------------------------------------------------

def write_gguf(folder: Path, dest: Path, arch: str, qtype: str) -> None:
    """``folder``'s model as GGUF: 2-D weights in ``qtype``, the rest float32. Nemotron's converter
    (``NemotronModel.modify_tensors``) adds 1 to every ``*norm.weight`` (layernorm1p); Qwen2's writes as is."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    march = {"nemotron": gguf.MODEL_ARCH.NEMOTRON, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch]
    tmap = gguf.get_tensor_name_map(march, cfg["num_hidden_layers"])
    w = gguf.GGUFWriter(str(dest), arch)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    if arch == "nemotron":
        w.add_layer_norm_eps(cfg.get("norm_eps", 1e-5))
        w.add_rope_dimension_count(int(cfg["hidden_size"] // cfg["num_attention_heads"]
                                       * cfg.get("partial_rotary_factor", 0.5)))
    else:
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type({"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "F16": gguf.LlamaFileType.MOSTLY_F16}[qtype])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"<{k}>" for k in range(VOCAB)])
    for hf, t in state.items():
        name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(f"{arch}: no GGUF name for {hf}")
        x = t.float()
        if arch == "nemotron" and hf.endswith("norm.weight"):
            x = x + 1
        arr = x.numpy()
        if arr.ndim == 2 and qtype == "Q8_0" and arr.shape[1] % 32 == 0:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif arr.ndim == 2 and qtype == "F16":
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_back_to_hf(gguf_path: Path, like: Path, out: Path, arch: str) -> None:
    """What a QLoRA-style user trains on: the GGUF's dequantized values under the HF names, as a folder."""
    import gguf
    from safetensors.torch import load_file, save_file

    cfg = json.loads((like / "config.json").read_text())
    state = load_file(str(like / "model.safetensors"))
    march = {"nemotron": gguf.MODEL_ARCH.NEMOTRON, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch]
    tmap = gguf.get_tensor_name_map(march, cfg["num_hidden_layers"])
    hf_of = {tmap.get_name(n, try_suffixes=(".weight", ".bias")): n for n in state}
    new = {}
    for t in gguf.GGUFReader(str(gguf_path)).tensors:
        hf = hf_of[t.name]
        arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape(state[hf].shape)
        new[hf] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    out.mkdir(parents=True)
    shutil.copy(like / "config.json", out / "config.json")
    save_file(new, str(out / "model.safetensors"), metadata={"format": "pt"})


# --- mergekit --------------------------------------------------------------------------------------------------

def merge_config(method: str, base: str | None, others: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"merge_method": method, "dtype": "float32"}
    if base:
        cfg["base_model"] = base
    per: list[dict[str, Any]]
    if method == "sce":
        cfg["parameters"] = {"select_topk": 0.6}
        per = [{"weight": 1.0}] * len(others)
    elif method == "multislerp":
        per = [{"weight": w} for w in (0.5, 0.3, 0.2)]
    elif method == "della_linear":
        cfg["parameters"] = {"epsilon": 0.1, "lambda": 1.0}
        per = [{"weight": 0.6, "density": 0.6}, {"weight": 0.4, "density": 0.5}]
    elif method == "breadcrumbs":
        per = [{"weight": 0.3, "density": 0.8, "gamma": 0.02}] * len(others)
    else:
        raise KeyError(method)
    cfg["models"] = [{"model": p, "parameters": dict(q)} for p, q in zip(others, per, strict=True)]
    return cfg


def mergekit_run(cfg: dict[str, Any], out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(cfg), str(out),
              options=MergeOptions(cuda=False, copy_tokenizer=False, lazy_unpickle=False, low_cpu_memory=True,
                                   quiet=True))


# --- PEFT ------------------------------------------------------------------------------------------------------

def adapter_config(kind: str) -> Any:
    import peft

    if kind == "oft":
        return peft.OFTConfig(oft_block_size=16, target_modules=["q_proj", "v_proj", "down_proj"],
                              module_dropout=0.0)
    if kind == "hra":
        return peft.HRAConfig(r=6, target_modules=["q_proj", "k_proj", "o_proj"])
    if kind == "ln":
        return peft.LNTuningConfig(target_modules=["input_layernorm", "post_attention_layernorm"])
    if kind == "boft":
        return peft.BOFTConfig(boft_block_size=8, boft_n_butterfly_factor=1, target_modules=["Wqkv", "Wo"],
                               boft_dropout=0.0)
    if kind == "fourier":
        return peft.FourierFTConfig(n_frequency=200, scaling=100.0, target_modules=["q_proj", "v_proj"])
    if kind == "qlora":
        return peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                               lora_dropout=0.0)
    raise KeyError(kind)


# --- the recipe ------------------------------------------------------------------------------------------------

class SetBuilder:
    """Makes the models one by one, each in ``typed/<id>``, and records the truth and the recipe."""

    def __init__(self, out: Path, seed: int) -> None:
        self.typed = out / "typed"
        self.scratch = out / "scratch"
        self.rng = np.random.default_rng(6000 + seed)
        self.path: dict[str, Path] = {}
        self.family: dict[str, str] = {}
        self.edges: list[dict[str, str]] = []
        self.recipe: list[dict[str, Any]] = []
        self.ids: dict[str, str] = {}

    def slot(self, key: str) -> Path:
        self.ids[key] = self.rng.bytes(6).hex()
        self.path[key] = self.typed / self.ids[key]
        return self.path[key]

    def record(self, key: str, family: str, parents: tuple[str, ...], relation: str | None, how: str,
               t0: float, **opts: Any) -> None:
        self.family[key] = family
        for p in parents:
            self.edges.append({"parent": self.ids[p], "child": self.ids[key], "relation": str(relation)})
        self.recipe.append({"key": key, "id": self.ids[key], "family": family, "how": how,
                            "parents": [self.ids[p] for p in parents], "relation": relation, "opts": opts,
                            "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{key:16s} {self.ids[key]} {how:10s} {time.perf_counter() - t0:6.1f}s", flush=True)

    def card(self, key: str, names: str) -> None:
        (self.path[key] / "README.md").write_text(
            f"---\nbase_model: {self.ids[names]}\nbase_model_relation: finetune\n---\n")

    # models
    def root(self, key: str, family: str, seed: int, steps: int, lr: float, tasks: tuple[int, ...]) -> None:
        t0 = time.perf_counter()
        out = self.slot(key)
        m = new_model(family, seed)
        for k, task in enumerate(tasks):  # broad data: a few tasks in turn
            train(m, KIND[family], task, seed + k, steps // len(tasks), lr, wd=0.05)
        m.save_pretrained(str(out))
        self.record(key, family, (), None, "pretrain", t0, seed=seed, steps=steps, lr=lr, tasks=tasks)

    def tune(self, key: str, parent: str, task: int, steps: int, lr: float, *, save: str = "plain",
             snapshot: tuple[int, str] | None = None, **kw: Any) -> None:
        t0 = time.perf_counter()
        fam = self.family[parent]
        m = load(fam, self.path[parent])
        out = self.slot(key)
        snap = None
        if snapshot is not None:  # an intermediate checkpoint of this run, saved as a model of its own
            at_step, snap_key = snapshot
            snap_out = self.slot(snap_key)

            def save_snapshot() -> None:
                m.save_pretrained(str(snap_out))
            snap = (at_step, save_snapshot)
            t_snap = time.perf_counter()
        if "teacher" in kw:
            kw["teacher"] = load(fam, self.path[kw["teacher"]]).eval()
        train(m, KIND[fam], task, 17 * task + 3, steps, lr, snapshot=snap, **kw)
        if snapshot is not None:
            self.record(snapshot[1], fam, (parent,), "finetune", "checkpoint", t_snap, of=key, step=snapshot[0])
            parent = snapshot[1]
        self.save(m, out, save)
        opts = {k: (v if not isinstance(v, torch.nn.Module) else "teacher") for k, v in kw.items()
                if not callable(v)}
        self.record(key, fam, (parent,), "finetune", "tune", t0, task=task, steps=steps, lr=lr, save=save, **opts)

    def save(self, m: torch.nn.Module, out: Path, how: str) -> None:
        from safetensors.torch import save_file

        if how == "plain":
            m.save_pretrained(str(out))
            return
        out.mkdir(parents=True)
        m.config.save_pretrained(str(out))
        sd = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
        if how == "prefixed":  # a training wrapper's state dict: every name under ``model.``
            save_file({f"model.{k}": v for k, v in sd.items()}, str(out / "model.safetensors"),
                      metadata={"format": "pt"})
        elif how == "head_written":  # a tied model with its head written out beside the embedding
            save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        elif how == "dtype_lies":  # bf16 tensors; the metadata says float16, the config float32
            save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(out / "model.safetensors"),
                      metadata={"format": "pt", "dtype": "float16", "torch_dtype": "float16"})
            c = json.loads((out / "config.json").read_text())
            c["torch_dtype"] = c["dtype"] = "float32"
            (out / "config.json").write_text(json.dumps(c, indent=2))
        else:
            raise KeyError(how)

    def gguf(self, key: str, parent: str, qtype: str) -> None:
        t0 = time.perf_counter()
        out = self.slot(key)
        out.mkdir(parents=True)
        fam = self.family[parent]
        write_gguf(self.path[parent], out / f"{fam}-{qtype.lower()}.gguf", fam, qtype)
        # an F16 GGUF is a conversion (the project's convention: elsewhere_set.py's F16 GGUF), Q8_0 a quantization
        self.record(key, fam, (parent,), "convert" if qtype == "F16" else "quantized", "gguf", t0, qtype=qtype)

    def merge(self, key: str, method: str, base: str | None, others: list[str]) -> None:
        t0 = time.perf_counter()
        out = self.slot(key)
        mergekit_run(merge_config(method, str(self.path[base]) if base else None,
                                  [str(self.path[k]) for k in others]), out)
        parents = ((base,) if base else ()) + tuple(others)
        self.record(key, self.family[others[0]], parents, "merge", "mergekit", t0, method=method)

    def adapter(self, key: str, parent: str, kind: str, task: int, steps: int, lr: float,
                trained_on: Path | None = None) -> None:
        import peft

        t0 = time.perf_counter()
        fam = self.family[parent]
        out = self.slot(key)
        pm = peft.get_peft_model(load(fam, trained_on or self.path[parent]), adapter_config(kind))
        train(pm, KIND[fam], task, 31 * task, steps, lr,
              trainable=lambda n: any(s in n for s in ("oft_", "hra_", "boft_", "fourierft_", "lora_",
                                                        "ln_tuning_layers")))
        pm.save_pretrained(str(out))
        c = json.loads((out / "adapter_config.json").read_text())
        c["base_model_name_or_path"] = str(self.path[parent])  # what the uploader names: the float base
        (out / "adapter_config.json").write_text(json.dumps(c, indent=2))
        self.record(key, fam, (parent,), "adapter", "peft", t0, kind=kind, task=task, steps=steps, lr=lr,
                    trained_on_quantized=trained_on is not None)

    def merged_adapter(self, key: str, adapter: str, parent: str) -> None:
        from peft import PeftModel

        t0 = time.perf_counter()
        fam = self.family[parent]
        out = self.slot(key)
        PeftModel.from_pretrained(load(fam, self.path[parent]), str(self.path[adapter])).merge_and_unload() \
            .save_pretrained(str(out))
        self.record(key, fam, (parent,), "lora", "unload", t0, adapter=self.ids[adapter])

    def cast(self, key: str, parent: str, dtype: str) -> None:
        t0 = time.perf_counter()
        fam = self.family[parent]
        out = self.slot(key)
        load(fam, self.path[parent]).to(getattr(torch, dtype)).save_pretrained(str(out))
        self.record(key, fam, (parent,), "convert", "cast", t0, dtype=dtype)

    def byte_copy(self, key: str, parent: str) -> None:
        t0 = time.perf_counter()
        out = self.slot(key)
        shutil.copytree(self.path[parent], out)
        self.record(key, self.family[parent], (parent,), "convert", "copy", t0)


def build_all(b: SetBuilder) -> None:
    # Nemotron: a root; a run whose step-40 checkpoint is a model (its parent) with a second run from it; AdamW
    # at weight decay 0.5; bf16 autocast; a frozen backbone; a distilled student of the decayed one; Q8_0 and
    # F16 GGUFs; a ``model.``-prefixed fine-tune; a byte copy whose card names the root
    b.root("nem_root", "nemotron", 61, 240, 3e-3, (0, 1, 2))
    b.tune("nem_long", "nem_root", 11, 90, 8e-4, snapshot=(40, "nem_ckpt"))
    b.tune("nem_from_ckpt", "nem_ckpt", 12, 70, 8e-4)
    b.tune("nem_wd", "nem_root", 13, 70, 8e-4, wd=0.5)
    b.tune("nem_bf16", "nem_root", 14, 70, 8e-4, bf16=True)
    b.tune("nem_frozen", "nem_root", 15, 80, 1.5e-3,
           trainable=lambda n: n.startswith("lm_head") or ".layers.1." in n or n.startswith("model.norm"))
    b.tune("nem_kd", "nem_wd", 16, 70, 6e-4, teacher="nem_wd")
    b.card("nem_kd", "nem_root")
    b.gguf("nem_long_q8", "nem_long", "Q8_0")
    b.gguf("nem_frozen_f16", "nem_frozen", "F16")
    b.tune("nem_prefixed", "nem_bf16", 17, 60, 8e-4, save="prefixed")
    b.byte_copy("nem_wd_copy", "nem_wd")
    b.card("nem_wd_copy", "nem_root")
    # Qwen2 (96 wide, tied head): a root, five fine-tunes, merges no set used (sce, multislerp, della_linear,
    # breadcrumbs over five parents), OFT / HRA / LN tuning / FourierFT adapters, a QLoRA-like adapter trained
    # on the dequantized Q8_0 GGUF of the root (that GGUF in the set too), a tied model with its head written
    # out, bf16 tensors whose metadata lies
    b.root("qw_root", "qwen2", 62, 240, 3e-3, (3, 4, 5))
    b.tune("qw_a", "qw_root", 21, 70, 8e-4)
    b.tune("qw_b", "qw_root", 22, 70, 8e-4, optim="sgdm", wd=0.0)
    b.tune("qw_c", "qw_root", 23, 70, 6e-4)
    b.tune("qw_d", "qw_root", 24, 70, 1e-3)
    b.tune("qw_e", "qw_root", 25, 70, 8e-4, optim="adagrad", wd=0.0)
    b.merge("qw_sce", "sce", "qw_root", ["qw_a", "qw_b", "qw_c"])
    b.merge("qw_mslerp", "multislerp", "qw_root", ["qw_c", "qw_d", "qw_e"])
    b.merge("qw_della", "della_linear", "qw_root", ["qw_a", "qw_d"])
    b.merge("qw_bread5", "breadcrumbs", "qw_root", ["qw_a", "qw_b", "qw_d", "qw_e"])
    b.adapter("qw_oft", "qw_e", "oft", 26, 60, 5e-3)
    b.adapter("qw_hra", "qw_b", "hra", 27, 60, 3e-3)
    b.adapter("qw_ln", "qw_c", "ln", 28, 60, 3e-3)
    b.adapter("qw_fourier", "qw_d", "fourier", 29, 40, 3e-3)
    b.gguf("qw_root_q8", "qw_root", "Q8_0")
    deq = b.scratch / "qw_root_deq"
    gguf_back_to_hf(next(b.path["qw_root_q8"].glob("*.gguf")), b.path["qw_root"], deq, "qwen2")
    b.adapter("qw_qlora", "qw_root", "qlora", 30, 60, 3e-3, trained_on=deq)
    b.tune("qw_head", "qw_a", 31, 60, 8e-4, save="head_written")
    b.tune("qw_dtype", "qw_d", 32, 60, 8e-4, save="dtype_lies")
    # DINOv2: a root and a fan-out of six (AdamW, SGD with momentum, Adagrad), an fp16 copy of one
    b.root("dn_root", "dinov2", 63, 240, 2e-3, (0, 1, 2))
    for k, (opt, lr) in enumerate((("adamw", 1e-3), ("sgdm", 2e-2), ("adagrad", 5e-3), ("adamw", 5e-4),
                                   ("sgdm", 1e-2), ("adamw", 2e-3))):
        b.tune(f"dn_s{k + 1}", "dn_root", 40 + k, 60, lr, optim=opt, wd=0.0 if opt != "adamw" else 0.01)
    b.cast("dn_s1_fp16", "dn_s1", "float16")
    # ModernBERT: a root, two fine-tunes, BOFT on the fused Wqkv / Wo (unmerged and merged)
    b.root("mb_root", "modernbert", 64, 240, 3e-3, (6, 7, 8))
    b.tune("mb_a", "mb_root", 51, 70, 8e-4)
    b.tune("mb_b", "mb_root", 52, 70, 8e-4, optim="sgdm", wd=0.0)
    b.adapter("mb_boft", "mb_a", "boft", 53, 60, 5e-3)
    b.merged_adapter("mb_boft_m", "mb_boft", "mb_a")
    # distractors: an unrelated Nemotron root, an unrelated DINOv2 root
    b.root("x_nem", "nemotron", 65, 200, 3e-3, (9, 10))
    b.root("x_dn", "dinov2", 66, 200, 2e-3, (3, 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for d in (args.out / "typed", args.out / "scratch"):
        shutil.rmtree(d, ignore_errors=True)
    (args.out / "typed").mkdir(parents=True)
    b = SetBuilder(args.out, args.seed)
    build_all(b)
    (b.typed / "truth.json").write_text(json.dumps({"edges": b.edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(b.recipe, indent=1, default=str))
    shutil.rmtree(b.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
