"""A fifth typed model set, built the way a fifth team might, with none of ``mother_zoo``'s code (issue 11).

The four earlier stress sets (``benchmarks/elsewhere_set.py`` .. ``elsewhere4_set.py``) were each built outside
``mother zoo typed``; this one shares no code with any of them and covers what none of them nor the zoo covers
(checked by grepping their config classes, mergekit methods and options, PEFT configs and GGUF types), with the
real tools only (transformers training, peft, mergekit, the ``gguf`` package's writer and quantizers; never
noise added to weights):

- architectures under their transformers names used nowhere yet: **Arcee** (AFM: ReLU^2 MLP without a gate),
  **LFM2** (Liquid's hybrid: gated short convolutions in most blocks, attention in some, an embedding norm),
  **Whisper** (speech encoder-decoder with a convolutional front end, trained here on synthetic log-mel
  features), **ConvNeXt** (an image classifier: depthwise convolutions, layer scale) and an **Apertus**
  distractor (xIELU activation, q / k norms);
- its own data (decoders: each task a second-order recurrence ``x[t] = (a x[t-1] + b x[t-2] + c) mod V``;
  Whisper: a token string read from a fixed random "acoustic" projection, transcribed through the task's affine
  map; ConvNeXt: classes drawn from per-task random templates plus noise) and loop (step decay, halving every
  third of the run; NAdam, RAdam, Adamax or RMSprop: optimisers no earlier set used);
- a **chain of six generations** below a root (Arcee), each on other data;
- mergekit: **ties with normalisation** (a known weak spot), **nuslerp without a base**, **dare_ties**, and a
  **linear merge whose input is a quantized-then-dequantized model** (the Q4_0 GGUF of a fine-tune, read back
  with the ``gguf`` package's dequantizer: truth names the GGUF as the parent, not its source); not made: a
  Whisper merge (mergekit 0.1.5's whisper table names ``model.decoderembed_tokens.weight`` and fails);
- PEFT: **LoHa** (unmerged and merged), **LoKr on convolutions** (ConvNeXt, unmerged and merged), **two named
  adapters in one folder** (``default`` at the top, a second in its subfolder, as ``save_pretrained`` writes
  them), an adapter saved with ``safe_serialization=False`` (``adapter_model.bin``, a pickle), an adapter whose
  ``adapter_config.json`` names a base path that does not exist, and a **MiSS** adapter (a PEFT type the engine
  may not read: it must say so for that model, not crash);
- formats: GGUF **Q8_0 and Q4_0 of Arcee** (an architecture no GGUF of ours used), a **sharded float32
  safetensors** fine-tune with its index json, a **``pytorch_model.bin``** fine-tune (a torch pickle), an **fp16
  and a bf16 copy of one source** (two converts side by side);
- metadata that lies: a byte-identical copy under another name whose card names the root, a chain member whose
  card names a model that is not its parent.

Ids are random hex strings (14 digits). The truth file (``typed/truth.json``) is in the engine's format; how each
model was made is in ``recipe.json`` beside the ``typed`` folder.

    python benchmarks/elsewhere5_set.py --out /tmp/elsewhere5/set1 --seed 1
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

V = 128  # vocabulary of the text models
LEN = 20  # tokens per sequence
BATCH = 10
MELS = 16  # Whisper's mel bins; frames = 2 * SOURCE
SOURCE = 12
WORDS = 8  # tokens spoken per Whisper utterance
IMG = 32  # ConvNeXt images are 3 x IMG x IMG
CLASSES = 6


@dataclass(frozen=True)
class Spec:
    """How one model of the set is made (``how``), from which models (``inputs``), and its truth."""

    key: str
    how: str
    inputs: tuple[str, ...] = ()
    truth: str | None = None
    opts: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    truth_parents: tuple[str, ...] | None = None  # where the truth parents are not ``inputs``
    declares: str | None = None  # the key whose id the card names as base (wrong on purpose)


# --- architectures ------------------------------------------------------------------------------------------

def make_config(family: str) -> Any:
    """A small config (width 64) of ``family``."""
    import transformers as tf

    common = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if family == "arcee":
        return tf.ArceeConfig(vocab_size=V, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                              tie_word_embeddings=False, **common)
    if family == "lfm2":
        return tf.Lfm2Config(vocab_size=V, hidden_size=64, intermediate_size=128, block_ff_dim=128,
                             block_auto_adjust_ff_dim=False, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, conv_L_cache=3,
                             layer_types=["conv", "full_attention", "conv"], tie_word_embeddings=True, **common)
    if family == "apertus":
        return tf.ApertusConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                tie_word_embeddings=False, **common)
    if family == "whisper":
        return tf.WhisperConfig(vocab_size=V, num_mel_bins=MELS, d_model=64, encoder_layers=2, decoder_layers=2,
                                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                decoder_ffn_dim=128, max_source_positions=SOURCE, max_target_positions=16,
                                decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                suppress_tokens=[], begin_suppress_tokens=[], dropout=0.0)
    if family == "convnext":
        return tf.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, patch_size=4,
                                 image_size=IMG, num_labels=CLASSES)
    raise KeyError(family)


def model_class(family: str) -> Any:
    import transformers as tf

    return {"arcee": tf.ArceeForCausalLM, "lfm2": tf.Lfm2ForCausalLM, "apertus": tf.ApertusForCausalLM,
            "whisper": tf.WhisperForConditionalGeneration,
            "convnext": tf.ConvNextForImageClassification}[family]


# --- data ---------------------------------------------------------------------------------------------------

def task_params(task: int) -> tuple[int, int, int]:
    g = np.random.default_rng(5000 + task)
    return int(g.integers(1, V)), int(g.integers(1, V)), int(g.integers(0, V))


def text_batch(tasks: list[int], g: np.random.Generator) -> torch.Tensor:
    """(BATCH, LEN): two random tokens, then the row's task's second-order recurrence."""
    out = np.zeros((BATCH, LEN), dtype=np.int64)
    for r in range(BATCH):
        a, b, c = task_params(tasks[int(g.integers(len(tasks)))])
        x = list(g.integers(3, V, size=2))
        while len(x) < LEN:
            x.append(3 + (a * x[-1] + b * x[-2] + c) % (V - 3))
        out[r] = x
    return torch.from_numpy(out)


_ACOUSTIC = torch.from_numpy(np.random.default_rng(77).standard_normal((V, MELS)).astype(np.float32))


def speech_batch(tasks: list[int], g: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (BATCH, MELS, 2 * SOURCE): WORDS tokens, each held 3 frames through a fixed projection, noisy;
    labels (BATCH, WORDS + 1): each token mapped by its row's task, then eos."""
    words = g.integers(3, V, size=(BATCH, WORDS))
    frames = np.repeat(words, 3, axis=1)[:, : 2 * SOURCE]
    feats = _ACOUSTIC[torch.from_numpy(frames)].transpose(1, 2)
    feats = feats + 0.1 * torch.from_numpy(g.standard_normal(feats.shape).astype(np.float32))
    labels = np.zeros((BATCH, WORDS + 1), dtype=np.int64)
    for r in range(BATCH):
        a, _, c = task_params(tasks[int(g.integers(len(tasks)))])
        labels[r, :WORDS] = 3 + (a * words[r] + c) % (V - 3)
        labels[r, WORDS] = 2
    return feats, torch.from_numpy(labels)


def image_batch(tasks: list[int], g: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (BATCH, 3, IMG, IMG): a class template of the row's task plus noise; labels (BATCH,)."""
    labels = g.integers(CLASSES, size=BATCH)
    imgs = np.empty((BATCH, 3, IMG, IMG), dtype=np.float32)
    for r in range(BATCH):
        task = tasks[int(g.integers(len(tasks)))]
        tmpl = np.random.default_rng(8000 + 31 * task + int(labels[r])).standard_normal((3, IMG // 4, IMG // 4))
        imgs[r] = np.kron(tmpl, np.ones((1, 4, 4))) + 0.5 * g.standard_normal((3, IMG, IMG))
    return torch.from_numpy(imgs), torch.from_numpy(labels)


def step_loss(model: Any, family: str, tasks: list[int], g: np.random.Generator) -> Any:
    if family == "whisper":
        feats, labels = speech_batch(tasks, g)
        return model(input_features=feats, labels=labels).loss
    if family == "convnext":
        imgs, labels = image_batch(tasks, g)
        return model(pixel_values=imgs, labels=labels).loss
    ids = text_batch(tasks, g)
    return model(input_ids=ids, labels=ids).loss


def fit(model: Any, family: str, tasks: list[int], seed: int, steps: int, lr: float, optim: str = "nadam",
        only: Any = None) -> float:
    """Train the parameters ``only(name)`` accepts (all by default); lr halves after each third of the run."""
    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(only is None or bool(only(n)))
        if p.requires_grad:
            params.append(p)
    opt = {"nadam": torch.optim.NAdam, "radam": torch.optim.RAdam, "adamax": torch.optim.Adamax,
           "rmsprop": torch.optim.RMSprop}[optim](params, lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.5)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = step_loss(model, family, tasks, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return float(loss.detach())


# --- the set ------------------------------------------------------------------------------------------------

def recipe_plan() -> list[Spec]:
    s = Spec
    chain = [s("arc_c1", "tune", ("arc_root",), "finetune", {"tasks": [11], "steps": 60, "lr": 6e-4})]
    for k in range(2, 7):
        chain.append(s(f"arc_c{k}", "tune", (f"arc_c{k - 1}",), "finetune",
                       {"tasks": [10 + k], "steps": 60, "lr": 6e-4, "optim": ("nadam", "radam")[k % 2]},
                       declares="arc_root" if k == 5 else None))
    return [
        # Arcee: a root, a chain of six, two fine-tunes and their normalised TIES, Q4_0 / Q8_0 GGUFs, a merge
        # whose input is the dequantized Q4_0, fp16 and bf16 copies of one source, a sharded fine-tune, a
        # pickled fine-tune, a byte-identical copy whose card names the root
        s("arc_root", "pretrain", opts={"family": "arcee", "seed": 21, "steps": 250, "lr": 3e-3}),
        *chain,
        s("arc_a", "tune", ("arc_root",), "finetune", {"tasks": [21], "steps": 80, "lr": 8e-4, "optim": "radam"}),
        s("arc_b", "tune", ("arc_root",), "finetune", {"tasks": [22], "steps": 80, "lr": 8e-4, "optim": "adamax"}),
        s("arc_ties", "merge", ("arc_root", "arc_a", "arc_b"), "merge", {"method": "ties_norm"}),
        s("arc_a_q4", "gguf", ("arc_a",), "quantized", {"qtype": "Q4_0"}),
        s("arc_c3_q8", "gguf", ("arc_c3",), "quantized", {"qtype": "Q8_0"}),
        s("arc_deq_lin", "merge_deq", ("arc_a_q4", "arc_b"), "merge", {"method": "linear_half",
                                                                            "layout_of": "arc_a"}),
        s("arc_b_fp16", "cast", ("arc_b",), "convert", {"dtype": "float16"}),
        s("arc_b_bf16", "cast", ("arc_b",), "convert", {"dtype": "bfloat16"}),
        s("arc_sharded", "tune", ("arc_root",), "finetune", {"tasks": [23], "steps": 80, "lr": 8e-4,
                                                              "save": "sharded"}),
        s("arc_pickled", "tune", ("arc_c1",), "finetune", {"tasks": [24], "steps": 60, "lr": 8e-4,
                                                            "optim": "rmsprop", "save": "pickle"}),
        s("arc_c4_copy", "copy", ("arc_c4",), "convert", declares="arc_root"),
        # LFM2: a root, four siblings, nuslerp without a base, dare_ties, LoHa (unmerged and merged), two named
        # adapters in one folder, a pickled adapter, an adapter naming a base path that does not exist, MiSS
        s("lfm_root", "pretrain", opts={"family": "lfm2", "seed": 22, "steps": 250, "lr": 3e-3}),
        s("lfm_s1", "tune", ("lfm_root",), "finetune", {"tasks": [31], "steps": 80, "lr": 1e-3}),
        s("lfm_s2", "tune", ("lfm_root",), "finetune", {"tasks": [32], "steps": 80, "lr": 1e-3, "optim": "radam"}),
        s("lfm_s3", "tune", ("lfm_root",), "finetune", {"tasks": [33], "steps": 80, "lr": 1e-3, "optim": "adamax"}),
        s("lfm_s4", "tune", ("lfm_root",), "finetune", {"tasks": [34], "steps": 80, "lr": 5e-4,
                                                         "optim": "rmsprop"}),
        s("lfm_nuslerp", "merge", ("lfm_s1", "lfm_s2"), "merge", {"method": "nuslerp_nobase"}),
        s("lfm_dareties", "merge", ("lfm_root", "lfm_s3", "lfm_s4"), "merge", {"method": "dare_ties"}),
        s("lfm_loha", "peft", ("lfm_s1",), "adapter", {"kind": "loha", "tasks": [35], "steps": 60, "lr": 3e-3}),
        s("lfm_loha_m", "unload", ("lfm_s1", "lfm_loha"), "lora", truth_parents=("lfm_s1",)),
        s("lfm_two", "peft", ("lfm_s2",), "adapter", {"kind": "two_named", "tasks": [36], "steps": 60,
                                                       "lr": 3e-3}),
        s("lfm_bin", "peft", ("lfm_s3",), "adapter", {"kind": "lora_bin", "tasks": [37], "steps": 60,
                                                       "lr": 3e-3}),
        s("lfm_nobase", "peft", ("lfm_s4",), "adapter", {"kind": "lora_lost_base", "tasks": [38], "steps": 60,
                                                          "lr": 3e-3}),
        s("lfm_miss", "peft", ("lfm_root",), "adapter", {"kind": "miss", "tasks": [39], "steps": 60,
                                                          "lr": 3e-3}),
        # Whisper: a root, two fine-tunes, an fp16 copy (no merge: mergekit 0.1.5's whisper table asks for
        # ``model.decoderembed_tokens.weight``, a missing dot, and fails on any Whisper)
        s("wh_root", "pretrain", opts={"family": "whisper", "seed": 23, "steps": 250, "lr": 3e-3}),
        s("wh_a", "tune", ("wh_root",), "finetune", {"tasks": [41], "steps": 80, "lr": 1e-3}),
        s("wh_b", "tune", ("wh_root",), "finetune", {"tasks": [42], "steps": 80, "lr": 1e-3, "optim": "radam"}),
        s("wh_a_fp16", "cast", ("wh_a",), "convert", {"dtype": "float16"}),
        # ConvNeXt: a root, two fine-tunes, LoKr on its convolutions (unmerged and merged)
        s("cnx_root", "pretrain", opts={"family": "convnext", "seed": 24, "steps": 200, "lr": 3e-3,
                                        "tasks": [0, 1]}),
        s("cnx_a", "tune", ("cnx_root",), "finetune", {"tasks": [51], "steps": 80, "lr": 1e-3}),
        s("cnx_b", "tune", ("cnx_root",), "finetune", {"tasks": [52], "steps": 80, "lr": 1e-3,
                                                        "optim": "adamax"}),
        s("cnx_lokr", "peft", ("cnx_a",), "adapter", {"kind": "lokr_conv", "tasks": [53], "steps": 60,
                                                       "lr": 3e-3}),
        s("cnx_lokr_m", "unload", ("cnx_a", "cnx_lokr"), "lora", truth_parents=("cnx_a",)),
        # distractors: an unrelated Arcee root, an Apertus
        s("x_arcee", "pretrain", opts={"family": "arcee", "seed": 25, "steps": 200, "lr": 3e-3}),
        s("x_apertus", "pretrain", opts={"family": "apertus", "seed": 26, "steps": 200, "lr": 3e-3}),
    ]


# --- tools --------------------------------------------------------------------------------------------------

def mergekit_config(method: str, paths: list[str]) -> dict[str, Any]:
    if method == "ties_norm":
        return {"merge_method": "ties", "base_model": paths[0], "dtype": "float32",
                "parameters": {"normalize": True, "int8_mask": False},
                "models": [{"model": paths[1], "parameters": {"weight": 0.7, "density": 0.5}},
                           {"model": paths[2], "parameters": {"weight": 0.7, "density": 0.5}}]}
    if method == "linear_half":
        return {"merge_method": "linear", "dtype": "float32",
                "models": [{"model": paths[0], "parameters": {"weight": 0.5}},
                           {"model": paths[1], "parameters": {"weight": 0.5}}]}
    if method == "nuslerp_nobase":
        return {"merge_method": "nuslerp", "dtype": "float32",
                "models": [{"model": paths[0], "parameters": {"weight": 0.6}},
                           {"model": paths[1], "parameters": {"weight": 0.4}}]}
    if method == "dare_ties":
        return {"merge_method": "dare_ties", "base_model": paths[0], "dtype": "float32",
                "models": [{"model": paths[1], "parameters": {"weight": 0.6, "density": 0.6}},
                           {"model": paths[2], "parameters": {"weight": 0.5, "density": 0.7}}]}
    raise KeyError(method)


def run_mergekit(method: str, paths: list[str], out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(mergekit_config(method, paths)), str(out),
              MergeOptions(copy_tokenizer=False, quiet=True, random_seed=11, write_model_card=False,
                           lazy_unpickle=False))


def arcee_gguf(folder: Path, path: Path, qtype_name: str) -> None:
    """Arcee to GGUF with the ``gguf`` package, as llama.cpp's converter writes a Llama-layout model (q / k rows
    permuted for its rotary layout): 2-D weights in ``qtype_name``, 1-D ones float32."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.ARCEE, cfg["num_hidden_layers"])
    qtype = gguf.GGMLQuantizationType[qtype_name]
    w = gguf.GGUFWriter(str(path), "arcee")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(float(cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype_name == "Q8_0" else gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{k}" for k in range(V)])

    def permute(t: torch.Tensor, heads: int) -> torch.Tensor:  # llama.cpp's LlamaModel.permute
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    for hf_name, t in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(hf_name)
        t = t.float()
        if hf_name.endswith("q_proj.weight"):
            t = permute(t, cfg["num_attention_heads"])
        elif hf_name.endswith("k_proj.weight"):
            t = permute(t, cfg["num_key_value_heads"])
        arr = t.numpy()
        if arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequantized_arcee(gguf_path: Path, like: Path, out: Path) -> None:
    """The model a user gets back from a GGUF (dequantized, names and q / k rows undone), as an HF folder."""
    import gguf
    from safetensors.torch import load_file, save_file

    cfg = json.loads((like / "config.json").read_text())
    state = load_file(str(like / "model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.ARCEE, cfg["num_hidden_layers"])
    back = {names.get_name(n, try_suffixes=(".weight", ".bias")): n for n in state}
    reader = gguf.GGUFReader(str(gguf_path))
    new: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        hf = back[t.name]
        arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape(state[hf].shape)
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        for suffix, heads in (("q_proj.weight", cfg["num_attention_heads"]),
                              ("k_proj.weight", cfg["num_key_value_heads"])):
            if hf.endswith(suffix):  # inverse of the converter's permute
                x = x.reshape(heads, x.shape[0] // heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
        new[hf] = x.contiguous()
    out.mkdir(parents=True)
    shutil.copy(like / "config.json", out / "config.json")
    save_file(new, str(out / "model.safetensors"), metadata={"format": "pt"})


def peft_adapter(kind: str, model: Any, family: str, opts: dict[str, Any], seed: int, out: Path) -> None:
    import peft

    attn = ["q_proj", "k_proj", "v_proj", "out_proj"]
    keep: tuple[str, ...] = ("lora_",)
    if kind == "loha":
        cfg: Any = peft.LoHaConfig(r=4, alpha=8, target_modules=attn + ["w1", "w2", "w3"])
        keep = ("hada_",)
    elif kind == "lokr_conv":
        cfg = peft.LoKrConfig(r=4, alpha=8, target_modules=["dwconv", "pwconv1", "pwconv2"])
        keep = ("lokr_",)
    elif kind == "miss":
        cfg = peft.MissConfig(r=8, target_modules=["q_proj", "v_proj", "w1", "w3"])
        keep = ("miss_",)
    else:
        cfg = peft.LoraConfig(r=6, lora_alpha=12, target_modules=attn + ["in_proj"], lora_dropout=0.0)
    pm = peft.get_peft_model(model, cfg)
    fit(pm, family, opts["tasks"], seed, opts["steps"], opts["lr"], only=lambda n: any(k in n for k in keep))
    if kind == "two_named":  # a second adapter beside the first, trained on other data, saved in its subfolder
        pm.add_adapter("second", peft.LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0))
        pm.set_adapter("second")
        fit(pm, family, [opts["tasks"][0] + 50], seed + 1, opts["steps"], opts["lr"],
            only=lambda n: "lora_" in n and ".second." in n)
        pm.set_adapter("default")
    pm.save_pretrained(str(out), safe_serialization=(kind != "lora_bin"))
    if kind == "lora_lost_base":  # the uploader's local path, gone
        cfg_path = out / "adapter_config.json"
        c = json.loads(cfg_path.read_text())
        c["base_model_name_or_path"] = "/home/someone/checkpoints/lfm2-tuned-final"
        cfg_path.write_text(json.dumps(c, indent=2))


def build(sp: Spec, at: dict[str, Path], out: Path, family_of: dict[str, str], ids: dict[str, str]) -> str:
    o = sp.opts
    family = o["family"] if sp.how == "pretrain" else family_of[sp.inputs[0]]
    cls = model_class(family)
    src = at[sp.inputs[0]] if sp.inputs else None
    seed = zlib.adler32(sp.key.encode()) % 99_991
    if sp.how == "pretrain":
        torch.manual_seed(o["seed"])
        model = cls(make_config(family))
        fit(model, family, o.get("tasks", list(range(6))), o["seed"], o["steps"], o["lr"], "nadam")
        model.save_pretrained(str(out))
    elif sp.how == "tune":
        model = cls.from_pretrained(str(src))
        fit(model, family, o["tasks"], seed, o["steps"], o["lr"], o.get("optim", "nadam"))
        if o.get("save") == "sharded":
            model.save_pretrained(str(out), max_shard_size="60KB")
        elif o.get("save") == "pickle":
            out.mkdir(parents=True)
            model.config.save_pretrained(str(out))
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "pytorch_model.bin")
        else:
            model.save_pretrained(str(out))
    elif sp.how == "peft":
        peft_adapter(o["kind"], cls.from_pretrained(str(src)), family, o, seed, out)
    elif sp.how == "unload":
        from peft import PeftModel

        base = cls.from_pretrained(str(src))
        PeftModel.from_pretrained(base, str(at[sp.inputs[1]])).merge_and_unload().save_pretrained(str(out))
    elif sp.how == "merge":
        run_mergekit(o["method"], [str(at[k]) for k in sp.inputs], out)
    elif sp.how == "merge_deq":  # the GGUF read back, then merged: the merge's input is the quantized model
        src_of_gguf = at[o["layout_of"]]  # the GGUF's own source: its config and tensor names
        tmp = out.parent.parent / "scratch" / f"deq_{sp.key}"
        if tmp.exists():
            shutil.rmtree(tmp)
        dequantized_arcee(next(at[sp.inputs[0]].glob("*.gguf")), src_of_gguf, tmp)
        run_mergekit(o["method"], [str(tmp)] + [str(at[k]) for k in sp.inputs[1:]], out)
    elif sp.how == "gguf":
        out.mkdir(parents=True)
        arcee_gguf(src, out / f"model-{o['qtype'].lower()}.gguf", o["qtype"])  # type: ignore[arg-type]
    elif sp.how == "cast":
        model = cls.from_pretrained(str(src))
        model.to(getattr(torch, o["dtype"])).save_pretrained(str(out))
    elif sp.how == "copy":
        shutil.copytree(src, out)  # type: ignore[arg-type]
    else:
        raise KeyError(sp.how)
    if sp.declares:
        (out / "README.md").write_text(f"---\nbase_model: {ids[sp.declares]}\nbase_model_relation: finetune\n---\n")
    return family


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = np.random.default_rng(1000 + args.seed)
    specs = recipe_plan()
    ids = {sp.key: g.bytes(7).hex() for sp in specs}
    typed = args.out / "typed"
    for d in (typed, args.out / "scratch"):
        if d.exists():
            shutil.rmtree(d)
    typed.mkdir(parents=True)
    at: dict[str, Path] = {}
    family_of: dict[str, str] = {}
    log = []
    for sp in specs:
        t0 = time.perf_counter()
        at[sp.key] = typed / ids[sp.key]
        family_of[sp.key] = build(sp, at, at[sp.key], family_of, ids)
        log.append({"id": ids[sp.key], "key": sp.key, "how": sp.how, "family": family_of[sp.key],
                    "inputs": [ids[k] for k in sp.inputs], "truth": sp.truth, "opts": dict(sp.opts),
                    "card_declares": ids[sp.declares] if sp.declares else None,
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{sp.key:14s} {ids[sp.key]} {time.perf_counter() - t0:6.1f}s", flush=True)
    edges = [{"parent": ids[p], "child": ids[sp.key], "relation": sp.truth}
             for sp in specs if sp.truth for p in (sp.truth_parents or sp.inputs)]
    (typed / "truth.json").write_text(json.dumps({"edges": edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(log, indent=1, default=str))
    shutil.rmtree(args.out / "scratch", ignore_errors=True)


if __name__ == "__main__":
    main()
