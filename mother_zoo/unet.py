"""A small denoising UNet with attention blocks and Stable-Diffusion / diffusers ``UNet2DConditionModel`` names.

Layout (16x16 input, two resolutions)::

    conv_in, time_embedding.linear_{1,2}
    down_blocks.0.resnets.0, down_blocks.0.downsamplers.0.conv              (16x16, DownBlock2D)
    down_blocks.1.resnets.0, down_blocks.1.attentions.0                      (8x8, CrossAttnDownBlock2D)
    mid_block.resnets.{0,1}, mid_block.attentions.0
    up_blocks.0.resnets.{0,1}, up_blocks.0.attentions.{0,1}, up_blocks.0.upsamplers.0.conv
    up_blocks.1.resnets.{0,1}                                                (16x16, UpBlock2D)
    conv_norm_out, conv_out

ResNet blocks: ``norm1, conv1, time_emb_proj, norm2, conv2[, conv_shortcut]``. Attention blocks
(``Transformer2DModel``): ``norm, proj_in, transformer_blocks.0.{norm1, attn1.to_q, attn1.to_k, attn1.to_v,
attn1.to_out.0, norm3, ff.net.0.proj, ff.net.2}, proj_out``. There is no text conditioning, so the
cross-attention ``attn2`` of SD is absent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the small UNet."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, int] = (32, 64)
    attention_head_dim: int = 16
    norm_num_groups: int = 8
    sample_size: int = 16

    def hf_config(self, dtype: str) -> dict[str, object]:
        """``config.json`` content in diffusers form."""
        d = asdict(self)
        d.update(
            _class_name="UNet2DConditionModel",
            model_type="unet",
            architectures=["UNet2DConditionModel"],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            cross_attention_dim=None,
            prediction_type="epsilon",
            torch_dtype=dtype,
        )
        return d


class _ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class _Attn(nn.Module):
    def __init__(self, d: int, head_dim: int) -> None:
        super().__init__()
        self.heads = d // head_dim
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k = nn.Linear(d, d, bias=False)
        self.to_v = nn.Linear(d, d, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(d, d)])  # to_out.0 (to_out.1 is dropout in diffusers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        B, T, D = x.shape
        q, k, v = (
            m(x).view(B, T, self.heads, D // self.heads).transpose(1, 2) for m in (self.to_q, self.to_k, self.to_v)
        )
        return self.to_out[0](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D))


class _GEGLU(nn.Module):
    def __init__(self, d: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(g)


class _FeedForward(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        # net.0 = GEGLU, net.1 = dropout, net.2 = Linear (indices as in diffusers)
        self.net = nn.ModuleList([_GEGLU(d, 2 * d), nn.Identity(), nn.Linear(2 * d, d)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _BasicTransformerBlock(nn.Module):
    def __init__(self, d: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn1 = _Attn(d, head_dim)
        self.norm3 = nn.LayerNorm(d)
        self.ff = _FeedForward(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class _Transformer2D(nn.Module):
    def __init__(self, d: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, d, eps=1e-6)
        self.proj_in = nn.Conv2d(d, d, 1)  # SD 1.x: 1x1 conv projections
        self.transformer_blocks = nn.ModuleList([_BasicTransformerBlock(d, head_dim)])
        self.proj_out = nn.Conv2d(d, d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, HW, C)
        h = self.transformer_blocks[0](h)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class _Down(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv


class _Block(nn.Module):
    """A container that only gives submodules their diffusers names."""


class UNet2DModel(nn.Module):
    """Epsilon-predicting UNet: ``forward(x (B,3,H,W), log_sigma (B,)) -> eps (B,3,H,W)``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c0, c1 = config.block_out_channels
        g, hd = config.norm_num_groups, config.attention_head_dim
        temb = 4 * c0
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        self.time_embedding = _Block()
        self.time_embedding.linear_1 = nn.Linear(c0, temb)
        self.time_embedding.linear_2 = nn.Linear(temb, temb)

        d0, d1 = _Block(), _Block()
        d0.resnets = nn.ModuleList([_ResnetBlock(c0, c0, temb, g)])
        d0.downsamplers = nn.ModuleList([_Down(nn.Conv2d(c0, c0, 3, stride=2, padding=1))])
        d1.resnets = nn.ModuleList([_ResnetBlock(c0, c1, temb, g)])
        d1.attentions = nn.ModuleList([_Transformer2D(c1, hd, g)])
        self.down_blocks = nn.ModuleList([d0, d1])

        self.mid_block = _Block()
        self.mid_block.resnets = nn.ModuleList([_ResnetBlock(c1, c1, temb, g), _ResnetBlock(c1, c1, temb, g)])
        self.mid_block.attentions = nn.ModuleList([_Transformer2D(c1, hd, g)])

        u0, u1 = _Block(), _Block()
        # Skip connections: u0 consumes d1's and d0-downsampled outputs, u1 consumes d0's and conv_in's.
        u0.resnets = nn.ModuleList([_ResnetBlock(c1 + c1, c1, temb, g), _ResnetBlock(c1 + c0, c1, temb, g)])
        u0.attentions = nn.ModuleList([_Transformer2D(c1, hd, g), _Transformer2D(c1, hd, g)])
        u0.upsamplers = nn.ModuleList([_Down(nn.Conv2d(c1, c1, 3, padding=1))])
        u1.resnets = nn.ModuleList([_ResnetBlock(c1 + c0, c0, temb, g), _ResnetBlock(c0 + c0, c0, temb, g)])
        self.up_blocks = nn.ModuleList([u0, u1])

        self.conv_norm_out = nn.GroupNorm(g, c0, eps=1e-5)
        self.conv_out = nn.Conv2d(c0, config.out_channels, 3, padding=1)

    def _time(self, log_sigma: torch.Tensor) -> torch.Tensor:
        c0 = self.config.block_out_channels[0]
        half = c0 // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        arg = (log_sigma * 250.0)[:, None] * freqs[None]  # log sigma mapped onto a timestep-like range
        emb = torch.cat([arg.cos(), arg.sin()], dim=-1)
        return self.time_embedding.linear_2(F.silu(self.time_embedding.linear_1(emb)))

    def forward(self, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        temb = self._time(log_sigma)
        d0, d1 = self.down_blocks
        u0, u1 = self.up_blocks
        h = self.conv_in(x)  # (B, c0, 16, 16)
        skips = [h]
        h = d0.resnets[0](h, temb)
        skips.append(h)
        h = d0.downsamplers[0].conv(h)  # (B, c0, 8, 8)
        skips.append(h)
        h = d1.attentions[0](d1.resnets[0](h, temb))  # (B, c1, 8, 8)
        skips.append(h)
        h = self.mid_block.resnets[0](h, temb)
        h = self.mid_block.attentions[0](h)
        h = self.mid_block.resnets[1](h, temb)
        for res, attn in zip(u0.resnets, u0.attentions):
            h = attn(res(torch.cat([h, skips.pop()], dim=1), temb))
        h = u0.upsamplers[0].conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, c1, 16, 16)
        for res in u1.resnets:
            h = res(torch.cat([h, skips.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
HEAD_PREFIX = "conv_out."
