"""A seventh stress set made without our generator: Stable Diffusion pipelines, an SD3-like DiT, SigLIP and Swin
families, and CPU quantizers no set has used (issue 11).

Made the way another team would, sharing no code with ``mother_zoo`` or the six earlier stress sets, on what none
of them covers (checked by grepping the zoo and the six scripts for config classes, formats and quantizers):

- **Stable Diffusion, whole pipelines** (diffusers ``StableDiffusionPipeline.save_pretrained``: ``unet/``,
  ``vae/``, ``text_encoder/``; every earlier SD set saved the UNet alone). A tiny ``UNet2DConditionModel``
  conditioned on a tiny ``CLIPTextModel`` through cross-attention, a tiny ``AutoencoderKL``; its own data
  (images are per-style sums of random gratings, prompts per-style token ids), its own loop (the diffusers
  text-to-image recipe: VAE latents times the scaling factor, ``DDPMScheduler.add_noise``, epsilon MSE, AdamW).
  The family: a base (VAE, text encoder and UNet trained), a fine-tune with **EMA** (``diffusers.training_utils
  .EMAModel``) published as its EMA weights, the same run's **non-EMA weights** as a pruned single file, a
  **single file holding both** (``model.diffusion_model.*`` = raw, ``model_ema.*`` = EMA, the VAE as
  ``first_stage_model.*``, the text encoder as ``cond_stage_model.transformer.*``: what the original scripts
  and A1111 write), a **DreamBooth-like fine-tune of UNet and text encoder together**, its **fp16 variant
  folder** (``save_pretrained(variant="fp16")``: ``*.fp16.safetensors`` only), a **kohya LoRA with text-encoder
  layers** (peft, ``convert_state_dict_to_kohya``, sd-scripts' ``ss_*`` header), a **diffusers LoRA**
  (``save_lora_weights``: ``pytorch_lora_weights.safetensors``, ``unet.*`` / ``text_encoder.*`` keys, the
  training script's model card naming its base), a **LoRA fused into a pipeline** (``load_lora_weights``,
  ``fuse_lora``, ``unload_lora_weights``), a **weighted-sum checkpoint merge of two single files** (A1111's
  merger: every key, VAE and text encoder included), a fine-tune of a fine-tune and an unrelated pipeline.
- **An SD3-like DiT** (``SD3Transformer2DModel`` in a ``transformer/`` folder with ``model_index.json``) trained
  with rectified flow (``FlowMatchEulerDiscreteScheduler`` sigmas): a base, two fine-tunes, a diffusers LoRA of
  the transformer (``StableDiffusion3Pipeline.save_lora_weights``) and a bf16 copy.
- **SigLIP** (``SiglipForImageClassification``): a base, two fine-tunes, a **linear probe** (backbone frozen,
  only the classifier trained), a PEFT LoRA adapter (unmerged), and **compressed-tensors** checkpoints as
  llm-compressor writes them with a calibration-free RTN recipe (min-max scales, ``ModelCompressor``):
  **W8A8 int-quantized** (channel) and **W4A16 pack-quantized** (group 16); an unrelated SigLIP.
- **Swin** (``SwinForImageClassification``): a base, a fine-tune, its fine-tune, a LoRA merged by PEFT
  (``merge_and_unload``), and **torchao int4 weight-only** (``IntxWeightOnlyConfig``, through transformers'
  ``TorchAoConfig``, saved as transformers saves it).

Never noise added: every model is trained or made by the real tool. Ids are random 12-hex strings; the truth
(``typed/truth.json``) is in the engine's format; ``recipe.json`` beside ``typed/`` says how each was made.

    PYTHONPATH=$PWD nice -n 5 .venv/bin/python benchmarks/elsewhere7_set.py --out /tmp/elsewhere7/set1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

# --- data: per-class sums of random gratings ------------------------------------------------------------------


def gratings(n_classes: int, seed: int, size: int = 16) -> torch.Tensor:
    """(n_classes, 3, size, size) class prototypes, each a sum of three random colour gratings."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    protos = torch.zeros(n_classes, 3, size, size)
    for c in range(n_classes):
        for _ in range(3):
            fx, fy, ph = (torch.rand(3, generator=g) * torch.tensor([0.9, 0.9, 6.28])).tolist()
            colour = torch.rand(3, generator=g) * 2 - 1
            protos[c] += colour[:, None, None] * torch.sin(fx * xx + fy * yy + ph)[None]
    return protos / 3


def image_batch(protos: torch.Tensor, classes: list[int], n: int,
                g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    pick = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
    x = protos[pick] + 0.3 * torch.randn(n, *protos.shape[1:], generator=g)
    return x.clamp(-1, 1), pick


# --- Stable Diffusion pipeline ----------------------------------------------------------------------------------

PROMPT_LEN = 8
STYLES = 8


def sd_parts(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=PROMPT_LEN, projection_dim=32))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return {"unet": unet, "vae": vae, "text_encoder": te}


def sd_prompts(styles: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(1, 64, (STYLES, PROMPT_LEN), generator=g)
    return table[torch.tensor(styles)]


class SDData:
    def __init__(self, seed: int) -> None:
        self.protos = gratings(STYLES, seed)
        self.prompts = sd_prompts(list(range(STYLES)), seed + 1)

    def batch(self, styles: list[int], n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, c = image_batch(self.protos, styles, n, g)
        return x, self.prompts[c]


def train_vae(vae: Any, data: SDData, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    for _ in range(steps):
        x, _ = data.batch(list(range(STYLES)), 16, g)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 1e-4 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_sd(parts: dict[str, Any], data: SDData, styles: list[int], steps: int, lr: float, seed: int,
             train_te: bool = False, params: list[torch.nn.Parameter] | None = None,
             on_step: Callable[[], None] | None = None) -> float:
    """The diffusers text-to-image loop: latents * scaling_factor, DDPM noise, epsilon MSE, AdamW."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=200)
    unet, vae, te = parts["unet"], parts["vae"], parts["text_encoder"]
    vae.requires_grad_(False)
    if params is None:
        params = list(unet.parameters()) + (list(te.parameters()) if train_te else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        x, ids = data.batch(styles, 16, g)
        with torch.no_grad():
            lat = vae.encode(x).latent_dist.sample(generator=g) * vae.config.scaling_factor
        cond = te(ids)[0] if train_te or params is not None else te(ids)[0].detach()
        noise = torch.randn(lat.shape, generator=g)
        t = torch.randint(0, 200, (lat.shape[0],), generator=g)
        pred = unet(sched.add_noise(lat, noise, t), t, encoder_hidden_states=cond).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if on_step is not None:
            on_step()
    return float(loss)


def save_pipeline(parts: dict[str, Any], out: Path, variant: str | None = None) -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=None,
                                   unet=parts["unet"], scheduler=DDPMScheduler(num_train_timesteps=200),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(out, variant=variant)


def load_pipeline_parts(folder: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return {"unet": UNet2DConditionModel.from_pretrained(folder / "unet"),
            "vae": AutoencoderKL.from_pretrained(folder / "vae"),
            "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder")}


# The original (LDM) layout of a single file, ported from the table of diffusers'
# scripts/convert_diffusers_to_original_stable_diffusion.py (the script is not in the pip package).

def ldm_unet(sd: dict[str, torch.Tensor], layers: int, levels: int, attn_down: list[bool],
             attn_up: list[bool]) -> dict[str, torch.Tensor]:
    res = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
           ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]
    table: list[tuple[str, str]] = [("time_embed.0.", "time_embedding.linear_1."),
                                    ("time_embed.2.", "time_embedding.linear_2."),
                                    ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."),
                                    ("out.2.", "conv_out.")]
    for i in range(levels):
        for j in range(layers):
            k = 1 + i * (layers + 1) + j
            table.append((f"input_blocks.{k}.0.", f"down_blocks.{i}.resnets.{j}."))
            if attn_down[i]:
                table.append((f"input_blocks.{k}.1.", f"down_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            k = 1 + i * (layers + 1) + layers
            table.append((f"input_blocks.{k}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        for j in range(layers + 1):
            k = i * (layers + 1) + j
            table.append((f"output_blocks.{k}.0.", f"up_blocks.{i}.resnets.{j}."))
            if attn_up[i]:
                table.append((f"output_blocks.{k}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            k = i * (layers + 1) + layers
            table.append((f"output_blocks.{k}.{2 if attn_up[i] else 1}.", f"up_blocks.{i}.upsamplers.0."))
    table += [("middle_block.1.", "mid_block.attentions.0.")]
    table += [(f"middle_block.{2 * j}.", f"mid_block.resnets.{j}.") for j in range(2)]
    out = {}
    for name, t in sd.items():
        new = name
        for ldm, hf in table:
            if new.startswith(hf):
                new = ldm + new[len(hf):]
                break
        if new.startswith(("input_blocks", "output_blocks", "middle_block")):
            for ldm, hf in res:
                new = new.replace(f".{hf}.", f".{ldm}.")
        out[new] = t
    return out


def ldm_vae(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in sd.items():
        new = name.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        new = new.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        new = new.replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm")
        for hf, ldm in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            new = new.replace(f"mid_block.attentions.0.{hf}.", f"mid.attn_1.{ldm}.")
        if ".mid.attn_1." in "." + new and t.ndim == 2:
            t = t[:, :, None, None]  # the original VAE's attention is 1x1 convolutions
        for i in range(levels):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.")
        out[new] = t
    return out


def single_file(parts: dict[str, Any], ema_unet: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The whole pipeline in one state dict under the original names (EMA copy as ``model_ema.*`` if given)."""
    args = dict(layers=1, levels=2, attn_down=[True, False], attn_up=[False, True])
    sd = {}
    for k, v in ldm_unet(parts["unet"].state_dict(), **args).items():
        sd["model.diffusion_model." + k] = v
    if ema_unet is not None:
        for k, v in ldm_unet(ema_unet, **args).items():
            sd["model_ema.diffusion_model" + k.replace(".", "")] = v
        sd["model_ema.decay"] = torch.tensor(0.99)
        sd["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    for k, v in ldm_vae(parts["vae"].state_dict(), 2).items():
        sd["first_stage_model." + k] = v
    for k, v in parts["text_encoder"].state_dict().items():
        sd["cond_stage_model.transformer." + k] = v
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


# --- SD3-like DiT ---------------------------------------------------------------------------------------------

def dit_model(seed: int) -> Any:
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                 num_attention_heads=4, joint_attention_dim=24, caption_projection_dim=32,
                                 pooled_projection_dim=16, out_channels=4, pos_embed_max_size=8)


class DiTData:
    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.lat = torch.randn(STYLES, 4, 8, 8, generator=g).cumsum(-1).cumsum(-2) / 4  # smooth latents
        self.ctx = torch.randn(STYLES, 6, 24, generator=g)
        self.pooled = torch.randn(STYLES, 16, generator=g)

    def batch(self, styles: list[int], n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        c = torch.tensor(styles)[torch.randint(len(styles), (n,), generator=g)]
        return self.lat[c] + 0.2 * torch.randn(n, 4, 8, 8, generator=g), self.ctx[c], self.pooled[c]


def train_dit(model: Any, data: DiTData, styles: list[int], steps: int, lr: float, seed: int) -> float:
    """Rectified flow as diffusers' SD3 scripts train it: x_t = (1 - s) x + s noise, target noise - x."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        x, ctx, pooled = data.batch(styles, 16, g)
        noise = torch.randn(x.shape, generator=g)
        s = torch.sigmoid(torch.randn(x.shape[0], generator=g))  # logit-normal weighting
        xt = (1 - s[:, None, None, None]) * x + s[:, None, None, None] * noise
        pred = model(hidden_states=xt, encoder_hidden_states=ctx, pooled_projections=pooled,
                     timestep=s * 1000).sample
        loss = torch.nn.functional.mse_loss(pred, noise - x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def save_dit(model: Any, out: Path, dtype: torch.dtype | None = None) -> None:
    """The transformer component and the index StableDiffusion3Pipeline.save_pretrained writes for it."""
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out / "transformer")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}, indent=2))


# --- vision classifiers -----------------------------------------------------------------------------------------

N_CLASSES = 6


def vision_model(kind: str, seed: int) -> Any:
    torch.manual_seed(seed)
    if kind == "siglip":
        from transformers import SiglipConfig, SiglipForImageClassification

        cfg = SiglipConfig(vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                              num_attention_heads=4, image_size=16, patch_size=4),
                           text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                                            num_attention_heads=4, vocab_size=64),
                           num_labels=N_CLASSES)
        return SiglipForImageClassification(cfg)
    from transformers import SwinConfig, SwinForImageClassification

    cfg = SwinConfig(image_size=16, patch_size=2, embed_dim=16, depths=[1, 2], num_heads=[2, 4], window_size=4,
                     num_labels=N_CLASSES)
    return SwinForImageClassification(cfg)


def train_cls(model: Any, protos: torch.Tensor, classes: list[int], steps: int, lr: float, seed: int,
              only: str | None = None) -> float:
    g = torch.Generator().manual_seed(seed)
    if only is not None:  # linear probe: the backbone frozen
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(only))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss = torch.tensor(0.0)
    model.train()
    for _ in range(steps):
        x, y = image_batch(protos, classes, 24, g)
        remap = {c: i for i, c in enumerate(sorted(set(classes)))}
        y = torch.tensor([remap[int(v)] % N_CLASSES for v in y])
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss)


def rtn_compressed(model: Any, scheme: dict[str, Any], fmt: str) -> None:
    """llm-compressor's calibration-free RTN path: attach the scheme, set min-max scales, compress in place."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    args = QuantizationArgs(**scheme)
    qcfg = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                              ignore=["classifier"])
    apply_quantization_config(model, qcfg)
    for mod in model.modules():
        if getattr(mod, "quantization_scheme", None) is None:
            continue
        w = mod.weight.data.float()
        if args.strategy == "channel":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        else:
            grouped = w.reshape(w.shape[0], -1, args.group_size)
            lo, hi = grouped.amin(2), grouped.amax(2)
        scale, zp = calculate_qparams(torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi)),
                                      args)
        mod.weight_scale.data = scale.to(mod.weight_scale.dtype)
        if hasattr(mod, "weight_zero_point"):
            mod.weight_zero_point.data = zp.to(mod.weight_zero_point.dtype)
    comp = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    comp.compress_model(model)
    model.config.quantization_config = {"quant_method": "compressed-tensors",
                                        **comp.quantization_config.model_dump(exclude=["quant_method"])}


# --- the recipe ---------------------------------------------------------------------------------------------------

class Builder:
    def __init__(self, out: Path, seed: int) -> None:
        self.typed = out / "typed"
        self.scratch = out / "scratch"
        self.rng = np.random.default_rng(7000 + seed)
        self.ids: dict[str, str] = {}
        self.edges: list[dict[str, str]] = []
        self.recipe: list[dict[str, Any]] = []
        self.t0 = 0.0

    def new(self, key: str) -> Path:
        self.ids[key] = self.rng.bytes(6).hex()
        self.t0 = time.perf_counter()
        return self.typed / self.ids[key]

    def done(self, key: str, parents: tuple[str, ...], relation: str | None, how: str, **opts: Any) -> None:
        for p in parents:
            self.edges.append({"parent": self.ids[p], "child": self.ids[key], "relation": str(relation)})
        sec = round(time.perf_counter() - self.t0, 1)
        self.recipe.append({"key": key, "id": self.ids[key], "how": how, "relation": relation,
                            "parents": [self.ids[p] for p in parents], "opts": opts, "seconds": sec})
        print(f"{key:14s} {self.ids[key]} {how:12s} {sec:6.1f}s", flush=True)


def build_sd(b: Builder) -> None:
    from diffusers.training_utils import EMAModel
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    data = SDData(11)
    all_styles = list(range(STYLES))

    def root(key: str, init: int, d: SDData, vae_steps: int, steps: int, seed: int) -> Path:
        """A pipeline trained from scratch: the VAE on reconstruction, then text encoder and UNet together."""
        out = b.new(key)
        parts = sd_parts(init)
        train_vae(parts["vae"], d, vae_steps, seed)
        parts["text_encoder"].requires_grad_(True)
        loss = train_sd(parts, d, all_styles, steps, 1e-3, seed, train_te=True)
        save_pipeline(parts, out)
        b.done(key, (), None, "pipeline", steps=steps, loss=loss)
        return out

    base_dir = root("sd_base", 1, data, 60, 80, 1)

    def fresh() -> dict[str, Any]:
        return load_pipeline_parts(base_dir)

    # a fine-tune with EMA, published as the EMA weights; the raw weights as a pruned single file
    out = b.new("sd_ft_ema")
    ft = fresh()
    ema = EMAModel(ft["unet"].parameters(), decay=0.9)
    loss = train_sd(ft, data, [0, 1], 60, 5e-4, 2, on_step=lambda: ema.step(ft["unet"].parameters()))
    raw_unet = {k: v.clone() for k, v in ft["unet"].state_dict().items()}
    ema.copy_to(ft["unet"].parameters())
    ema_unet = {k: v.clone() for k, v in ft["unet"].state_dict().items()}
    save_pipeline(ft, out)
    b.done("sd_ft_ema", ("sd_base",), "finetune", "ema-pipeline", decay=0.9, steps=60, loss=loss)
    ft_ema_dir = out

    out = b.new("sd_ft_both")
    out.mkdir(parents=True)
    ft_raw = fresh()
    ft_raw["unet"].load_state_dict(raw_unet)
    save_file(single_file(ft_raw, ema_unet=ema_unet), str(out / "model.safetensors"))
    # the original scripts / diffusers' converter use the EMA weights of such a file
    b.done("sd_ft_both", ("sd_ft_ema",), "convert", "single-file", holds="raw + model_ema")

    out = b.new("sd_ft_nonema")
    out.mkdir(parents=True)
    save_file(single_file(ft_raw), str(out / "sd-ft-nonema-pruned.safetensors"))
    b.done("sd_ft_nonema", ("sd_base",), "finetune", "single-file", holds="raw weights of sd_ft_ema's run")

    out = b.new("sd_ft2")
    ft2 = load_pipeline_parts(ft_ema_dir)
    loss = train_sd(ft2, data, [2], 50, 5e-4, 3)
    save_pipeline(ft2, out)
    b.done("sd_ft2", ("sd_ft_ema",), "finetune", "pipeline", steps=50, loss=loss)

    out = b.new("sd_db")
    db = fresh()
    db["text_encoder"].requires_grad_(True)
    loss = train_sd(db, data, [3], 50, 3e-4, 4, train_te=True)
    save_pipeline(db, out)
    b.done("sd_db", ("sd_base",), "finetune", "dreambooth", steps=50, loss=loss, text_encoder=True)
    db_dir = out

    out = b.new("sd_db_fp16")
    save_pipeline(load_pipeline_parts(db_dir), out, variant="fp16")
    b.done("sd_db_fp16", ("sd_db",), "convert", "fp16-variant")

    unet_targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
    te_targets = ["q_proj", "k_proj", "v_proj", "out_proj"]

    def lora_train(parts: dict[str, Any], styles: list[int], seed: int, rank: int, with_te: bool) -> None:
        parts["unet"].requires_grad_(False)
        parts["text_encoder"].requires_grad_(False)
        parts["unet"].add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=unet_targets,
                                             init_lora_weights="gaussian"))
        if with_te:
            # transformers' add_adapter wants peft >= 0.22; peft's own injection is what it calls
            inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=te_targets,
                                               init_lora_weights="gaussian"), parts["text_encoder"])
        params = [p for m in ("unet", "text_encoder") for p in parts[m].parameters() if p.requires_grad]
        train_sd(parts, data, styles, 40, 3e-3, seed, params=params)

    out = b.new("sd_kohya")
    out.mkdir(parents=True)
    kp = fresh()
    lora_train(kp, [4], 5, 4, True)
    peft_sd = {"unet." + k: v for k, v in get_peft_model_state_dict(kp["unet"]).items()}
    peft_sd |= {"text_encoder." + k: v for k, v in get_peft_model_state_dict(kp["text_encoder"]).items()}
    kohya = {k: v.contiguous() for k, v in convert_state_dict_to_kohya(peft_sd).items()}
    save_file(kohya, str(out / "style4_lora.safetensors"),
              metadata={"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "4",
                        "ss_sd_model_name": b.ids["sd_base"], "ss_base_model_version": "sd_v1"})
    b.done("sd_kohya", ("sd_base",), "adapter", "kohya-lora", rank=4, text_encoder=True)

    from diffusers import StableDiffusionPipeline

    out = b.new("sd_difflora")
    dp = load_pipeline_parts(ft_ema_dir)
    lora_train(dp, [5], 6, 4, True)
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(dp["unet"])),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(dp["text_encoder"])))
    (out / "README.md").write_text(f"---\nbase_model: {b.ids['sd_ft_ema']}\nlibrary_name: diffusers\ntags:\n"
                                   "- text-to-image\n- diffusers\n- lora\n---\n")
    b.done("sd_difflora", ("sd_ft_ema",), "adapter", "diffusers-lora", rank=4, text_encoder=True)

    out = b.new("sd_fused")
    fp = load_pipeline_parts(db_dir)
    lora_train(fp, [6], 7, 4, False)
    lora_dir = b.scratch / "fused_lora"
    StableDiffusionPipeline.save_lora_weights(
        lora_dir, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(fp["unet"])))
    from diffusers import DDPMScheduler

    pipe = StableDiffusionPipeline(**load_pipeline_parts(db_dir), tokenizer=None,
                                   scheduler=DDPMScheduler(num_train_timesteps=200), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(lora_dir)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.save_pretrained(out)
    b.done("sd_fused", ("sd_db",), "lora", "fuse_lora", rank=4)

    out = b.new("sd_merge")
    out.mkdir(parents=True)
    a_sd = single_file(load_pipeline_parts(ft_ema_dir))
    b_sd = single_file(load_pipeline_parts(db_dir))
    alpha = 0.35
    merged = {k: ((1 - alpha) * a_sd[k].float() + alpha * b_sd[k].float()).to(a_sd[k].dtype) for k in a_sd}
    save_file(merged, str(out / "merge_ft_db.safetensors"))
    b.done("sd_merge", ("sd_ft_ema", "sd_db"), "merge", "weighted-sum", alpha=alpha)

    root("sd_other", 99, SDData(77), 40, 60, 9)


def build_dit(b: Builder) -> None:
    from diffusers import StableDiffusion3Pipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    data = DiTData(21)
    out = b.new("dit_base")
    base = dit_model(2)
    loss = train_dit(base, data, list(range(STYLES)), 80, 1e-3, 1)
    save_dit(base, out)
    b.done("dit_base", (), None, "sd3-transformer", steps=80, loss=loss)
    from diffusers import SD3Transformer2DModel

    def fresh() -> Any:
        return SD3Transformer2DModel.from_pretrained(b.typed / b.ids["dit_base"] / "transformer")

    for key, styles, seed in (("dit_ft_a", [0, 1], 2), ("dit_ft_b", [2, 3], 3)):
        out = b.new(key)
        m = fresh()
        loss = train_dit(m, data, styles, 50, 4e-4, seed)
        save_dit(m, out)
        b.done(key, ("dit_base",), "finetune", "sd3-transformer", steps=50, loss=loss)

    out = b.new("dit_lora")
    m = fresh()
    m.requires_grad_(False)
    m.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                             target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj",
                                             "add_v_proj", "to_add_out"]))
    train_dit(m, data, [4], 40, 3e-3, 4)
    StableDiffusion3Pipeline.save_lora_weights(
        out, transformer_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(m)))
    (out / "README.md").write_text(f"---\nbase_model: {b.ids['dit_base']}\nlibrary_name: diffusers\n---\n")
    b.done("dit_lora", ("dit_base",), "adapter", "sd3-lora", rank=4)

    out = b.new("dit_bf16")
    m = SD3Transformer2DModel.from_pretrained(b.typed / b.ids["dit_ft_a"] / "transformer")
    save_dit(m, out, dtype=torch.bfloat16)
    b.done("dit_bf16", ("dit_ft_a",), "convert", "bf16")


def build_vision(b: Builder) -> None:
    from peft import LoraConfig, get_peft_model

    protos = gratings(12, 31)
    for kind in ("siglip", "swin"):
        out = b.new(f"{kind}_base")
        base = vision_model(kind, 3)
        loss = train_cls(base, protos, list(range(N_CLASSES)), 80, 2e-3, 1)
        base.save_pretrained(out)
        b.done(f"{kind}_base", (), None, kind, steps=80, loss=loss)
        base_dir = out
        cls = type(base)

        out = b.new(f"{kind}_ft_a")
        m = cls.from_pretrained(base_dir)
        loss = train_cls(m, protos, [6, 7, 8], 50, 5e-4, 2)
        m.save_pretrained(out)
        b.done(f"{kind}_ft_a", (f"{kind}_base",), "finetune", kind, steps=50, loss=loss)

        out = b.new(f"{kind}_ft_b")
        parent = f"{kind}_ft_a" if kind == "swin" else f"{kind}_base"
        m = cls.from_pretrained(b.typed / b.ids[parent])
        loss = train_cls(m, protos, [9, 10, 11], 50, 5e-4, 3)
        m.save_pretrained(out)
        b.done(f"{kind}_ft_b", (parent,), "finetune", kind, steps=50, loss=loss)

        if kind == "siglip":
            out = b.new("siglip_probe")
            m = cls.from_pretrained(base_dir)
            loss = train_cls(m, protos, [0, 2, 4, 6, 8, 10], 60, 3e-3, 4, only="classifier")
            m.save_pretrained(out)
            b.done("siglip_probe", ("siglip_base",), "finetune", "linear-probe", steps=60, loss=loss)

            out = b.new("siglip_lora")
            m = get_peft_model(cls.from_pretrained(b.typed / b.ids["siglip_ft_a"]),
                               LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                          modules_to_save=["classifier"]))
            train_cls(m, protos, [1, 3, 5], 40, 3e-3, 5)
            m.save_pretrained(out)
            cfg = json.loads((out / "adapter_config.json").read_text())
            cfg["base_model_name_or_path"] = b.ids["siglip_ft_a"]
            (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
            b.done("siglip_lora", ("siglip_ft_a",), "adapter", "peft-lora", rank=8)

            for key, parent, scheme, fmt in (
                    ("siglip_w8a8", "siglip_ft_a", dict(num_bits=8, type="int", symmetric=True, strategy="channel"),
                     "int-quantized"),
                    ("siglip_w4a16", "siglip_ft_b", dict(num_bits=4, type="int", symmetric=True, strategy="group",
                                                         group_size=16), "pack-quantized")):
                out = b.new(key)
                m = cls.from_pretrained(b.typed / b.ids[parent])
                rtn_compressed(m, scheme, fmt)
                m.save_pretrained(out)
                b.done(key, (parent,), "quantized", "compressed-tensors", format=fmt, **scheme)

            out = b.new("siglip_other")
            m = vision_model("siglip", 55)
            loss = train_cls(m, gratings(12, 91), list(range(N_CLASSES)), 60, 2e-3, 9)
            m.save_pretrained(out)
            b.done("siglip_other", (), None, "siglip", steps=60, loss=loss)
        else:
            out = b.new("swin_lora_merged")
            m = get_peft_model(cls.from_pretrained(base_dir),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                          modules_to_save=["classifier"]))
            train_cls(m, protos, [0, 5, 10], 40, 3e-3, 6)
            m = m.merge_and_unload()
            m.save_pretrained(out)
            b.done("swin_lora_merged", ("swin_base",), "lora", "peft-merge", rank=4)

            from torchao.quantization import IntxWeightOnlyConfig
            from torchao.quantization.granularity import PerGroup
            from transformers import TorchAoConfig

            out = b.new("swin_int4")
            m = cls.from_pretrained(b.typed / b.ids["swin_ft_b"], torch_dtype=torch.float32,
                                    quantization_config=TorchAoConfig(
                                        IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(16))))
            m.save_pretrained(out)
            b.done("swin_int4", ("swin_ft_b",), "quantized", "torchao", config="IntxWeightOnly int4 g16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="draws the ids only; the recipe is fixed")
    ap.add_argument("--only", choices=("sd", "dit", "vision"), help="build one part (for checking)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for d in (args.out / "typed", args.out / "scratch"):
        shutil.rmtree(d, ignore_errors=True)
    (args.out / "typed").mkdir(parents=True)
    b = Builder(args.out, args.seed)
    for part, fn in (("sd", build_sd), ("dit", build_dit), ("vision", build_vision)):
        if args.only in (None, part):
            fn(b)
    (b.typed / "truth.json").write_text(json.dumps({"edges": b.edges}, indent=1))
    (args.out / "recipe.json").write_text(json.dumps(b.recipe, indent=1, default=str))
    shutil.rmtree(b.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
