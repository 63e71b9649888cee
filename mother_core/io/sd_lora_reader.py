"""The reader of Stable Diffusion LoRA files (:mod:`.sd_lora`: layouts, names, base): the base UNet's reader
with the LoRA merged in, as diffusers' ``fuse_lora`` merges it. Kept apart from :mod:`.sd_lora` so that
discovery, which sniffs files, never imports torch."""

from __future__ import annotations

import math

import torch

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef
from mother_core.io.lora import LoraReader, _load_adapter, _number, _pattern_value, _patterns, _Update
from mother_core.io.safetensors_header import read_header
from mother_core.io.sd_lora import (
    DIFFUSERS, KOHYA, adapter_metadata, lora_modules, refusal, resolve, sniff,
)


def _positive_scalar(t: torch.Tensor, path: str, key: str) -> float:
    """A kohya ``.alpha`` tensor's value (one positive number)."""
    value = float(t.float().reshape(-1)[0]) if t.numel() == 1 else math.nan
    if not math.isfinite(value) or value <= 0:
        raise UnreadableCheckpointError(f"{path}: {key} must hold one positive number; the file is damaged.", path)
    return value


def _open_impl(ref: ModelRef, base: ModelReader) -> ModelReader:
    path = ref.files[0]
    header = read_header(path)
    layout = sniff(t.name for t in (*header.tensors, *header.unsupported)) or ""
    if layout.startswith("unsupported:"):
        raise UnreadableCheckpointError(refusal(path, layout), path)
    if layout not in (KOHYA, DIFFUSERS):
        raise UnreadableCheckpointError(f"{path} is not a Stable Diffusion LoRA file (kohya-ss or diffusers).", path)
    shapes = {t.name: t.shape for t in header.tensors}
    modules = lora_modules(path, layout, list(shapes))
    if not modules:
        raise UnreadableCheckpointError(
            f"{path} holds text-encoder LoRA layers only; the engine compares UNets, so there is nothing to "
            "compare it by.", path)
    targets = resolve(path, layout, modules, shapes, base.tensor_infos(), base.ref.id)
    tensors = _load_adapter(path)
    config = adapter_metadata(header.metadata) if layout == DIFFUSERS else {}
    alpha_default = _number(config, "lora_alpha", 1, path) if "lora_alpha" in config else None
    alpha_pattern = _patterns(config, "alpha_pattern", path)

    reader = LoraReader.__new__(LoraReader)  # LoraReader.__init__ parses a PEFT folder: not this file
    reader._start(ref, base)
    for m in modules:
        name = targets[m.key]
        a, b = tensors[m.down].float(), tensors[m.up].float()
        r = a.shape[0]  # the tensors are the truth (as lora.LoraReader)
        if m.alpha is not None:
            alpha = _positive_scalar(tensors[m.alpha], path, m.alpha)
        else:  # diffusers: the saved LoraConfig, else alpha = r (get_peft_kwargs without network alphas)
            alpha = _pattern_value(alpha_pattern, m.key) or alpha_default or r
        scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
        target = base.tensor_infos()[name].shape
        # Laid out as the base tensor (resolve() checked the sizes): a convolution (LoCon 3x3, or a 1x1 layer
        # given a linear or a conv LoRA) as B (out, r, 1, 1) and A (r, in, kh, kw), whose product _Update
        # reshapes to the kernel; a linear layer as B (out, r) and A (r, in).
        a = a.reshape(r, *target[1:])
        b = b.reshape(b.shape[0], r, *([1] * (len(target) - 2)))
        mode = "conv" if len(target) > 2 else "linear"
        reader._updates.setdefault(name, []).append(_Update(a, b, float(scale), mode))
    return reader


def open_sd_lora(ref: ModelRef, base: ModelReader | None) -> ModelReader:
    """The registry's opener of ``"sd-lora"`` files (``base`` is checked by ``open_model``)."""
    assert base is not None
    return _open_impl(ref, base)


__all__ = ["open_sd_lora"]
