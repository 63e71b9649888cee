"""Tiny DiT denoisers (Flux, SD3) made by diffusers, and their single-file layouts.

The single-file layouts are written by inverting diffusers' own converters
(``diffusers.loaders.single_file_utils.convert_flux_transformer_checkpoint_to_diffusers`` and
``convert_sd3_transformer_checkpoint_to_diffusers``), and :func:`flux_converter` / :func:`sd3_converter` hand
those converters back, so a test checks that diffusers maps the written file back to the model exactly.
Fine-tunes are real AdamW steps of a flow-matching-style loss through the model's own forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

State = dict[str, torch.Tensor]


def state_of(model) -> State:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def tiny_flux(seed: int, guidance: bool = True):
    """A Flux transformer of 2 double and 2 single blocks, width 16 (2 heads of 8), MLP 64."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2,
                                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=12,
                                  pooled_projection_dim=6, guidance_embeds=guidance, axes_dims_rope=(2, 2, 4))


def tiny_sd3(seed: int, dual: tuple[int, ...] = (0,), qk_norm: str | None = "rms_norm"):
    """An SD3.5-shaped transformer of 3 joint blocks, width 16 (2 heads of 8), dual attention in ``dual``."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                                 num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16,
                                 pooled_projection_dim=6, out_channels=4, pos_embed_max_size=8,
                                 dual_attention_layers=dual, qk_norm=qk_norm)


def flux_steps(model, seed: int, steps: int = 3):
    """``steps`` AdamW steps (lr 1e-3) of a denoising loss on random latents, text and ids from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = model.config
    for _ in range(steps):
        x = torch.randn(2, 16, cfg.in_channels, generator=g)
        txt = torch.randn(2, 5, cfg.joint_attention_dim, generator=g)
        pooled = torch.randn(2, cfg.pooled_projection_dim, generator=g)
        img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0),
                                             indexing="ij"), -1).reshape(-1, 3)
        guidance = torch.full((2,), 3.5) if cfg.guidance_embeds else None
        out = model(hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled,
                    timestep=torch.tensor([0.3, 0.7]), img_ids=img_ids, txt_ids=torch.zeros(5, 3),
                    guidance=guidance).sample
        loss = (out - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def sd3_steps(model, seed: int, steps: int = 3):
    """``steps`` AdamW steps (lr 1e-3) of a denoising loss on random latents and conditions from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = model.config
    for _ in range(steps):
        x = torch.randn(2, cfg.in_channels, 8, 8, generator=g)
        txt = torch.randn(2, 5, cfg.joint_attention_dim, generator=g)
        pooled = torch.randn(2, cfg.pooled_projection_dim, generator=g)
        out = model(hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled,
                    timestep=torch.tensor([300.0, 700.0])).sample
        loss = (out - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


#: Every LoRA target of a Flux block (kohya's fused modules are split onto these by their rows).
FLUX_LORA_TARGETS = (r".*blocks\.\d+\..*(to_q|to_k|to_v|proj_mlp|add_q_proj|add_k_proj|add_v_proj|to_out\.0|"
                     r"ff\.net\.2|proj_out)")


def trained_flux_lora(seed: int, targets: str | list[str] = FLUX_LORA_TARGETS):
    """The tiny Flux (:func:`tiny_flux` 0) with a peft LoRA (rank 2, alpha 4, Gaussian init) on ``targets``,
    its factors trained :func:`flux_steps` with ``seed``; the base weights stay frozen."""
    from peft import LoraConfig

    model = tiny_flux(0)
    model.add_adapter(LoraConfig(r=2, lora_alpha=4, init_lora_weights="gaussian", target_modules=targets))
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return flux_steps(model, seed=seed)


def _swap(t: torch.Tensor) -> torch.Tensor:
    """diffusers' ``swap_scale_shift`` is its own inverse: the two row halves exchanged."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a])


def _blocks(state: State, prefix: str) -> list[int]:
    return sorted({int(k.split(".")[1]) for k in state if k.startswith(prefix)})


def flux_single_file(state: State, prefix: str = "") -> State:
    """The BFL / ComfyUI single-file layout of a diffusers Flux transformer's state dict (``prefix``
    ``"model.diffusion_model."`` for ComfyUI's all-in-one files): the inverse of diffusers' converter."""
    s = dict(state)
    out: State = {}

    def take(src: str, dst: str) -> None:
        for p in ("weight", "bias"):
            if f"{src}.{p}" in s:
                out[f"{dst}.{p}"] = s.pop(f"{src}.{p}")

    for src, dst in (("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                     ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                     ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                     ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                     ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                     ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                     ("context_embedder", "txt_in"), ("x_embedder", "img_in"), ("proj_out", "final_layer.linear")):
        take(src, dst)
    for p in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{p}"] = _swap(s.pop(f"norm_out.linear.{p}"))
    for i in _blocks(s, "transformer_blocks."):
        b, d = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for src, dst in (("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                         ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                         ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2"),
                         ("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj")):
            take(b + src, d + dst)
        for p in ("weight", "bias"):
            out[f"{d}img_attn.qkv.{p}"] = torch.cat([s.pop(f"{b}attn.to_{x}.{p}") for x in "qkv"])
            out[f"{d}txt_attn.qkv.{p}"] = torch.cat([s.pop(f"{b}attn.add_{x}_proj.{p}") for x in "qkv"])
        for src, dst in (("norm_q", "img_attn.norm.query_norm"), ("norm_k", "img_attn.norm.key_norm"),
                         ("norm_added_q", "txt_attn.norm.query_norm"), ("norm_added_k", "txt_attn.norm.key_norm")):
            out[f"{d}{dst}.scale"] = s.pop(f"{b}attn.{src}.weight")
    for i in _blocks(s, "single_transformer_blocks."):
        b, d = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        take(b + "norm.linear", d + "modulation.lin")
        take(b + "proj_out", d + "linear2")
        for p in ("weight", "bias"):
            out[f"{d}linear1.{p}"] = torch.cat([s.pop(f"{b}attn.to_{x}.{p}") for x in "qkv"]
                                               + [s.pop(f"{b}proj_mlp.{p}")])
        out[f"{d}norm.query_norm.scale"] = s.pop(f"{b}attn.norm_q.weight")
        out[f"{d}norm.key_norm.scale"] = s.pop(f"{b}attn.norm_k.weight")
    assert not s, f"not mapped: {sorted(s)}"
    return {prefix + k: v.contiguous() for k, v in out.items()}


def sd3_single_file(state: State, prefix: str = "model.diffusion_model.") -> State:
    """The Stability single-file layout of a diffusers SD3 transformer's state dict (the inverse of
    diffusers' converter)."""
    s = dict(state)
    out: State = {}

    def take(src: str, dst: str) -> None:
        for p in ("weight", "bias"):
            if f"{src}.{p}" in s:
                out[f"{dst}.{p}"] = s.pop(f"{src}.{p}")

    out["pos_embed"] = s.pop("pos_embed.pos_embed")
    for src, dst in (("pos_embed.proj", "x_embedder.proj"),
                     ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                     ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                     ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
                     ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
                     ("context_embedder", "context_embedder"), ("proj_out", "final_layer.linear")):
        take(src, dst)
    for p in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{p}"] = _swap(s.pop(f"norm_out.linear.{p}"))
    blocks = _blocks(s, "transformer_blocks.")
    for i in blocks:
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        for src, dst in (("attn.to_out.0", x + "attn.proj"), ("attn.to_add_out", c + "attn.proj"),
                         ("attn2.to_out.0", x + "attn2.proj"), ("norm1.linear", x + "adaLN_modulation.1"),
                         ("ff.net.0.proj", x + "mlp.fc1"), ("ff.net.2", x + "mlp.fc2"),
                         ("ff_context.net.0.proj", c + "mlp.fc1"), ("ff_context.net.2", c + "mlp.fc2"),
                         ("attn.norm_q", x + "attn.ln_q"), ("attn.norm_k", x + "attn.ln_k"),
                         ("attn.norm_added_q", c + "attn.ln_q"), ("attn.norm_added_k", c + "attn.ln_k"),
                         ("attn2.norm_q", x + "attn2.ln_q"), ("attn2.norm_k", x + "attn2.ln_k")):
            take(b + src, dst)
        for p in ("weight", "bias"):
            ctx = s.pop(f"{b}norm1_context.linear.{p}")
            out[f"{c}adaLN_modulation.1.{p}"] = _swap(ctx) if i == blocks[-1] else ctx
            out[f"{x}attn.qkv.{p}"] = torch.cat([s.pop(f"{b}attn.to_{q}.{p}") for q in "qkv"])
            out[f"{c}attn.qkv.{p}"] = torch.cat([s.pop(f"{b}attn.add_{q}_proj.{p}") for q in "qkv"])
            if f"{b}attn2.to_q.{p}" in s:
                out[f"{x}attn2.qkv.{p}"] = torch.cat([s.pop(f"{b}attn2.to_{q}.{p}") for q in "qkv"])
    assert not s, f"not mapped: {sorted(s)}"
    return {prefix + k: v.contiguous() for k, v in out.items()}


def flux_converter(inner_dim: int) -> Callable[[State], State]:
    """diffusers' Flux converter for a transformer of width ``inner_dim``: its own source, with the one
    constant that assumes Flux.1's width (``inner_dim = 3072``, used to split ``linear1``) set to ours."""
    from diffusers.loaders import single_file_utils as sfu

    source = inspect.getsource(sfu.convert_flux_transformer_checkpoint_to_diffusers)
    assert source.count("inner_dim = 3072") == 1
    namespace = dict(vars(sfu))
    exec(source.replace("inner_dim = 3072", f"inner_dim = {inner_dim}"), namespace)  # noqa: S102
    convert = namespace["convert_flux_transformer_checkpoint_to_diffusers"]
    return lambda single: convert(dict(single))


def sd3_converter() -> Callable[[State], State]:
    """diffusers' SD3 converter, as it is."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    return lambda single: convert_sd3_transformer_checkpoint_to_diffusers(dict(single))


#: kohya-ss Flux module -> the diffusers modules it fuses (rows in this order), as sd-scripts names them.
_KOHYA_FLUX_FUSED = {
    "double_blocks_{i}_img_attn_qkv": ("transformer_blocks.{i}.attn.to_q", "transformer_blocks.{i}.attn.to_k",
                                       "transformer_blocks.{i}.attn.to_v"),
    "double_blocks_{i}_txt_attn_qkv": ("transformer_blocks.{i}.attn.add_q_proj",
                                       "transformer_blocks.{i}.attn.add_k_proj",
                                       "transformer_blocks.{i}.attn.add_v_proj"),
    "single_blocks_{i}_linear1": ("single_transformer_blocks.{i}.attn.to_q", "single_transformer_blocks.{i}.attn.to_k",
                                  "single_transformer_blocks.{i}.attn.to_v", "single_transformer_blocks.{i}.proj_mlp"),
}
_KOHYA_FLUX_WHOLE = {
    "double_blocks_{i}_img_attn_proj": "transformer_blocks.{i}.attn.to_out.0",
    "double_blocks_{i}_img_mlp_0": "transformer_blocks.{i}.ff.net.0.proj",
    "double_blocks_{i}_img_mlp_2": "transformer_blocks.{i}.ff.net.2",
    "double_blocks_{i}_txt_attn_proj": "transformer_blocks.{i}.attn.to_add_out",
    "single_blocks_{i}_linear2": "single_transformer_blocks.{i}.proj_out",
}


def kohya_flux_lora(lora: State, alpha: float, blocks: int = 2) -> State:
    """A diffusers-layout Flux LoRA (``transformer.<module>.lora_A/B``, rank r, ``lora_alpha`` alpha) in the
    kohya-ss layout: a fused module (``img_attn_qkv``, ``linear1``) whose parts all carry a LoRA becomes one
    module of rank ``k * r``, ``lora_down`` the parts' A stacked and ``lora_up`` their B on the block diagonal
    (what diffusers' converter reads as a "sparse" kohya module), ``alpha`` scaled by k so alpha / rank holds."""
    src = {k.removeprefix("transformer."): v for k, v in lora.items()}
    out: State = {}
    for i in range(blocks):
        for flat, parts in _KOHYA_FLUX_FUSED.items():
            names = [p.format(i=i) for p in parts]
            if not all(f"{n}.lora_A.weight" in src for n in names):
                continue
            a = [src.pop(f"{n}.lora_A.weight") for n in names]
            b = [src.pop(f"{n}.lora_B.weight") for n in names]
            out[f"lora_unet_{flat.format(i=i)}.lora_down.weight"] = torch.cat(a)
            out[f"lora_unet_{flat.format(i=i)}.lora_up.weight"] = torch.block_diag(*b)
            out[f"lora_unet_{flat.format(i=i)}.alpha"] = torch.tensor(alpha * len(names))
        for flat, name in _KOHYA_FLUX_WHOLE.items():
            n = name.format(i=i)
            if f"{n}.lora_A.weight" in src:
                out[f"lora_unet_{flat.format(i=i)}.lora_down.weight"] = src.pop(f"{n}.lora_A.weight")
                out[f"lora_unet_{flat.format(i=i)}.lora_up.weight"] = src.pop(f"{n}.lora_B.weight")
                out[f"lora_unet_{flat.format(i=i)}.alpha"] = torch.tensor(float(alpha))
    assert not src, f"not in the kohya layout: {sorted(src)}"
    return {k: v.contiguous() for k, v in out.items()}


def patched_kohya_flux_converter(inner_dim: int, mlp_dim: int):
    """diffusers' kohya Flux LoRA converter for a transformer of width ``inner_dim`` and MLP ``mlp_dim``: its own
    source with the one constant that assumes Flux.1's sizes (``dims=[3072, 3072, 3072, 12288]``) set to ours.
    Install it with ``unittest.mock.patch.object(diffusers.loaders.lora_pipeline, NAME, ...)``."""
    from diffusers.loaders import lora_conversion_utils as lcu

    source = inspect.getsource(lcu._convert_kohya_flux_lora_to_diffusers)
    assert source.count("dims=[3072, 3072, 3072, 12288]") == 1
    namespace = dict(vars(lcu))
    exec(source.replace("dims=[3072, 3072, 3072, 12288]", f"dims=[{inner_dim}] * 3 + [{mlp_dim}]"),  # noqa: S102
         namespace)
    return namespace["_convert_kohya_flux_lora_to_diffusers"]


#: Every LoRA target of an SD3 joint block (kohya's fused qkv modules are split onto these by their rows).
SD3_LORA_TARGETS = (r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_out\.0|"
                    r"to_add_out)|ff\.net\.(0\.proj|2)|ff_context\.net\.2|norm1\.linear|norm1_context\.linear)")


def trained_sd3_lora(seed: int, targets: str | list[str] = SD3_LORA_TARGETS):
    """The tiny SD3 (:func:`tiny_sd3` 0) with a peft LoRA (rank 2, alpha 4, Gaussian init) on ``targets``, its
    factors trained :func:`sd3_steps` with ``seed``; the base weights stay frozen."""
    from peft import LoraConfig

    model = tiny_sd3(0)
    model.add_adapter(LoraConfig(r=2, lora_alpha=4, init_lora_weights="gaussian", target_modules=targets))
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return sd3_steps(model, seed=seed)


#: The MMDiT module (Stability's names, as sd-scripts' SD3 LoRA names its modules) -> the diffusers modules it
#: fuses, rows in this order.
_KOHYA_SD3_FUSED = {
    "joint_blocks.{i}.x_block.attn.qkv": ("transformer_blocks.{i}.attn.to_q", "transformer_blocks.{i}.attn.to_k",
                                          "transformer_blocks.{i}.attn.to_v"),
    "joint_blocks.{i}.context_block.attn.qkv": ("transformer_blocks.{i}.attn.add_q_proj",
                                                "transformer_blocks.{i}.attn.add_k_proj",
                                                "transformer_blocks.{i}.attn.add_v_proj"),
}
_KOHYA_SD3_WHOLE = {
    "joint_blocks.{i}.x_block.attn.proj": "transformer_blocks.{i}.attn.to_out.0",
    "joint_blocks.{i}.context_block.attn.proj": "transformer_blocks.{i}.attn.to_add_out",
    "joint_blocks.{i}.x_block.mlp.fc1": "transformer_blocks.{i}.ff.net.0.proj",
    "joint_blocks.{i}.x_block.mlp.fc2": "transformer_blocks.{i}.ff.net.2",
    "joint_blocks.{i}.context_block.mlp.fc2": "transformer_blocks.{i}.ff_context.net.2",
    "joint_blocks.{i}.x_block.adaLN_modulation.1": "transformer_blocks.{i}.norm1.linear",
    "joint_blocks.{i}.context_block.adaLN_modulation.1": "transformer_blocks.{i}.norm1_context.linear",
}


def kohya_sd3_lora(lora: State, alpha: float, blocks: int) -> tuple[State, dict[str, str]]:
    """A diffusers-layout SD3 LoRA (``transformer.<module>.lora_A/B``, rank r, ``lora_alpha`` alpha) in the
    kohya-ss layout (``lora_unet_`` + the MMDiT module's name, dots as underscores): a fused ``qkv`` whose
    parts all carry a LoRA becomes one module of rank ``3 r``, ``lora_down`` the parts' A stacked and
    ``lora_up`` their B on the block diagonal, ``alpha`` scaled by 3 so alpha / rank holds; the last block's
    context modulation has its (scale, shift) rows stored as the original's (shift, scale). Returns the file's
    tensors and kohya module -> MMDiT module (dotted), to merge it in the original layout."""
    src = {k.removeprefix("transformer."): v for k, v in lora.items()}
    out: State = {}
    modules: dict[str, str] = {}
    for i in range(blocks):
        for original, parts in _KOHYA_SD3_FUSED.items():
            names = [p.format(i=i) for p in parts]
            if not all(f"{n}.lora_A.weight" in src for n in names):
                continue
            flat = "lora_unet_" + original.format(i=i).replace(".", "_")
            out[f"{flat}.lora_down.weight"] = torch.cat([src.pop(f"{n}.lora_A.weight") for n in names])
            out[f"{flat}.lora_up.weight"] = torch.block_diag(*[src.pop(f"{n}.lora_B.weight") for n in names])
            out[f"{flat}.alpha"] = torch.tensor(alpha * len(names))
            modules[flat] = original.format(i=i)
        for original, name in _KOHYA_SD3_WHOLE.items():
            n = name.format(i=i)
            if f"{n}.lora_A.weight" not in src:
                continue
            flat = "lora_unet_" + original.format(i=i).replace(".", "_")
            up = src.pop(f"{n}.lora_B.weight")
            out[f"{flat}.lora_down.weight"] = src.pop(f"{n}.lora_A.weight")
            out[f"{flat}.lora_up.weight"] = _swap(up) if "context_block.adaLN" in original and i == blocks - 1 else up
            out[f"{flat}.alpha"] = torch.tensor(float(alpha))
            modules[flat] = original.format(i=i)
    assert not src, f"not in the kohya layout: {sorted(src)}"
    return {k: v.contiguous() for k, v in out.items()}, modules


def merge_kohya_in_original_layout(single: State, kohya: State, modules: dict[str, str],
                                   prefix: str = "model.diffusion_model.") -> State:
    """``single`` (a Stability single-file state) with each kohya module's ``alpha / rank * up @ down`` added to
    its MMDiT weight, as a loader of the original layout (ComfyUI, sd-scripts) applies it."""
    out = dict(single)
    for flat, original in modules.items():
        down, up = kohya[f"{flat}.lora_down.weight"], kohya[f"{flat}.lora_up.weight"]
        key = f"{prefix}{original}.weight"
        out[key] = out[key] + float(kohya[f"{flat}.alpha"]) / down.shape[0] * (up @ down)
    return out


#: LyCORIS preset (TOML) for a kohya network on a Flux / SD3 transformer: the blocks, by the class names of
#: diffusers' transformers and of sd-scripts' ports of the original models (BFL's ``DoubleStreamBlock`` /
#: ``SingleStreamBlock``, Stability's ``SingleDiTBlock``), as the library's own presets list them.
LYCORIS_DIT_PRESET = """enable_conv = false
unet_target_module = ["FluxTransformerBlock", "FluxSingleTransformerBlock", "JointTransformerBlock",
                      "DoubleStreamBlock", "SingleStreamBlock", "SingleDiTBlock"]
unet_target_name = []
text_encoder_target_module = []
text_encoder_target_name = []
"""

#: The block classes of sd-scripts' ports of the original models, by the blocks' paths in the single-file layout.
ORIGINAL_BLOCKS = ((r"double_blocks\.\d+", "DoubleStreamBlock"), (r"single_blocks\.\d+", "SingleStreamBlock"),
                   (r"joint_blocks\.\d+\.(x_block|context_block)", "SingleDiTBlock"))


def original_modules(single: State):
    """A module tree holding a single-file Flux / SD3 state (no prefix) under its original names: every 2-D weight
    an ``nn.Linear`` (with its bias), the blocks of the classes sd-scripts' ports of the original models give them
    (:data:`ORIGINAL_BLOCKS`), which LyCORIS's kohya network wraps; other tensors plain parameters. What sd-scripts
    hands LyCORIS when it trains a Flux / SD3 network (its model, not a diffusers one)."""
    import re

    from torch import nn

    classes = {name: type(name, (nn.Module,), {}) for _, name in ORIGINAL_BLOCKS}
    root = nn.Module()

    def module(path: str) -> nn.Module:
        node = root
        for depth, part in enumerate(path.split(".")):
            if part not in node._modules:
                here = ".".join(path.split(".")[:depth + 1])
                kind = next((classes[c] for p, c in ORIGINAL_BLOCKS if re.fullmatch(p, here)), nn.Module)
                node.add_module(part, kind())
            node = node._modules[part]
        return node

    for name, value in single.items():
        path, _, param = name.rpartition(".")
        if param == "weight" and value.dim() == 2:
            parent, _, leaf = path.rpartition(".")
            layer = nn.Linear(value.shape[1], value.shape[0], bias=f"{path}.bias" in single)
            layer.weight.data.copy_(value)
            if layer.bias is not None:
                layer.bias.data.copy_(single[f"{path}.bias"])
            (module(parent) if parent else root).add_module(leaf, layer)
    for name, value in single.items():
        path, _, param = name.rpartition(".")
        holder = module(path) if path else root
        if not isinstance(holder, nn.Linear):
            holder.register_parameter(param, nn.Parameter(value.clone()))
    return root


def lycoris_network(model, algo: str, folder, kind: str = "kohya", **kwargs):
    """A LyCORIS network (``algo``) on ``model``, made by the library and trained 3 real AdamW steps (lr 1e-2):
    ``kind`` "kohya" its kohya entry point (``lycoris.kohya.create_network``, sd-scripts' ``--network_module
    lycoris.kohya``; modules ``lora_unet_<path>``) with :data:`LYCORIS_DIT_PRESET`, "wrapper" its own
    ``create_lycoris`` (as SimpleTuner trains Flux / SD3: modules ``lycoris_<path>``). The loss: each wrapped layer's
    output, through the network's forward, against a random target (a layer-wise loss: the original-layout trees of
    :func:`original_modules` have no model forward). Returns the network."""
    from lycoris import LycorisNetwork, create_lycoris
    from lycoris.kohya import LycorisNetworkKohya, create_network

    torch.manual_seed(kwargs.pop("seed", 0))
    dim, alpha = kwargs.pop("dim", 4), kwargs.pop("alpha", 2.0)
    cls = LycorisNetworkKohya if kind == "kohya" else LycorisNetwork
    saved = {k: v for k, v in vars(cls).items() if k.isupper()}  # presets set class attributes: put them back after
    try:
        if kind == "kohya":
            (folder / "dit-preset.toml").write_text(LYCORIS_DIT_PRESET)
            network = create_network(1.0, dim, alpha, None, None, model, algo=algo,
                                     preset=str(folder / "dit-preset.toml"), **kwargs)
        else:
            LycorisNetwork.apply_preset({"target_module": ["FluxTransformerBlock", "FluxSingleTransformerBlock",
                                                           "JointTransformerBlock"]})
            network = create_lycoris(model, 1.0, linear_dim=dim, linear_alpha=alpha, algo=algo, **kwargs)
    finally:
        for k, v in saved.items():
            setattr(cls, k, v)
    if kind == "kohya":
        network.apply_to(None, model, apply_text_encoder=False, apply_unet=True)
        params, _ = network.prepare_optimizer_params(unet_lr=1e-2)
        loras = network.unet_loras
    else:
        network.apply_to()
        params, loras = list(network.parameters()), network.loras
    opt = torch.optim.AdamW(params, lr=1e-2)
    g = torch.Generator().manual_seed(1)
    probes = [(torch.randn(3, lora.org_module[0].in_features, generator=g),
               torch.randn(3, lora.org_module[0].out_features, generator=g)) for lora in loras]
    network.train()
    for _ in range(3):
        loss = sum((lora(x) - y).pow(2).mean() for lora, (x, y) in zip(loras, probes))
        opt.zero_grad()
        loss.backward()
        opt.step()
    network.eval()
    return network


def lycoris_merged(state: State, applied) -> State:
    """``state`` (a transformer's, in the original layout or diffusers') with what each LyCORIS module's forward
    applies (``format_factory.lycoris_applied_weights``: lora name -> ("delta" | "weight", weight, bias)) merged into
    the module it wraps, found by its kohya name (``lora_unet_`` or ``lycoris_`` + the module path, dots as
    underscores)."""
    flat = {k[:-len(".weight")].replace(".", "_"): k[:-len(".weight")] for k in state if k.endswith(".weight")}
    out = dict(state)
    for lora_name, (kind, weight, bias) in applied.items():
        path = flat[lora_name.removeprefix("lora_unet_").removeprefix("lycoris_")]
        w = state[f"{path}.weight"]
        out[f"{path}.weight"] = weight.reshape(w.shape) if kind == "weight" else w + weight.reshape(w.shape)
        if bias is not None:
            out[f"{path}.bias"] = bias if kind == "weight" else state[f"{path}.bias"] + bias
    return out
